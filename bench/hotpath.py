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
import platform
import pstats
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from bench.bridge_side import BridgeStats, Leftovers, bridge_main
from bench.callers import CallerStats, callers_main
from bench.common import BOT_PHRASE, CALLER_PHRASE, make_speech_wav, table
from bridge.event_loop import EventLoopKind

DEFAULT_STEPS = (25, 100, 250, 500, 625, 750)
MAX_GAP_MS = 60.0
MAX_P99_MS = 25.0
MAX_CPU_PCT = 90.0
PIPECAT_REFERENCE = (
    "reference (external figure, not measured here): Pipecat carried about 25 calls per core "
    "on this kind of machine"
)
MIN_FED = 0.98  # share of the expected inbound frames below which a step's CPU figure is not quoted
CORE_SHARE = 0.8  # calls-per-core is quoted at this share of the bridge's core busy
HEADERS = (
    "calls",
    "cpu%",
    "ms/call-s",
    "sys_ms",
    "onnx_ms",
    "calls@80%",
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
    "turns",
    "gc_ms",
    "preempt",
    "caller%",
    "kB/call",
    "left",
    "ok",
)


@dataclass(frozen=True, slots=True)
class StepResult:
    """One N of the sweep."""

    calls: int
    bridge: BridgeStats
    callers: CallerStats
    left: Leftovers  # after the step's calls were closed

    @property
    def ok(self) -> bool:
        """Within the real-time limits (see the module docstring)."""
        return (
            self.bridge.calls == self.calls
            and self.callers.bad_gaps == 0
            and self.callers.p99_ms <= MAX_P99_MS
            and self.bridge.cpu_pct < MAX_CPU_PCT
        )

    @property
    def fed(self) -> bool:
        """The bridge took in at least `MIN_FED` of the frames the step's calls send: its CPU time
        is that load's (a starved caller process sends less, and the cost per call-second
        divides less work by the same calls)."""
        b = self.bridge
        return b.wall_s > 0 and b.frames_in / b.wall_s >= MIN_FED * self.calls * 50

    def row(self) -> list[object]:
        """The table row."""
        b, c = self.bridge, self.callers
        return [
            self.calls,
            b.cpu_pct,
            f"{b.cpu_ms_per_call_s:.3f}",
            f"{b.sys_ms_per_call_s:.3f}",
            f"{b.onnx_ms_per_call_s:.3f}",
            round(b.calls_per_core(CORE_SHARE)),
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
            f"{c.phrases}/{c.barge_ins}",
            b.gc_max_ms,
            b.preempted,
            c.cpu_pct,
            round(b.rss_kb_per_call),
            f"{self.left.tasks}t/{self.left.fds}fd/{self.left.connections}c",
            "yes" if self.ok else ("NO, callers saturated" if c.cpu_pct >= MAX_CPU_PCT else "NO"),
        ]


SUMMARY_HEADERS = (
    "calls",
    "runs",
    "ok",
    "ms/call-s",
    "sys_ms",
    "onnx_ms",
    "calls@80%",
    "min",
    "max",
    "spread%",
    "p99_ms",
    "gc_ms",
)


def _median(values: Sequence[float]) -> float:
    data = sorted(values)
    mid = len(data) // 2
    return data[mid] if len(data) % 2 else (data[mid - 1] + data[mid]) / 2


@dataclass(frozen=True, slots=True)
class StepSummary:
    """The repetitions of one N: the cost per call and the capacity it implies, with their spread."""

    calls: int
    runs: list[StepResult]

    @property
    def capacities(self) -> list[float]:
        """Calls per core at `CORE_SHARE`, one per run."""
        return [r.bridge.calls_per_core(CORE_SHARE) for r in self.runs]

    @property
    def capacity(self) -> float:
        """The median calls-per-core figure."""
        return _median(self.capacities)

    @property
    def spread_pct(self) -> float:
        """(max - min) / median of the calls-per-core figures, in %."""
        caps = self.capacities
        return 100 * (max(caps) - min(caps)) / self.capacity if self.capacity else float("nan")

    @property
    def ok(self) -> bool:
        """Every repetition kept the jitter limits."""
        return all(r.ok for r in self.runs)

    def row(self) -> list[object]:
        """The summary table row."""
        caps = self.capacities
        return [
            self.calls,
            len(self.runs),
            sum(r.ok for r in self.runs),
            f"{_median([r.bridge.cpu_ms_per_call_s for r in self.runs]):.3f}",
            f"{_median([r.bridge.sys_ms_per_call_s for r in self.runs]):.3f}",
            f"{_median([r.bridge.onnx_ms_per_call_s for r in self.runs]):.3f}",
            round(self.capacity),
            round(min(caps)),
            round(max(caps)),
            self.spread_pct,
            max(r.callers.p99_ms for r in self.runs),
            max(r.bridge.gc_max_ms for r in self.runs),
        ]


@dataclass(frozen=True, slots=True)
class CapacityResult:
    """The sweep and its verdict."""

    steps: list[StepResult]
    pinned: bool
    duration_s: float
    scheduling: str

    @property
    def summaries(self) -> list[StepSummary]:
        """The steps grouped by N, in sweep order."""
        by_n: dict[int, list[StepResult]] = {}
        for s in self.steps:
            by_n.setdefault(s.calls, []).append(s)
        return [StepSummary(n, runs) for n, runs in by_n.items()]

    @property
    def max_ok_calls(self) -> int:
        """The largest N whose every repetition kept every limit (0 if none did)."""
        return max((s.calls for s in self.summaries if s.ok), default=0)

    @property
    def capacity(self) -> StepSummary | None:
        """The CPU-based capacity figure: from the largest N within the jitter limits (its cost
        per call is the one under load), else from the largest N whose every run stayed under
        `MAX_CPU_PCT` and was fed its load (`StepResult.fed`); None if nothing ran or every step
        saturated the bridge (a saturated bridge's cost per call-second is its 95 % / N, which says
        nothing of the calls it carries)."""
        summaries = self.summaries
        ok = [s for s in summaries if s.ok]
        unsaturated = [s for s in summaries if all(r.bridge.cpu_pct < MAX_CPU_PCT and r.fed for r in s.runs)]
        found = ok or unsaturated
        return found[-1] if found else None

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
            "",
            table(
                SUMMARY_HEADERS,
                [s.row() for s in self.summaries],
                title="Per step over its runs: median bridge CPU per call-second (user + system; sys_ms: "
                "the kernel's part), the "
                f"calls one core carries at {CORE_SHARE:.0%} busy (median, min, max, spread), worst p99 and GC pause",
            ),
            f"jitter verdict: largest N within limits in every run (no gap > {MAX_GAP_MS:g} ms, "
            f"p99 <= {MAX_P99_MS:g} ms, bridge CPU < {MAX_CPU_PCT:g} %): {self.max_ok_calls} calls",
        ]
        cap = self.capacity
        if cap is not None:
            lines.append(
                f"CPU capacity: {cap.capacity:.0f} calls per core at {CORE_SHARE:.0%} "
                f"(from {cap.calls} calls, {len(cap.runs)} runs, spread {cap.spread_pct:.1f} %)"
            )
        elif self.steps:
            lines.append(
                f"CPU capacity: none: the bridge saturated (>= {MAX_CPU_PCT:g} % CPU) at every step; "
                "run smaller steps"
            )
        lines.append(PIPECAT_REFERENCE)
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
        *extra: object,
    ) -> None:
        self.conn, child_conn = mp.Pipe()
        self.name = name
        self.proc: BaseProcess = ctx.Process(
            target=target, args=(child_conn, cpu, *priority, str(wav), *extra), name=name, daemon=True
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
        if kind == "error":
            raise RuntimeError(f"{self.name}: {value}")
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


def machine_info() -> dict[str, object]:
    """What the figures were measured on: CPU model, cores, kernel, Python, the git commit."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def capacity_json(result: CapacityResult, event_loop: str) -> dict[str, object]:
    """The sweep as plain data: every run's row and each step's summary, with `machine_info()`."""
    cap = result.capacity
    return {
        "machine": machine_info(),
        "event_loop": event_loop,
        "scheduling": result.scheduling,
        "duration_s": result.duration_s,
        "runs": [dict(zip(HEADERS, s.row(), strict=True)) for s in result.steps],
        "steps": [dict(zip(SUMMARY_HEADERS, s.row(), strict=True)) for s in result.summaries],
        "max_ok_calls": result.max_ok_calls,
        "calls_per_core_at_80pct": None if cap is None else round(cap.capacity),
        "spread_pct": None if cap is None else round(cap.spread_pct, 1),
    }


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
    repeat: int = 1,
    event_loop: EventLoopKind = "asyncio",
    vad_engine: str = "",
    echo: bool = True,
    vad_batch: str = "",
    freeze_calls: bool = False,
) -> CapacityResult:
    """Run the sweep; see the module docstring. Each N is run `repeat` times in a row (the verdict
    needs every run within the limits; the capacity figure is their median, with its spread);
    `event_loop` is the bridge's loop, as `[service] event_loop`; `vad_engine` its `[vad] engine`
    ("": the default), `echo` its `[echo] enabled`, `vad_batch` its `[vad] batch_across_calls`
    ("on"/"off"; "": the default), `freeze_calls` its `[gc] freeze_calls`.

    With `profile_dir`, the bridge process is profiled (cProfile) over each step's window into
    `bridge-<N>.prof` there (the profiler slows the bridge: use those steps for where the time
    goes, not for capacity); see `profile_summary`.
    """
    bridge_cpu, caller_cpu = _cores()
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")  # a clean interpreter per side: no inherited loop or threads
    results: list[StepResult] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vb-bench-")))
        caller_wav = make_speech_wav(tmp / "caller.wav", CALLER_PHRASE)  # said once per bot turn
        bot_wav = make_speech_wav(tmp / "bot.wav", BOT_PHRASE)
        priority = (nice, realtime)
        bridge = stack.enter_context(
            _Child(
                ctx,
                bridge_main,
                bridge_cpu,
                priority,
                bot_wav,
                "bench-bridge",
                event_loop,
                vad_engine,
                echo,
                vad_batch,
                freeze_calls,
            )
        )
        callers = stack.enter_context(
            _Child(ctx, callers_main, caller_cpu, priority, caller_wav, "bench-callers")
        )
        for n in steps:
            for _ in range(max(1, repeat)):
                uuids = [str(uuid.uuid4()) for _ in range(n)]
                port = bridge.ask("ready", 30, "expect", uuids)
                callers.ask("connected", 60 + n / 10, "connect", port, uuids)
                connected = bridge.ask("calls", 30, "wait_calls", n, 20.0)
                t0 = time.monotonic() + warmup_s  # loop.time() is time.monotonic() on both sides
                t1 = t0 + duration_s
                prof = str(profile_dir / f"bridge-{n}.prof") if profile_dir is not None else None  # last run
                bridge.send("measure", t0, t1, prof)
                callers.send("measure", t0, t1)
                wait = warmup_s + duration_s + 30
                b_stats: BridgeStats = bridge.reply("stats", wait)
                c_stats: CallerStats = callers.reply("stats", wait)
                callers.ask("done", 60, "hangup")
                left: Leftovers = bridge.ask("done", 60, "teardown")
                step = StepResult(n, b_stats, c_stats, left)
                results.append(step)
                if progress is not None:
                    progress(
                        f"  {n} calls ({connected} connected): {'ok' if step.ok else 'over the limits'}, "
                        f"{step.bridge.cpu_ms_per_call_s:.3f} ms CPU per call-second"
                    )
            if stop_on_failure and not all(r.ok for r in results if r.calls == n):
                break
    return CapacityResult(results, bridge_cpu is not None, duration_s, bridge.scheduling)
