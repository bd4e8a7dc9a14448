"""LoopClock.reader: the same time as `now`, from the loop it was bound on."""

from __future__ import annotations

import asyncio
import time

import pytest

from orchestrator.clock import LoopClock
from testkit.virtual_time import run_virtual


class _ShiftedLoop(asyncio.SelectorEventLoop):
    """A loop with its own clock (as a virtual-time loop has)."""

    def time(self) -> float:
        return 1000.0 + super().time()


def test_reader_on_asyncio_loop_reads_what_now_reads() -> None:
    async def main() -> tuple[float, float, float]:
        clock = LoopClock()
        read = clock.reader()
        before = clock.now()
        value = read()
        return before, value, clock.now()

    before, value, after = asyncio.run(main())
    assert before <= value <= after


def test_reader_follows_a_loop_with_its_own_time() -> None:
    loop = _ShiftedLoop()
    try:

        async def main() -> float:
            return LoopClock().reader()()

        assert abs(loop.run_until_complete(main()) - 1000.0 - time.monotonic()) < 60.0
    finally:
        loop.close()


def test_reader_outside_a_loop_is_now() -> None:
    clock = LoopClock()
    assert clock.reader() == clock.now


def test_reader_on_uvloop_reads_its_loop_time() -> None:
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:

        async def main() -> tuple[float, float, float]:
            clock = LoopClock()
            read = clock.reader()
            before = clock.now()
            await asyncio.sleep(0.002)  # the loop's cached time moves on between iterations
            value = read()
            return before, value, clock.now()

        before, value, after = loop.run_until_complete(main())
        assert before < value == after  # the loop's own (cached) time, not time.monotonic()
    finally:
        loop.close()


def test_reader_on_virtual_time_follows_the_virtual_clock() -> None:
    async def main() -> list[float]:
        read = LoopClock().reader()
        seen = [read()]
        await asyncio.sleep(5.0)  # virtual: no real wait
        seen.append(read())
        return seen

    start, later = run_virtual(main)
    assert start == 0.0
    assert later >= 5.0
