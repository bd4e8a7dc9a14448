"""The request generator's wait for audio (`RecognizeCall._next`), without gRPC, on virtual time.

It runs once per request of every call (10 a second each), so it must not cost a timer per
request; and its wake-ups (a batch, the keepalive deadline, the call's end, a shared future
cancelled by a failed call's generator) must all still work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

from yandex.cloud.ai.stt.v3 import stt_pb2

from orchestrator.adapters.speechkit import YandexSettings
from orchestrator.adapters.stt.yandex_call import RecognizeCall, Shared
from orchestrator.audio import AudioBuffer
from orchestrator.clock import LoopClock
from testkit.virtual_time import run_virtual

FRAME = bytes(320)  # 20 ms of silence
T = 5.0  # bound on every wait (virtual seconds)


def _shared(keepalive_s: float, **settings_kw: Any) -> Shared:
    settings = YandexSettings(api_key="k", folder_id="f", tls=False, keepalive_s=keepalive_s, **settings_kw)
    return Shared(
        settings=settings, clock=LoopClock(), buffer=AudioBuffer(500), emit=lambda _e: None, chunk_frames=5
    )


async def _requests(call: RecognizeCall) -> AsyncGenerator[stt_pb2.StreamingRequest, None]:
    """The call's request generator, past its session options."""
    gen = call.requests()
    first = await anext(gen)
    assert first.WhichOneof("Event") == "session_options"
    return cast(AsyncGenerator[stt_pb2.StreamingRequest, None], gen)


def _push_batch(shared: Shared) -> None:
    for _ in range(5):
        shared.buffer.push(FRAME)


def _kind(req: stt_pb2.StreamingRequest) -> str:
    return str(req.WhichOneof("Event"))


def test_waiting_for_twenty_batches_arms_one_timer_not_one_per_request() -> None:
    # Fails on the wait with `asyncio.wait(..., timeout=)`: it armed (and cancelled) a timer for
    # every request, 20 here.
    async def main() -> int:
        shared = _shared(keepalive_s=3.0)
        call = RecognizeCall(shared, 0)
        loop = asyncio.get_running_loop()
        timers = 0
        call_at: Callable[..., asyncio.TimerHandle] = loop.call_at

        def counted(
            when: float, callback: Callable[..., object], *args: Any, **kw: Any
        ) -> asyncio.TimerHandle:
            nonlocal timers
            timers += 1
            return call_at(when, callback, *args, **kw)

        reqs = await _requests(call)
        for _ in range(4):  # the 5th frame of each batch comes while the generator waits
            shared.buffer.push(FRAME)
        async with asyncio.timeout(T):  # its timer is armed here, before the count
            loop.call_at = counted  # type: ignore[method-assign,assignment]
            try:
                for i in range(20):
                    loop.call_soon(shared.buffer.push, FRAME)
                    req = await anext(reqs)
                    assert _kind(req) == "chunk" and len(req.chunk.data) == 5 * 320, i
                    for _ in range(4):
                        shared.buffer.push(FRAME)
            finally:
                del loop.call_at
        call.abandon()
        await reqs.aclose()
        return timers

    assert run_virtual(main) <= 1


def test_keepalive_silence_comes_at_the_deadline_after_the_last_batch() -> None:
    # The one timer per call was armed for the first wait's deadline (t = 1.0); a batch came at
    # t = 0.6, so the next wait's deadline is 1.6: the timer comes back then, not at 1.0.
    async def main() -> list[tuple[str, float]]:
        shared = _shared(keepalive_s=1.0)
        call = RecognizeCall(shared, 0)
        loop = asyncio.get_running_loop()
        reqs = await _requests(call)
        loop.call_at(0.6, _push_batch, shared)
        got: list[tuple[str, float]] = []
        async with asyncio.timeout(T):
            for _ in range(3):
                got.append((_kind(await anext(reqs)), round(loop.time(), 6)))
        call.abandon()
        await reqs.aclose()
        return got

    assert run_virtual(main) == [("chunk", 0.6), ("silence_chunk", 1.6), ("silence_chunk", 2.6)]


def test_the_calls_end_wakes_a_waiting_generator_at_once() -> None:
    async def main() -> tuple[bool, float, int]:
        shared = _shared(keepalive_s=3.0)
        call = RecognizeCall(shared, 0)
        loop = asyncio.get_running_loop()
        reqs = await _requests(call)
        loop.call_at(0.5, call.abandon)
        async with asyncio.timeout(T):
            ended = [req async for req in reqs] == []
        shared.buffer.push(FRAME)
        return ended, loop.time(), len(shared.buffer)  # the frame stays for the next call

    assert run_virtual(main) == (True, 0.5, 1)


def test_a_failed_calls_generator_cancelled_while_waiting_does_not_cancel_the_next_ones() -> None:
    # Both wait on the buffer's one future; cancelling the old generator's task cancels it.
    async def main() -> tuple[bool, str]:
        shared = _shared(keepalive_s=3.0)
        old, new = RecognizeCall(shared, 0), RecognizeCall(shared, 0)
        old_reqs, new_reqs = await _requests(old), await _requests(new)
        old_task = asyncio.create_task(anext(old_reqs), name="old-generator")
        new_task = asyncio.create_task(anext(new_reqs), name="new-generator")
        await asyncio.sleep(0.1)  # both wait now
        old_task.cancel()
        await asyncio.sleep(0.1)
        for _ in range(5):
            shared.buffer.push(FRAME)
        async with asyncio.timeout(T):
            req = await new_task
        new.abandon()
        await new_reqs.aclose()
        return old_task.cancelled(), _kind(req)

    assert run_virtual(main) == (True, "chunk")


class _TimedBuffer(AudioBuffer):
    """Records when the generator asks for the buffer's future: once per wake-up."""

    def __init__(self, max_frames: int) -> None:
        super().__init__(max_frames)
        self.asked_at: list[float] = []

    def waiter(self, min_frames: int = 1) -> asyncio.Future[None] | None:
        self.asked_at.append(round(asyncio.get_running_loop().time(), 6))
        return super().waiter(min_frames)


def test_the_timer_at_a_stale_deadline_comes_back_later_without_waking_the_generator() -> None:
    # The timer armed for t = 1.0 finds the generator waiting for 1.6 (a batch came at 0.6): it
    # moves itself on; waking the generator there would cost a loop pass for nothing.
    async def main() -> list[float]:
        shared = _shared(keepalive_s=1.0)
        buffer = shared.buffer = _TimedBuffer(500)
        call = RecognizeCall(shared, 0)
        loop = asyncio.get_running_loop()
        reqs = await _requests(call)
        loop.call_at(0.6, _push_batch, shared)
        async with asyncio.timeout(T):
            assert [_kind(await anext(reqs)) for _ in range(2)] == ["chunk", "silence_chunk"]
        call.abandon()
        await reqs.aclose()
        return buffer.asked_at

    assert run_virtual(main) == [0.0, 0.6, 0.6, 1.6]


def _pending_keepalive_timers(end: str) -> list[float]:
    """Run a call to its `end`, then the times of its timers still armed (none should be)."""

    async def main() -> list[float]:
        renew: dict[str, Any] = {"renew_after_s": 0.5, "renew_grace_s": 0.0} if end == "renew" else {}
        shared = _shared(keepalive_s=3.0, **renew)
        call = RecognizeCall(shared, 0)
        loop = asyncio.get_running_loop()
        mine: list[asyncio.TimerHandle] = []
        call_at: Callable[..., asyncio.TimerHandle] = loop.call_at

        def recorded(
            when: float, callback: Callable[..., object], *args: Any, **kw: Any
        ) -> asyncio.TimerHandle:
            handle = call_at(when, callback, *args, **kw)
            if getattr(callback, "__self__", None) is call:
                mine.append(handle)
            return handle

        loop.call_at = recorded  # type: ignore[method-assign,assignment]
        try:
            reqs = await _requests(call)
            loop.call_at(0.6, _push_batch, shared)  # the generator waits for it (timer: t = 3.0)
            async with asyncio.timeout(T):
                assert _kind(await anext(reqs)) == "chunk"
                if end == "abandon at yield":  # the gRPC call ends; nothing pulls the generator
                    call.abandon()
                elif end == "abandon while waiting":
                    loop.call_at(1.0, call.abandon)
                    assert [req async for req in reqs] == []
                elif end == "eof":
                    loop.call_at(1.0, shared.buffer.end)
                    assert [req async for req in reqs] == []
                else:  # renewal: due at 0.5 s, found before the next wait
                    assert [req async for req in reqs] == []
                assert call.ended.done()
            await reqs.aclose()
        finally:
            del loop.call_at
        return [h.when() for h in mine if not h.cancelled() and h.when() > loop.time()]

    return run_virtual(main)


def test_no_keepalive_timer_stays_armed_once_the_call_is_over() -> None:
    # Ended calls are dropped, not closed by anyone: an armed timer would keep each one alive
    # (and wake it) up to keepalive_s later.
    ends = ("abandon at yield", "abandon while waiting", "eof", "renew")
    assert {end: _pending_keepalive_timers(end) for end in ends} == {end: [] for end in ends}
