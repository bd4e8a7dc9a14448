"""Hot-path capacity: how many calls one core of the bridge carries in real time.

The bridge (`bench.bridge_side`) and the fake callers (`bench.callers`) run in two processes,
each pinned to its own core, so the bridge's CPU and timing are its own. For each N the callers
connect, both sides warm up, then both measure over the same window on the shared monotonic
clock. A step passes when the callers saw no gap over 60 ms, a p99 inter-arrival of at most 25 ms,
and the bridge stayed under 90 % of its core; the sweep stops at the first failing step.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing as mp
import os
import pstats
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from bench.bridge_side import BridgeStats, bridge_main
from bench.callers import CallerStats, callers_main
from bench.common import BOT_PHRASE, CALLER_PHRASE, make_speech_wav, table

DEFAULT_STEPS = (25, 100, 250, 500, 625, 750)
MAX_GAP_MS = 60.0
MAX_P99_MS = 25.0
MAX_CPU_PCT = 90.0
PIPECAT_REFERENCE = (
    "reference (external figure, not measured here): Pipecat carried about 25 calls per core "
    "on this kind of machine"
)
HEADERS = (
    "calls",
    "cpu%",
    "tx/s",
    "rx/s",
    "expect/s",
    "resync",
    "late_ms",
    "tick_p99",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "bursts",
    "gap>40",
    "gap>60",
    "in_drop",
    "out_drop",
    "vad_on",
    "gc_ms",
    "preempt",
    "caller%",
    "ok",
)


@dataclass(frozen=True, slots=True)
class StepResult:
    """One N of the sweep."""

    calls: int
    bridge: BridgeStats
    callers: CallerStats

    @property
    def ok(self) -> bool:
        """Within the real-time limits (see the module docstring)."""
        return (
            self.bridge.calls == self.calls
            and self.callers.bad_gaps == 0
            and self.callers.p99_ms <= MAX_P99_MS
            and self.bridge.cpu_pct < MAX_CPU_PCT
        )

    def row(self) -> list[object]:
        """The table row."""
        b, c = self.bridge, self.callers
        return [
            self.calls,
            b.cpu_pct,
            round(b.frames_out / b.wall_s),
            round(b.frames_in / b.wall_s),
            self.calls * 50,
            b.resyncs,
            b.max_late_ms,
            b.tick_p99_ms,
            c.p50_ms,
            c.p99_ms,
            c.max_ms,
            c.bursts,
            c.gaps,
            c.bad_gaps,
            b.inbound_drops,
            b.outbound_drops,
            b.speech_starts,
            b.gc_max_ms,
            b.preempted,
            c.cpu_pct,
            "yes" if self.ok else ("NO, callers saturated" if c.cpu_pct >= MAX_CPU_PCT else "NO"),
        ]


@dataclass(frozen=True, slots=True)
class CapacityResult:
    """The sweep and its verdict."""

    steps: list[StepResult]
    pinned: bool
    duration_s: float
    scheduling: str

    @property
    def max_ok_calls(self) -> int:
        """The largest N that kept every limit (0 if none did)."""
        return max((s.calls for s in self.steps if s.ok), default=0)

    def render(self) -> str:
        """The plain-text table, the verdict and the reference line."""
        pin = "bridge and callers pinned to a core each" if self.pinned else "NOT pinned (< 2 cores)"
        pin += f", {self.scheduling}"
        title = (
            f"Hot-path capacity ({pin}; {self.duration_s:g} s per step; per second: frames the "
            "bridge sent (tx) and took in (rx); caller-side inter-arrival of bot frames)"
        )
        lines = [
            table(HEADERS, [s.row() for s in self.steps], title=title),
            f"largest N within limits (no gap > {MAX_GAP_MS:g} ms, p99 <= {MAX_P99_MS:g} ms, "
            f"bridge CPU < {MAX_CPU_PCT:g} %): {self.max_ok_calls} calls per core",
            PIPECAT_REFERENCE,
        ]
        return "\n".join(lines)


class _Child:
    """A benchmark process and its pipe; every request waits with a deadline."""

    def __init__(
        self,
        ctx: Any,
        target: Callable[..., None],
        cpu: int | None,
        priority: tuple[int, bool],
        wav: Path,
        name: str,
    ) -> None:
        self.conn, child_conn = mp.Pipe()
        self.name = name
        self.proc: BaseProcess = ctx.Process(
            target=target, args=(child_conn, cpu, *priority, str(wav)), name=name, daemon=True
        )
        self.proc.start()
        child_conn.close()
        try:
            self.scheduling: str = self.reply("hello", 60)
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> _Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def send(self, *msg: object) -> None:
        self.conn.send(msg)

    def reply(self, expect: str, timeout_s: float) -> Any:
        if not self.conn.poll(timeout_s):
            raise TimeoutError(f"{self.name}: no {expect!r} reply within {timeout_s:g} s")
        kind, value = self.conn.recv()
        if kind != expect:
            raise RuntimeError(f"{self.name}: expected {expect!r}, got {kind!r}")
        return value

    def ask(self, expect: str, timeout_s: float, *msg: object) -> Any:
        self.send(*msg)
        return self.reply(expect, timeout_s)

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.send("exit")
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.kill()  # only our own child, by handle
            self.proc.join()


def profile_summary(path: Path, limit: int = 25) -> str:
    """The functions that took the most time of their own in a bridge profile."""
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(limit)
    return f"Bridge profile {path.name} (cProfile, by own time)\n" + out.getvalue().strip()


def _cores() -> tuple[int | None, int | None]:
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)


def run_capacity(
    steps: Sequence[int] = DEFAULT_STEPS,
    *,
    duration_s: float = 10.0,
    warmup_s: float = 2.0,
    stop_on_failure: bool = True,
    realtime: bool = True,
    nice: int = -15,
    profile_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> CapacityResult:
    """Run the sweep; see the module docstring.

    With `profile_dir`, the bridge process is profiled (cProfile) over each step's window into
    `bridge-<N>.prof` there (the profiler slows the bridge: use those steps for where the time
    goes, not for capacity); see `profile_summary`.
    """
    bridge_cpu, caller_cpu = _cores()
    ctx = mp.get_context("spawn")  # a clean interpreter per side: no inherited loop or threads
    results: list[StepResult] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vb-bench-")))
        caller_wav = make_speech_wav(tmp / "caller.wav", CALLER_PHRASE, trailing_silence_ms=2000)
        bot_wav = make_speech_wav(tmp / "bot.wav", BOT_PHRASE)
        priority = (nice, realtime)
        bridge = stack.enter_context(_Child(ctx, bridge_main, bridge_cpu, priority, bot_wav, "bench-bridge"))
        callers = stack.enter_context(
            _Child(ctx, callers_main, caller_cpu, priority, caller_wav, "bench-callers")
        )
        for n in steps:
            uuids = [str(uuid.uuid4()) for _ in range(n)]
            port = bridge.ask("ready", 30, "expect", uuids)
            callers.ask("connected", 60 + n / 10, "connect", port, uuids)
            connected = bridge.ask("calls", 30, "wait_calls", n, 20.0)
            t0 = time.monotonic() + warmup_s  # loop.time() is time.monotonic() on both sides
            t1 = t0 + duration_s
            prof = str(profile_dir / f"bridge-{n}.prof") if profile_dir is not None else None
            bridge.send("measure", t0, t1, prof)
            callers.send("measure", t0, t1)
            wait = warmup_s + duration_s + 30
            b_stats: BridgeStats = bridge.reply("stats", wait)
            c_stats: CallerStats = callers.reply("stats", wait)
            callers.ask("done", 60, "hangup")
            bridge.ask("done", 60, "teardown")
            step = StepResult(n, b_stats, c_stats)
            results.append(step)
            if progress is not None:
                progress(f"  {n} calls ({connected} connected): {'ok' if step.ok else 'over the limits'}")
            if stop_on_failure and not step.ok:
                break
    return CapacityResult(results, bridge_cpu is not None, duration_s, bridge.scheduling)
