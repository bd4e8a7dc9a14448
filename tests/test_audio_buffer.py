"""AudioBuffer: the one bounded inbound buffer (drop-oldest counting, end, wait/wake, one consumer)."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.audio import AudioBuffer

T = 5.0  # upper bound for any wait, never expected to be reached


def frames(n: int, start: int = 0) -> list[bytes]:
    return [bytes([i % 256]) * 320 for i in range(start, start + n)]


def test_push_take_in_order_and_capacity_checked() -> None:
    buf = AudioBuffer(10)
    assert buf.max_frames == 10 and len(buf) == 0 and buf.take(5) == []
    fs = frames(7)
    for f in fs:
        buf.push(f)
    assert len(buf) == 7 and buf.pushed == 7 and buf.dropped == 0
    assert buf.take(5) == fs[:5]
    assert buf.take(5) == fs[5:]
    with pytest.raises(ValueError, match="max_frames=0"):
        AudioBuffer(0)


def test_overflow_drops_the_oldest_and_counts_exactly_the_overflow() -> None:
    buf = AudioBuffer(5)
    fs = frames(23)
    for f in fs:
        buf.push(f)
    assert buf.pushed == 23 and buf.dropped == 18 and len(buf) == 5
    assert buf.take(100) == fs[-5:]  # the newest survive
    # clear() is not a drop: the consumer chose to discard.
    for f in frames(3):
        buf.push(f)
    assert buf.clear() == 3 and buf.dropped == 18 and len(buf) == 0


def test_end_keeps_what_is_queued_and_ignores_later_pushes() -> None:
    buf = AudioBuffer(5)
    fs = frames(2)
    for f in fs:
        buf.push(f)
    buf.end()
    buf.push(b"late" * 80)
    assert buf.ended and buf.pushed == 2 and buf.take(5) == fs
    assert buf.waiter() is None  # ended: nothing to wait for


async def test_wait_wakes_on_push_and_on_end() -> None:
    buf = AudioBuffer(5)
    waiting = asyncio.create_task(buf.wait(), name="consumer")
    await asyncio.sleep(0)  # let it block
    assert not waiting.done()
    buf.push(frames(1)[0])
    async with asyncio.timeout(T):
        await waiting
    await buf.wait()  # a frame is queued: returns at once
    buf.take(1)
    waiting = asyncio.create_task(buf.wait(), name="consumer")
    await asyncio.sleep(0)
    buf.end()
    async with asyncio.timeout(T):
        await waiting


async def test_a_batch_wait_wakes_once_the_batch_is_there() -> None:
    buf = AudioBuffer(50)
    woke = asyncio.Event()

    async def consumer() -> None:
        await buf.wait(5)
        woke.set()

    task = asyncio.create_task(consumer(), name="consumer")
    await asyncio.sleep(0)
    for i, f in enumerate(frames(5)):
        assert not woke.is_set(), f"woken after {i} frames"
        buf.push(f)
        await asyncio.sleep(0)  # give a wrongly woken consumer the chance to run
    async with asyncio.timeout(T):
        await woke.wait()
        await task
    assert len(buf) == 5


async def test_waiter_is_a_future_to_wait_on_with_others_and_survives_cancellation() -> None:
    buf = AudioBuffer(5)
    other = asyncio.get_running_loop().create_future()
    fut = buf.waiter(2)
    assert fut is not None and buf.waiter(2) is fut  # the one consumer gets the same one back
    done, _ = await asyncio.wait((fut, other), timeout=0.01)
    assert not done  # a bounded wait with nothing pushed
    fut.cancel()  # the consumer gave up on it: the next push must not fail
    buf.push(frames(1)[0])
    buf.push(frames(1)[0])
    assert buf.waiter(2) is None  # the batch is there
    buf.take(2)
    fut2 = buf.waiter(1)
    assert fut2 is not None and fut2 is not fut
    buf.push(frames(1)[0])
    assert fut2.done()


async def test_one_consumer_only() -> None:
    buf = AudioBuffer(5)
    first = asyncio.create_task(buf.wait(), name="first")
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already being awaited"):
        await buf.wait()
    buf.push(frames(1)[0])
    async with asyncio.timeout(T):
        await first
    await buf.wait()  # the first consumer is done: waiting again is fine


async def test_a_cancelled_wait_leaves_the_buffer_usable() -> None:
    buf = AudioBuffer(5)
    task = asyncio.create_task(buf.wait(), name="consumer")
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    buf.push(frames(1)[0])  # wakes nobody, raises nothing
    async with asyncio.timeout(T):
        await buf.wait()
