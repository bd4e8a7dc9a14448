"""The levels of the per-call figures over the stand-ins (`bench.standin_figures`): how the calls
of a level are started and when they take their turn, bounded callers, failures with their errors.

Modes (`LevelPlan.mode`):
- "single": one call (the 1-call row runs it `repeat` times, each in a fresh harness);
- "paced" (the default row for N calls): the N calls start 10 ms apart; each, after its greeting,
  waits until all N are live (past their greeting, or failed); from that moment call i says its
  line at `arrival_offsets(N, window_s, arrivals, seed)[i]`: turns spread over the window on N
  open calls, as a call centre's steady state;
- "burst" (the "stress" row): the N calls start 10 ms apart and each says its line as soon as
  its greeting is over: all turns within about 2 s, a thundering herd, not a call centre.

Every wait is bounded. A caller gives the bot `PATIENCE_S` after its line (on top of the line's
own length) to answer, and after its last line to hang up; then it hangs up itself and the call
counts as failed, with the stage it was in and the error (`CallFailure`), so a stuck call cannot
hang the bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from bench.bridge_side import rss_kb
from bench.call_figures import CallBench, CallFigures, Leg, T
from bench.call_levels import CpuMeter, FiguresResult, worst_known
from bench.call_probes import ANSWER_LABEL, PROBES, Probe
from bench.common import GcTimer
from testkit.fake_asterisk import FakeAsterisk

__all__ = [
    "PATIENCE_S",
    "Arrivals",
    "CallFailure",
    "CallerGaveUp",
    "CallerTimer",
    "LevelPlan",
    "LevelRun",
    "arrival_offsets",
    "caller_wait",
    "run_level",
]

PATIENCE_S = 10.0  # a caller's wait for the bot after its line, beyond the line's own length
START_GAP_S = 0.01  # between two calls' starts (as `call_figures` starts its levels)
BYTES_PER_S = 16_000  # 8 kHz s16 caller audio
_CALL_END_KEYS = ("reason", "end_detail", "final_state", "turns", "stt_frames_dropped",
                  "stt_results_dropped", "finals_held", "finals_joined")  # fmt: skip

Arrivals = Literal["even", "poisson"]
Mode = Literal["single", "paced", "burst"]


def arrival_offsets(n: int, window_s: float, arrivals: Arrivals = "even", *, seed: int = 1) -> list[float]:
    """When each of `n` calls says its line, s after all are live: n values, ascending, the first
    0, all in [0, window_s) (all 0 when `window_s` is 0).

    even: i * window_s / n. poisson: the gaps drawn exponential from `random.Random(seed)` and
    scaled so that the n gaps (the last one closing the window) add up to `window_s`: the same
    mean gap, window_s / n, as even; the arrivals after the first are then those of a Poisson
    process given that n - 1 of them fall inside the window. `ValueError` on n < 1, a negative
    window or an unknown `arrivals`.
    """
    if n < 1 or window_s < 0:
        raise ValueError(f"arrival_offsets: n={n}, window_s={window_s}")
    if arrivals == "even":
        return [i * window_s / n for i in range(n)]
    if arrivals != "poisson":
        raise ValueError(f"arrival_offsets: unknown arrivals {arrivals!r}")
    rng = random.Random(seed)
    gaps = [rng.expovariate(1.0) for _ in range(n)]
    scale = window_s / sum(gaps)
    return [0.0, *(scale * t for t in itertools.accumulate(gaps[:-1]))]


@dataclass(frozen=True)
class LevelPlan:
    """How a level runs: `mode` (see the module), its calls, and for "paced" the turn window (s),
    the arrivals and their seed."""

    mode: Mode
    calls: int
    window_s: float = 0.0
    arrivals: Arrivals = "even"
    seed: int = 1

    @property
    def label(self) -> str:
        if self.mode == "paced":
            return f"{self.calls} paced ({self.arrivals}, {self.window_s:g} s)"
        return f"{self.calls} burst (stress)" if self.mode == "burst" else "1 call"


@dataclass
class CallFailure:
    """A call that gave no figures: which (`index` in the level, `call_id`), in which `stage`
    (start, greeting, all-live, answer, goodbye, end), the `error`, when (`at_s` since the level
    began), the Orchestrator's call_end record (its reason and counters, e.g.
    stt_results_dropped) if the call got that far, and what the bridge wrote of the answer."""

    index: int
    call_id: str
    stage: str
    error: str
    at_s: float
    call_end: dict[str, Any] | None = None
    turn_records: int = 0
    answer_frames: int = 0
    # (s since the call's start, what, text): the call's events, the VAD's onset decisions and
    # the answer's first frame written.
    timeline: list[tuple[float, str, str | None]] = dataclasses.field(default_factory=list)


@dataclass
class LevelRun:
    """One level: the figures (`result`), the failures, the callers' share of the loop (% of wall
    time spent in the fake callers' send and receive code; 0 with them in their own process,
    whose CPU is `result.callers_cpu_pct`) and the turns' actual spread (s, the
    first call's turn to the last one's; 0 for one call), the level's wall time (s) and, paced,
    each call's turn after the moment all were live (s, by call index; None for a call that
    never turned; planned: `arrival_offsets`, actual: that or later, as the loop allowed)."""

    plan: LevelPlan
    result: FiguresResult
    failures: list[CallFailure]
    callers_loop_pct: float
    turn_span_s: float
    wall_s: float
    turn_offsets_s: list[float | None] = dataclasses.field(default_factory=list)


class CallerGaveUp(Exception):
    """A bounded wait of the caller's ran out."""


class _Schedule:
    """The level's turn times: counted from the moment every call is live (paced) or not at all."""

    def __init__(self, plan: LevelPlan) -> None:
        self.paced = plan.mode == "paced"
        self.offsets = arrival_offsets(plan.calls, plan.window_s, plan.arrivals, seed=plan.seed)
        self._pending = plan.calls
        self.all_live = asyncio.Event()
        self.t0 = 0.0
        self.turns: dict[int, float] = {}  # call index -> loop time it began its line
        self.rss_live_kb = 0.0

    def arrive(self) -> None:
        """One more call is live or has failed; the last one starts the clock."""
        self._pending -= 1
        if self._pending == 0:
            self.t0 = asyncio.get_running_loop().time()
            self.rss_live_kb = rss_kb()
            self.all_live.set()


class CallerTimer:
    """Time spent in the fake callers' code (`FakeAsterisk.tick`, `.data_received`) while open:
    the callers' share of the loop the bridge runs on. Patches the class; restored on exit."""

    def __init__(self) -> None:
        self.busy_s = 0.0

    def __enter__(self) -> CallerTimer:
        self._tick, self._received = FakeAsterisk.tick, FakeAsterisk.data_received
        tick, received, clock = self._tick, self._received, time.perf_counter

        def timed_tick(caller: FakeAsterisk) -> None:
            t = clock()
            tick(caller)
            self.busy_s += clock() - t

        def timed_received(caller: FakeAsterisk, data: bytes) -> None:
            t = clock()
            received(caller, data)
            self.busy_s += clock() - t

        setattr(FakeAsterisk, "tick", timed_tick)  # noqa: B010 - a bench-only probe
        setattr(FakeAsterisk, "data_received", timed_received)  # noqa: B010
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(FakeAsterisk, "tick", self._tick)  # noqa: B010
        setattr(FakeAsterisk, "data_received", self._received)  # noqa: B010


async def caller_wait(
    waited: Awaitable[object], handler: asyncio.Task[None], bound_s: float, what: str
) -> None:
    """Wait for `waited` at most `bound_s`; `CallerGaveUp` if it did not come, or if the call's handler
    ended first (its exception, if any, is raised as is)."""
    task = asyncio.ensure_future(waited)
    try:
        await asyncio.wait({task, handler}, timeout=bound_s, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await asyncio.sleep(0)  # a handler already over returns at once: let `waited` have its step
    finally:
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        task.result()
        return
    if handler.done():
        handler.result()  # the call's own exception, if it raised
        raise CallerGaveUp(f"the bot ended the call before {what}")
    raise CallerGaveUp(f"no {what} within {bound_s:.1f} s")


def _patience(line: bytes) -> float:
    return len(line) / BYTES_PER_S + PATIENCE_S


async def _call(
    bench: CallBench, i: int, lines: tuple[bytes, bytes], sched: _Schedule, failures: list[CallFailure]
) -> CallFigures | None:
    """Call `i` of the level: greeting, (paced: all live, then its slot), question, answer, its
    last line, the bot's goodbye and hang-up. None (and a `CallFailure`) when it did not finish."""
    question, stop = lines
    loop = asyncio.get_running_loop()
    began = loop.time()
    stage, arrived = "start", False
    leg: tuple[str, Leg, asyncio.Task[None]] | None = None
    try:
        await asyncio.sleep(i * START_GAP_S)
        leg = cid, caller, handler = await asyncio.wait_for(bench.start_call(), T)
        probe = PROBES[cid]
        stage = "greeting"
        await caller_wait(probe.listening.wait(), handler, T, "greeting")
        if sched.paced:
            stage, arrived = "all-live", True
            sched.arrive()
            await caller_wait(
                sched.all_live.wait(),
                handler,
                T + len(sched.offsets) * START_GAP_S,
                "moment all calls are live",
            )
            await asyncio.sleep(max(0.0, sched.t0 + sched.offsets[i] - loop.time()))
        stage = "answer"
        sched.turns[i] = loop.time()
        caller.play(question)
        await caller_wait(probe.answering.wait(), handler, _patience(question), "answer")
        stage = "goodbye"
        caller.play(stop)
        await caller_wait(asyncio.shield(handler), handler, _patience(stop), "hang-up by the bot")
        stage = "end"
        bench.hangup(caller)
        await asyncio.wait_for(caller.wait_closed(), T)
        return bench.figures(probe)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, the level goes on
        error = str(exc) if isinstance(exc, CallerGaveUp) else repr(exc)
        if sched.paced and not arrived:
            # Now, not after the hang-up's wait below (up to 5 s): the others' wait for all live
            # is bounded by T plus the start offsets, and this call is not coming.
            arrived = True
            sched.arrive()
        if leg is not None:
            bench.hangup(leg[1])  # the caller gives up: the bot sees the EOF and ends the call
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(leg[2]), 5.0)
        probe_or_none = PROBES.get(leg[0]) if leg is not None else None
        failures.append(_failure(i, leg[0] if leg else "", stage, error, began, probe_or_none))
        return None
    finally:
        if sched.paced and not arrived:
            sched.arrive()  # cancelled before it was live: it does not hold the others
        if leg is not None:
            leg[2].cancel()
            PROBES.pop(leg[0], None)
            bench.forget(leg[1])


def _failure(i: int, cid: str, stage: str, error: str, began: float, probe: Probe | None) -> CallFailure:
    at = asyncio.get_running_loop().time() - began
    if probe is None:
        return CallFailure(i, cid, stage, error, round(at, 3))
    end = next((r for r in probe.records if r.get("event") == "call_end"), None)
    first = next((t for t, lab in probe.frames if lab == ANSWER_LABEL), None)
    marks = [*probe.events, *((t, "vad_onset", None) for t in probe.onsets)]
    marks += [(first, "answer_first_frame", None)] if first is not None else []
    return CallFailure(
        i,
        cid,
        stage,
        error,
        round(at, 3),
        {k: end.get(k) for k in _CALL_END_KEYS} if end is not None else None,
        sum(1 for r in probe.records if r.get("event") != "call_end"),
        probe.answer_frames,
        [(round(t - began, 3), what, text) for t, what, text in sorted(marks, key=lambda m: m[0])],
    )


async def _run(
    plan: LevelPlan, lines: tuple[bytes, bytes], bench_factory: Callable[[], CallBench]
) -> LevelRun:
    async with bench_factory() as bench:
        sched = _Schedule(plan)
        failures: list[CallFailure] = []
        base = rss_kb()
        wall0 = time.monotonic()
        meter = CpuMeter(bench.caller_process)
        gc_timer = GcTimer()
        try:
            with CallerTimer() as callers:
                runs = [_call(bench, i, lines, sched, failures) for i in range(plan.calls)]
                results = await asyncio.gather(*runs)
        finally:
            gc_timer.close()
        wall = time.monotonic() - wall0
        cpu_pct, callers_pct = meter.read()
        peak = max(sched.rss_live_kb, rss_kb())
        pacer = bench.app.pacer
    calls = [r for r in results if r is not None]
    failures.sort(key=lambda f: f.index)
    result = FiguresResult(
        plan.calls,
        calls,
        (peak - base) / plan.calls,
        len(failures),
        cpu_pct,
        pacer.max_lateness_s * 1000,
        pacer.resyncs,
        gc_timer.max_s * 1000,
        callers_pct,
        None if bench.remote is None else bench.remote.late_ms,
    )
    turns = sched.turns.values()
    span = max(turns) - min(turns) if len(turns) > 1 else 0.0
    after: list[float | None] = (
        [t - sched.t0 if (t := sched.turns.get(i)) is not None else None for i in range(plan.calls)]
        if sched.paced
        else []
    )
    return LevelRun(plan, result, failures, callers.busy_s / wall * 100, span, wall, after)


def run_level(
    plan: LevelPlan,
    lines: tuple[bytes, bytes],
    bench_factory: Callable[[], CallBench],
    *,
    repeat: int = 1,
) -> LevelRun:
    """Run the level `repeat` times in turn, each in its own loop and harness, merged into one:
    calls and failures together (a failure's index counts across the repeats), CPU and callers'
    share, pacer lateness and collector pause their worst, resyncs summed. `lines`: the caller's
    question and last line (8 kHz s16 PCM). Call under `call_probes.Probes()`."""
    runs = [asyncio.run(_run(plan, lines, bench_factory)) for _ in range(repeat)]
    if repeat == 1:
        return runs[0]
    rs = [r.result for r in runs]
    failures = [
        dataclasses.replace(f, index=f.index + k * plan.calls) for k, r in enumerate(runs) for f in r.failures
    ]
    merged = FiguresResult(
        plan.calls,
        [c for r in rs for c in r.calls],
        sum(r.rss_per_call_kb for r in rs) / len(rs),
        len(failures),
        max(r.cpu_pct for r in rs),
        max(r.late_ms for r in rs),
        sum(r.resyncs for r in rs),
        max(r.gc_ms for r in rs),
        worst_known([r.callers_cpu_pct for r in rs]),
        worst_known([r.callers_late_ms for r in rs]),
    )
    return LevelRun(
        plan,
        merged,
        failures,
        max(r.callers_loop_pct for r in runs),
        0.0,
        sum(r.wall_s for r in runs),
    )
