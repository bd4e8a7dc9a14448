"""Many short sequential calls (`python -m bench --only figures`, `--short-calls`): each caller
hangs up at the first greeting frame; RSS, asyncio tasks and open descriptors after a warm-up and
at the end show what a call leaves behind. The harness is `bench.call_figures`'."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.bridge_side import rss_kb
from bench.call_figures import CallBench, T, figures_of
from bench.call_probes import PROBES, Probes

__all__ = ["ShortCalls", "run_short_calls"]


@dataclass
class ShortCalls:
    """N short sequential calls: RSS, tasks and descriptors after warm-up and at the end."""

    calls: int
    warmup: int
    seconds: float
    rss_start_kb: float
    rss_warm_kb: float
    rss_end_kb: float
    fds_warm: int
    fds_end: int
    leftover_tasks: list[str]
    greeting_ms: list[float]

    @property
    def growth_mb(self) -> float:
        """RSS growth from after the warm-up to the end, MB."""
        return (self.rss_end_kb - self.rss_warm_kb) / 1024


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _short_calls(calls: int, warmup: int, progress: Callable[[str], None] | None) -> ShortCalls:
    async with CallBench() as bench:
        baseline = {t.get_name() for t in asyncio.all_tasks()}
        rss_start = rss_kb()
        rss_warm, fds_warm = rss_start, _fds()
        greeting: list[float] = []
        started = time.monotonic()
        for i in range(calls):
            if i == warmup:
                gc.collect()
                rss_warm, fds_warm = rss_kb(), _fds()
            cid, caller, handler = await bench.start_call()
            probe = PROBES[cid]
            try:
                await asyncio.wait_for(probe.greeted.wait(), T)
                bench.hangup(caller)
                await asyncio.wait_for(handler, T)
                await asyncio.wait_for(caller.wait_closed(), T)
                bench.forget(caller)
                fig = figures_of(probe, bench.greeting_label, bench.filler_labels)
                if fig.greeting_ms is not None:
                    greeting.append(fig.greeting_ms)
            finally:
                PROBES.pop(cid, None)
            if progress is not None and (i + 1) % 1000 == 0:
                progress(f"  {i + 1} short calls, RSS {rss_kb() / 1024:.1f} MB")
        gc.collect()
        me = asyncio.current_task()
        leftover = sorted(
            t.get_name() for t in asyncio.all_tasks() if t is not me and t.get_name() not in baseline
        )
        return ShortCalls(
            calls,
            warmup,
            time.monotonic() - started,
            rss_start,
            rss_warm,
            rss_kb(),
            fds_warm,
            _fds(),
            leftover,
            greeting,
        )


def run_short_calls(
    calls: int = 10_000, *, warmup: int = 200, progress: Callable[[str], None] | None = None
) -> ShortCalls:
    """`calls` sequential calls, each hung up by the caller at the first greeting frame."""
    with Probes():
        return asyncio.run(_short_calls(calls, min(warmup, calls - 1), progress))
