"""The per-call figures' concurrency levels (`python -m bench --only figures`): `run_figures` runs
each level's calls at once on a `bench.call_figures.CallBench`, with the process's CPU, RSS per
call, the pacer's lateness and resyncs and the longest GC pause over the level (`FiguresResult`);
with the callers in their own process (`CallerMode` "process"), that process's CPU apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from bench.bridge_side import rss_kb
from bench.call_figures import QUESTION, STOP, CallBench, CallFigures, one_call
from bench.call_probes import Probes
from bench.caller_process import CallerProcess
from bench.common import GcTimer
from orchestrator.adapters.tts.espeak import espeak_pcm_sync

__all__ = [
    "CallerMode",
    "CpuMeter",
    "FiguresResult",
    "caller_process",
    "realtime",
    "run_figures",
    "worst_known",
]

CallerMode = Literal["process", "inline"]  # the callers in a process of their own, or in the bridge's loop


@dataclass
class FiguresResult:
    """The per-call figures of one concurrency level, and RSS per active call."""

    concurrent: int
    calls: list[CallFigures]
    rss_per_call_kb: float
    failed: int
    cpu_pct: float = 0.0  # this process (the bridge; inline: and the callers) over the level, % of one core
    late_ms: float = 0.0  # the bridge pacer's worst tick lateness
    resyncs: int = 0  # the bridge pacer's resyncs (stalls over its catch-up bound)
    gc_ms: float = 0.0  # the longest garbage-collector pause
    callers_cpu_pct: float | None = None  # the caller process over the level, % of one core (inline: None)
    callers_late_ms: float | None = None  # the caller process's pacer's worst tick lateness (inline: None)


async def _run_level(
    concurrent: int, question: bytes, stop: bytes, stagger_s: float, bench_factory: Callable[[], CallBench]
) -> FiguresResult:
    async with bench_factory() as bench:
        base = rss_kb()
        peak = base
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_kb())
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample(), name="bench-rss-sampler")
        meter = CpuMeter(bench.caller_process)
        gc_timer = GcTimer()
        runs = [one_call(bench, question, stop, i * stagger_s) for i in range(concurrent)]
        try:
            results = await asyncio.gather(*runs, return_exceptions=True)
        finally:
            gc_timer.close()
        cpu_pct, callers_pct = meter.read()
        done.set()
        await sampler
        pacer = bench.app.pacer
    calls = [r for r in results if isinstance(r, CallFigures)]
    return FiguresResult(
        concurrent,
        calls,
        (peak - base) / concurrent,
        len(results) - len(calls),
        cpu_pct,
        pacer.max_lateness_s * 1000,
        pacer.resyncs,
        gc_timer.max_s * 1000,
        callers_pct,
        None if bench.remote is None else bench.remote.late_ms,
    )


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU % of one core from now to `read()`: this process's, and the caller process's if any."""

    def __init__(self, callers: CallerProcess | None) -> None:
        self._callers = callers
        self._wall0, self._cpu0 = time.monotonic(), _cpu_s()
        self._callers0 = callers.cpu_s() if callers is not None else 0.0

    def read(self) -> tuple[float, float | None]:
        wall = time.monotonic() - self._wall0
        own = (_cpu_s() - self._cpu0) / wall * 100
        if self._callers is None:
            return own, None
        return own, (self._callers.cpu_s() - self._callers0) / wall * 100


@contextlib.contextmanager
def caller_process(mode: CallerMode, *, realtime: bool = True) -> Iterator[CallerProcess | None]:
    """The caller process for mode "process" (None for "inline"), for the block."""
    if mode == "inline":
        yield None
        return
    if mode != "process":
        raise ValueError(f"figure callers: unknown mode {mode!r} (process or inline)")
    with CallerProcess(realtime=realtime) as proc:
        yield proc


@contextlib.contextmanager
def realtime(enabled: bool = True) -> Iterator[str]:
    """Run this process SCHED_FIFO (as the capacity sweep's processes) inside the block, so the
    figures are the service's and not the other load's on the machine; restored after. Yields
    the scheduling in effect ("SCHED_FIFO", or "default" without the right to it)."""
    if not enabled:
        yield "default"
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except OSError:
        yield "default"
        return
    try:
        yield "SCHED_FIFO"
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, policy, param)


def run_figures(
    levels: tuple[int, ...] = (1, 50, 200),
    *,
    repeat_single: int = 10,
    callers: CallerMode = "process",
    realtime: bool = True,
    bench_factory: Callable[[CallerProcess | None], CallBench] = CallBench,
) -> list[FiguresResult]:
    """Each level's calls at once (starts 10 ms apart); the 1-call level runs `repeat_single`
    calls one after the other. `callers`: in a process of their own (pinned to the other core;
    SCHED_FIFO with `realtime`) or in the bridge's loop. `bench_factory` (called in each level's
    loop with the caller process, None inline) builds the harness."""
    question = espeak_pcm_sync(QUESTION) + bytes(8000)
    stop = espeak_pcm_sync(STOP) + bytes(8000)
    out: list[FiguresResult] = []
    with Probes(), caller_process(callers, realtime=realtime) as proc:

        def factory() -> CallBench:
            return bench_factory(proc)

        for n in levels:
            if n == 1:
                parts = [
                    asyncio.run(_run_level(1, question, stop, 0.0, factory)) for _ in range(repeat_single)
                ]
                merged = [c for p in parts for c in p.calls]
                rss = sum(p.rss_per_call_kb for p in parts) / len(parts)
                out.append(
                    FiguresResult(
                        1,
                        merged,
                        rss,
                        sum(p.failed for p in parts),
                        max(p.cpu_pct for p in parts),
                        max(p.late_ms for p in parts),
                        sum(p.resyncs for p in parts),
                        max(p.gc_ms for p in parts),
                        worst_known([p.callers_cpu_pct for p in parts]),
                        worst_known([p.callers_late_ms for p in parts]),
                    )
                )
            else:
                out.append(asyncio.run(_run_level(n, question, stop, 0.01, factory)))
    return out


def worst_known(values: list[float | None]) -> float | None:
    """The largest of the values known (None where no value is)."""
    known = [v for v in values if v is not None]
    return max(known) if known else None
