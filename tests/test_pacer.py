"""The shared deadline tick on the virtual-time loop: catch-up, resync, broken members."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.pacer import Pacer, PacerSettings
from testkit.virtual_time import VirtualTimeLoop, run_virtual


class Counter:
    def __init__(self) -> None:
        self.times: list[float] = []

    def tick(self) -> None:
        self.times.append(asyncio.get_running_loop().time())


class Broken:
    def __init__(self) -> None:
        self.calls = 0

    def tick(self) -> None:
        self.calls += 1
        raise RuntimeError("boom")


def stall(seconds: float) -> None:
    """Simulate the loop being blocked (a slow callback) by moving virtual time on."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    loop.advance(seconds)


def test_deadlines_do_not_drift() -> None:
    async def main() -> tuple[Pacer, Counter]:
        pacer, c = Pacer(), Counter()
        pacer.add(c)
        pacer.start()
        await asyncio.sleep(60.001)  # a minute of virtual time
        pacer.stop()
        return pacer, c

    pacer, c = run_virtual(main)
    assert len(c.times) == 3000
    assert c.times[-1] == pytest.approx(60.0)
    assert pacer.resyncs == 0


def test_a_short_stall_is_caught_up_in_one_burst() -> None:
    async def main() -> tuple[Pacer, Counter]:
        pacer, c = Pacer(PacerSettings(max_catchup=3)), Counter()
        pacer.add(c)
        pacer.start()
        loop = asyncio.get_running_loop()
        loop.call_at(0.101, stall, 0.05)  # blocks the loop from 0.101 to 0.151
        await asyncio.sleep(0.3001)
        pacer.stop()
        return pacer, c

    pacer, c = run_virtual(main)
    assert len(c.times) == 15  # nothing lost: real time kept
    burst = [t for t in c.times if t == pytest.approx(0.151)]
    assert len(burst) == 2  # frames due at 0.12 and 0.14 go out together
    assert pacer.resyncs == 0
    assert pacer.max_lateness_s == pytest.approx(0.031, abs=1e-6)


def test_a_long_stall_is_skipped_not_burst() -> None:
    async def main() -> tuple[Pacer, Counter]:
        pacer, c = Pacer(PacerSettings(max_catchup=3)), Counter()
        pacer.add(c)
        pacer.start()
        asyncio.get_running_loop().call_at(0.101, stall, 0.5)  # 25 frames late
        await asyncio.sleep(1.0001)
        pacer.stop()
        return pacer, c

    pacer, c = run_virtual(main)
    assert pacer.resyncs == 1
    at_stall_end = [t for t in c.times if t == pytest.approx(0.601)]
    assert len(at_stall_end) == 1  # one frame, not 25
    assert len(c.times) < 50 - 20  # the stalled frames were dropped
    later = [t for t in c.times if t > 0.61]
    gaps = {round(b - a, 6) for a, b in zip(later, later[1:], strict=False)}
    assert gaps == {0.02}  # back on the 20 ms grid afterwards


def test_a_member_raising_is_removed_and_the_others_continue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> tuple[Pacer, Counter, Broken]:
        pacer, c, b = Pacer(), Counter(), Broken()
        pacer.add(b)
        pacer.add(c)
        pacer.start()
        await asyncio.sleep(0.2001)
        pacer.stop()
        return pacer, c, b

    with caplog.at_level(logging.ERROR):
        pacer, c, b = run_virtual(main)
    assert b.calls == 1
    assert len(c.times) == 10
    assert len(pacer) == 1
    assert "playout tick failed" in caplog.text


def test_remove_inside_a_tick_and_restart() -> None:
    async def main() -> tuple[Counter, Counter]:
        pacer, a, b = Pacer(), Counter(), Counter()

        class Remover:
            def tick(self) -> None:
                pacer.remove(self)
                pacer.remove(b)

        pacer.add(Remover())
        pacer.add(a)
        pacer.add(b)
        pacer.start()
        assert pacer.running
        await asyncio.sleep(0.1001)
        pacer.stop()
        assert not pacer.running
        pacer.start()  # restart: a fresh deadline grid
        await asyncio.sleep(0.0401)
        pacer.stop()
        return a, b

    a, b = run_virtual(main)
    assert len(a.times) == 7
    assert len(b.times) <= 1  # at most the tick in which it was removed


class StopsThePacer(Counter):
    """Stops the pacer from inside its tick (as a shutdown path run by a member might)."""

    def __init__(self, pacer: Pacer, *, restart: bool = False) -> None:
        super().__init__()
        self.pacer = pacer
        self.restart = restart

    def tick(self) -> None:
        super().tick()
        if len(self.times) == 3:
            self.pacer.stop()
            if self.restart:
                self.pacer.start()


def test_stop_inside_a_tick_stops_it() -> None:
    # The tick used to re-arm itself after its members ran, undoing a stop() made by one of them.
    async def main() -> tuple[Pacer, StopsThePacer]:
        pacer = Pacer()
        member = StopsThePacer(pacer)
        pacer.add(member)
        pacer.start()
        await asyncio.sleep(0.2)
        return pacer, member

    pacer, member = run_virtual(main)
    assert len(member.times) == 3 and not pacer.running


def test_stop_and_start_inside_a_tick_keeps_one_tick_going() -> None:
    async def main() -> tuple[Pacer, StopsThePacer]:
        pacer = Pacer()
        member = StopsThePacer(pacer, restart=True)
        pacer.add(member)
        pacer.start()
        await asyncio.sleep(0.2001)
        pacer.stop()
        return pacer, member

    pacer, member = run_virtual(main)
    # Restarted at 0.06 (its third tick): one tick every 20 ms from there, not two.
    assert member.times == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.14, 0.16, 0.18, 0.20])
