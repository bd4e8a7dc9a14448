"""LoopClock.reader: the same time as `now`, from the loop it was bound on."""

from __future__ import annotations

import asyncio
import time

from orchestrator.clock import LoopClock


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
