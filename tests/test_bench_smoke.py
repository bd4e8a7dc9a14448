"""Smoke tests of `python -m bench`: every benchmark in a tiny configuration, so the code cannot rot.

They check that tables come out with the right columns and that audio and turns were really
counted; never how fast anything was (that is what `make bench` is for).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

import bench.__main__ as bench_main
from bench import standin_levels
from bench.bridge_side import BridgeStats, Leftovers
from bench.call_figures import ROOT, CallBench, CallFigures
from bench.call_levels import run_figures
from bench.call_probes import PROBES, Probe
from bench.callers import CallerStats
from bench.common import Histogram, percentile, table
from bench.dialogue import render_dialogue, run_dialogue, scripts
from bench.figures_report import figures_json, render_figures
from bench.hotpath import HEADERS, CapacityResult, StepResult, capacity_json, run_capacity
from bench.micro import render_micro, run_micro
from bench.short_calls import run_short_calls
from bench.standin_figures import StandinFigures, Standins, level_plans, run_standin_figures
from bench.standin_levels import (
    CallerGaveUp,
    CallerTimer,
    CallFailure,
    LevelPlan,
    arrival_offsets,
    caller_wait,
)
from bench.standin_report import render_standins, standins_json
from bench.virtual_figures import run_virtual_figures

needs_espeak = pytest.mark.skipif(
    not (shutil.which("espeak-ng") and shutil.which("sox")),
    reason="espeak-ng and sox are needed (make system-deps)",
)


def _header_cells(rendered: str, title_lines: int = 1) -> list[str]:
    return rendered.splitlines()[title_lines].split()


def test_histogram_percentiles_and_table() -> None:
    h = Histogram()
    for ms in range(1, 101):
        h.add(ms / 1000)
    h.add(5.0)  # beyond the last bin: counted in the overflow, kept as the max
    assert h.n == 101
    assert h.percentile(50) == pytest.approx(0.051, abs=0.0011)
    assert h.percentile(100) == 5.0
    assert h.below(0.0105) == 10
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    rendered = table(("name", "n"), [["a", 1.25], ["bb", None]], title="T")
    assert rendered.splitlines() == ["T", "name    n", "----  ---", "a     1.2", "bb      -"]


@needs_espeak
def test_capacity_with_calls_frozen_carries_audio_and_leaves_nothing() -> None:
    # `--bridge-freeze-calls on`: each call frozen out of full collections as it connects, as
    # `[gc] freeze_calls` does in the service; closing them still leaves nothing behind.
    result = run_capacity([3], duration_s=1.0, warmup_s=0.5, realtime=False, nice=0, freeze_calls=True)
    assert "calls frozen" in result.scheduling
    (step,) = result.steps
    assert step.bridge.calls == 3 and step.bridge.frames_out > 0 and step.callers.frames_received > 0
    assert step.left.tasks == 0 and step.left.connections == 0


@needs_espeak
def test_capacity_sweep_runs_two_processes_and_counts_frames() -> None:
    result = run_capacity([5], duration_s=1.0, warmup_s=0.5, realtime=False, nice=0, repeat=2)
    assert len(result.steps) == 2  # the one N, run twice
    for step in result.steps:
        assert step.calls == 5 and step.bridge.calls == 5 and step.callers.calls == 5
        # Both directions carried audio; the bot spoke some of it; the callers timed the frames,
        # by the kernel's receive timestamps.
        assert step.bridge.frames_out > 0 and step.bridge.frames_in > 0
        assert step.callers.frames_received > 0 and step.callers.frames_sent > 0
        assert step.callers.p50_ms > 0
        assert step.callers.kernel_stamps > 0
        assert step.bridge.cpu_s > 0 and step.bridge.cpu_ms_per_call_s > 0
        # The kernel's part is a part: the sockets' time is in the total.
        assert 0 <= step.bridge.sys_s <= step.bridge.cpu_s
        assert 0 <= step.bridge.onnx_s <= step.bridge.wall_s  # wall time: may exceed CPU when preempted
        assert step.bridge.sys_ms_per_call_s <= step.bridge.cpu_ms_per_call_s
        assert step.bridge.calls_per_core(0.8) == pytest.approx(800 / step.bridge.cpu_ms_per_call_s)
        # Closing the calls left nothing behind.
        assert step.left.tasks == 0 and step.left.connections == 0
    (summary,) = result.summaries
    assert summary.calls == 5 and len(summary.capacities) == 2
    assert min(summary.capacities) <= summary.capacity <= max(summary.capacities)
    rendered = result.render()
    assert _header_cells(rendered) == list(HEADERS)
    rows = rendered.splitlines()[3:]
    assert rows[0].split()[0] == "5" and rows[1].split()[0] == "5"
    assert "calls per core at 80%" in rendered and "external figure" in rendered
    data = capacity_json(result, "asyncio")
    assert len(data["runs"]) == 2 and len(data["steps"]) == 1  # type: ignore[arg-type]
    assert {"cpu", "python", "commit"} <= set(data["machine"])  # type: ignore[call-overload]


@needs_espeak
def test_micro_costs_table_has_every_operation() -> None:
    results = run_micro(number=200, repeat=2)
    # 12 hot-path rows (VAD on speech with two engines, echo gate, echo subtraction) + 2 resampler rows
    assert len(results) == 14
    assert all(r.ns_per_frame > 0 and r.calls == 400 for r in results)
    rendered = render_micro(results)
    assert rendered.splitlines()[1].split() == ["operation", "ns/frame", "calls", "per", "20", "ms/core"]
    assert len(rendered.splitlines()) == 3 + len(results)


def test_dialogue_latency_counts_turns_and_classifier_calls() -> None:
    result = run_dialogue(calls=2, concurrency=2, classifier_repeat=2)
    assert sum(result.outcomes.values()) == 2
    user_turns = sum(len(s) for s in scripts(2))
    assert 0 < len(result.turns) <= user_turns
    assert all("classify_us" in t for t in result.turns)  # every turn matched its classify call
    assert all(t["response_ms"] is not None for t in result.turns)
    assert result.classify_cold_us and result.classify_us and result.faq_us
    rendered = render_dialogue(result)
    assert _header_cells(rendered)[:2] == ["route", "turns"]
    assert "response_p95_ms" in _header_cells(rendered)
    assert any(line.startswith("all ") for line in rendered.splitlines())
    assert "classify_intent, repeated" in rendered


def test_soak_summary_accounts_for_every_call_wait_and_leftover() -> None:
    # The soak itself runs for minutes (`make soak`); its accounting is checked on a made-up run.
    from bench.soak_report import CallRecord, Fault, SoakResult, Wait

    fault = Fault("speechkit", "kill", start=10.0, end=13.0)
    ok = CallRecord(0, 0.0, 30.0, "end_call", waits=[Wait(1.0, 0.3, 4.0, []), Wait(5.0, 0.5, 4.0, [])])
    hit = CallRecord(
        1,
        8.0,
        40.0,
        "stt_failure",
        waits=[Wait(11.0, 9.5, 8.0, ["speechkit:kill@10"])],
        faults=["speechkit:kill@10"],
    )
    odd = CallRecord(
        2, 20.0, 50.0, "caller_hangup", harness="stuck_hangup", waits=[Wait(21.0, None, 4.0, [])]
    )
    slow = CallRecord(
        3, 0.0, 30.0, "end_call", waits=[Wait(2.0, 6.0, 4.0, []), Wait(9.0, None, 4.0, [], closed_s=1.0)]
    )
    result = SoakResult(
        minutes=1, concurrent=4, seed=1, calls=[ok, hit, odd, slow], faults=[fault],
        rss_mb=[(0.0, 100.0), (30.0, 101.0), (60.0, 102.0)], fds=[(0.0, 20), (30.0, 25)],
        baseline_tasks={"ari-controller": 1}, leftover_tasks={"call-handler-#": 1},
        baseline_fds=20, end_fds=21, leftover_fd_kinds={"tcp:redis": 1}, bound_s=4.0, fault_bound_s=8.0,
        harness_rss_mb=[(0.0, 90.0), (60.0, 91.0)], objects_grown={"dict": 12},
    )  # fmt: skip
    s = result.summary()
    assert (s["calls"], s["completed"], s["failed"]) == (4, 2, 2)
    assert s["failed_by_reason"] == {"stt_failure": 1, "caller_hangup": 1}
    assert s["failed_unexplained"] == 1  # the stuck call overlapped no fault
    assert s["harness_actions"] == {"stuck_hangup": 1}
    # 1.5 s (in a fault) + 2 s + the mute wait: 40 s heard, 36 s beyond the bound; the hang-up 1 s after: 0.
    assert s["dead_air_beyond_bound_s"] == 39.5 and s["dead_air_beyond_bound_no_fault_s"] == 38.0
    assert s["waits_over_bound"] == 3 and s["waits_never_answered"] == 1 and s["waits_ended_by_hangup"] == 1
    assert s["rss_mb_per_min_second_half"] == 2.0 and s["fds_max_during"] == 25
    assert (s["leftover_tasks"], s["leftover_fds"]) == (1, 1)
    assert s["rss_mb_at_minute"] == {1: 102.0} and s["harness_rss_mb_last"] == 91.0
    table = result.render()
    for row in (
        "completed",
        "dead air beyond bound",
        "RSS slope",
        "harness RSS",
        "objects grown",
        "leftover fds",
    ):
        assert row in table


@needs_espeak
def test_call_figures_count_frames_and_the_bot_stops_at_the_barge_in_decision() -> None:
    levels = run_figures((1, 3), repeat_single=1, callers="inline")
    assert [(lv.concurrent, len(lv.calls), lv.failed) for lv in levels] == [(1, 1, 0), (3, 3, 0)]
    for fig in (c for lv in levels for c in lv.calls):
        assert fig.greeting_ms is not None and fig.overhead_ms is not None
        assert fig.overhead_queued_ms is not None and fig.overhead_own_ms is not None
        assert fig.handover_silence == 0  # the answer follows the cut filler at the next frame
        assert fig.underflow == 0  # the answer's audio came faster than it is played
        assert fig.barge_frames == 0  # nothing of the answer after the VAD's decision
    virtual = run_virtual_figures()
    assert (virtual.barge_frames, virtual.underflow, virtual.handover_silence) == (0, 0, 0)
    assert virtual.handover_ms == pytest.approx(20.0)  # the answer's first frame on the next tick
    rendered = render_figures(levels, None, virtual)
    assert _header_cells(rendered) == ["figure", "calls", "n", "p50", "p95", "p99", "max", "target"]
    assert "barge-in frames after" in rendered
    assert "filler hand-over silence frames" in rendered
    assert all(lv.callers_cpu_pct is None for lv in levels)  # inline: one process


@needs_espeak
def test_call_figures_with_the_callers_in_their_own_process() -> None:
    # The callers run in the child: none of `FakeAsterisk`'s sending or receiving code runs here,
    # yet the bridge side counts the same frames and decisions as with the callers inline.
    with CallerTimer() as here:
        levels = run_figures((1, 2), repeat_single=2, callers="process")
    assert here.busy_s == 0.0
    assert [(lv.concurrent, len(lv.calls), lv.failed) for lv in levels] == [(1, 2, 0), (2, 2, 0)]
    for fig in (c for lv in levels for c in lv.calls):
        assert fig.greeting_ms is not None and fig.overhead_own_ms is not None
        assert fig.handover_silence == 0 and fig.underflow == 0
        assert fig.barge_frames == 0  # the child's barge-in line reached the VAD; nothing after
    for lv in levels:
        assert lv.callers_cpu_pct is not None and lv.callers_cpu_pct > 0  # the child did the work
        assert lv.callers_late_ms is not None
    rendered = render_figures(levels, None)
    assert "caller process CPU %" in rendered and "bridge CPU %" in rendered
    data = figures_json(levels, None)["levels"]
    assert isinstance(data, list) and all(r["caller_process_cpu_pct"] > 0 for r in data)


@needs_espeak
def test_figures_over_the_standins_measure_the_providers_on_the_wire() -> None:
    plans = level_plans((1, 3), window_s=0.3, arrivals="poisson")
    assert [p.mode for p in plans] == ["single", "paced", "burst"]  # the burst: the stress row
    with Standins() as standins:
        levels = run_standin_figures(standins, plans, repeat_single=1)
    assert [(lv.result.concurrent, len(lv.result.calls), lv.result.failed) for lv in levels] == [
        (1, 1, 0),
        (3, 3, 0),
        (3, 3, 0),
    ]
    for fig in (c for lv in levels for c in lv.result.calls):
        assert isinstance(fig, StandinFigures)
        assert fig.overhead_own_ms is not None and fig.overhead_measured_ms is not None
        # The stand-ins' own delays (300 ms to the first token, 100 ms to the audio) are inside
        # what the turn record measured: the answer really went over HTTP and gRPC.
        assert fig.llm_first_token_ms is not None and fig.llm_first_token_ms >= 300
        assert fig.tts_first_audio_ms is not None and fig.tts_first_audio_ms >= 100
        assert fig.barge_frames == 0
    # The callers ran in their own process (the default): its CPU measured, none of their code here.
    assert all(lv.result.callers_cpu_pct and lv.run.callers_loop_pct == 0 for lv in levels)
    # The paced calls all waited for the moment all were live, then each for its own slot (a
    # sleep never ends early; 1 ms for the clock's resolution); the others kept no schedule.
    planned = arrival_offsets(3, 0.3, "poisson")
    actual = levels[1].run.turn_offsets_s
    assert len(actual) == 3 and all(
        a is not None and a >= p - 0.001 for a, p in zip(actual, planned, strict=True)
    )
    assert levels[0].run.turn_offsets_s == levels[2].run.turn_offsets_s == []
    rendered = render_standins(levels)
    assert "own: t2->t4 + t5->queued" in rendered and "3 burst (stress)" in rendered
    data = standins_json(levels, "default")
    rows = data["levels"]
    assert isinstance(rows, list) and [r["mode"] for r in rows] == ["single", "paced", "burst"]
    assert all(r["failures"] == [] for r in rows)


def test_the_standins_die_with_a_killed_bench() -> None:
    # A bench killed by SIGKILL (or SIGTERM) runs no __exit__: the stand-ins must go by themselves.
    code = (
        "import sys, threading\n"
        "from bench.standin_figures import Standins\n"
        "with Standins() as s:\n"
        "    print(*(p.pid for p in s.procs), flush=True)\n"
        "    threading.Event().wait()\n"
    )
    bench = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert bench.stdout is not None
    pids = [int(p) for p in bench.stdout.readline().split()]
    assert len(pids) == 2
    fds = [os.pidfd_open(pid) for pid in pids]
    try:
        bench.kill()
        bench.wait()
        for fd in fds:  # a pidfd is readable once its process has exited
            assert select.select([fd], [], [], 10.0)[0] == [fd], "a stand-in outlived the bench"
    finally:
        for fd in fds:  # whatever the outcome, nothing left running
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)


def test_a_standin_that_never_says_it_listens_fails_the_start_in_bounded_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in stuck before its "listening" line (here: one that never writes it) once hung the
    # bench in readline for good; now the start fails and the one already up is stopped too.
    (tmp_path / "silent_standin.py").write_text("import threading\nthreading.Event().wait()\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    real_start = Standins._start
    started: list[subprocess.Popen[bytes]] = []

    def start(self: Standins, module: str, *args: str, script: Path) -> str:
        module = "silent_standin" if module == "bench.standin_speechkit" else module
        try:
            return real_start(self, module, *args, script=script)
        finally:
            started.extend(p for p in self.procs if p not in started)

    monkeypatch.setattr(Standins, "_start", start)
    with (
        pytest.raises(RuntimeError, match=r"^silent_standin did not start within 0\.5 s$"),
        Standins(start_timeout_s=0.5),
    ):
        pass
    assert len(started) == 2 and all(p.returncode is not None for p in started)


def test_turn_arrivals_fill_the_window_evenly_or_as_a_seeded_poisson_process() -> None:
    even = arrival_offsets(4, 8.0)
    assert even == [0.0, 2.0, 4.0, 6.0]
    assert arrival_offsets(3, 0.0, "poisson") == [0.0, 0.0, 0.0]  # no window: a burst
    n, window = 2000, 8.0
    a = arrival_offsets(n, window, "poisson", seed=7)
    assert len(a) == n and a[0] == 0.0 and a == sorted(a) and a[-1] < window
    assert a == arrival_offsets(n, window, "poisson", seed=7)  # the seed alone decides
    assert a != arrival_offsets(n, window, "poisson", seed=8)
    gaps = [y - x for x, y in zip(a, [*a[1:], window], strict=True)]  # the last gap closes the window
    mean = sum(gaps) / n
    assert mean == pytest.approx(window / n)  # the same mean gap as even
    # Exponential gaps: spread as wide as their mean (uniform gaps would give 0.58, even 0).
    sd = (sum((g - mean) ** 2 for g in gaps) / n) ** 0.5
    assert 0.9 < sd / mean < 1.1
    with pytest.raises(ValueError):
        arrival_offsets(3, 1.0, "bursty")  # type: ignore[arg-type]


def test_a_caller_gives_up_on_a_silent_bot_and_says_why() -> None:
    async def main() -> None:
        never = asyncio.Event()
        live = asyncio.create_task(asyncio.sleep(60))
        with pytest.raises(CallerGaveUp, match=r"^no answer within 0\.1 s$"):
            await caller_wait(never.wait(), live, 0.1, "answer")
        live.cancel()
        ended = asyncio.create_task(asyncio.sleep(0))
        await ended
        with pytest.raises(CallerGaveUp, match="the bot ended the call before answer"):
            await caller_wait(never.wait(), ended, 60, "answer")
        came = asyncio.Event()
        came.set()
        await caller_wait(came.wait(), ended, 60, "answer")  # it came, though the call is over since

    asyncio.run(main())


class _Leg:
    """A fake caller for `_call`: `play` of the question makes the bot answer, of the last line
    makes it hang up; the pool's hang-up ends a silent bot only `linger_s` later."""

    def __init__(self, probe: Probe, linger_s: float) -> None:
        self.probe, self.linger_s, self.lines = probe, linger_s, 0
        self.ended = asyncio.Event()
        self.handler = asyncio.create_task(self._bot(), name="test-fake-handler")

    async def _bot(self) -> None:
        await self.ended.wait()

    def play(self, _pcm: bytes) -> None:
        self.lines += 1
        (self.probe.answering if self.lines == 1 else self.ended).set()

    def hung_up(self) -> None:
        asyncio.get_running_loop().call_later(self.linger_s, self.ended.set)

    async def wait_closed(self) -> None:
        return None


class _Pool:
    def __init__(self) -> None:
        self.callers: list[_Leg] = []

    def hangup(self, leg: _Leg) -> None:
        leg.hung_up()


class _Bench:
    """Call 0 is greeted at once; call 1 never is, and its bot takes 1 s to end after the hang-up."""

    def __init__(self) -> None:
        self.pool = _Pool()
        self.started = 0

    async def start_call(self) -> tuple[str, _Leg, asyncio.Task[None]]:
        cid, self.started = f"test-call-{self.started}", self.started + 1
        probe = PROBES[cid] = Probe()
        if cid == "test-call-0":
            probe.listening.set()
        leg = _Leg(probe, 0.0 if cid == "test-call-0" else 1.0)
        self.pool.callers.append(leg)
        return cid, leg, leg.handler

    def figures(self, _probe: Probe) -> CallFigures:
        return CallFigures()

    def hangup(self, leg: _Leg) -> None:
        self.pool.hangup(leg)

    def forget(self, leg: _Leg) -> None:
        if leg in self.pool.callers:
            self.pool.callers.remove(leg)


def test_a_paced_call_that_fails_before_it_is_live_does_not_hold_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every bound 0.2 s: call 0 waits 0.2 s (+ the start offsets) for all calls to be live; call 1
    # gives up on its greeting at 0.2 s, and its bot takes 1 s to end after that hang-up.
    monkeypatch.setattr(standin_levels, "T", 0.2)

    async def main() -> tuple[list[CallFigures | None], list[CallFailure]]:
        sched = standin_levels._Schedule(LevelPlan("paced", 2, 0.01))
        failures: list[CallFailure] = []
        bench = cast(CallBench, _Bench())
        lines = (b"q", b"bye")
        calls = [standin_levels._call(bench, i, lines, sched, failures) for i in range(2)]
        return await asyncio.gather(*calls), failures

    results, failures = asyncio.run(main())
    # Call 1 counted as arrived when it gave up, not after the bot's 1 s: call 0 had its turn.
    assert [(f.index, f.stage, f.error) for f in failures] == [(1, "greeting", "no greeting within 0.2 s")]
    assert isinstance(results[0], CallFigures) and results[1] is None


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--turn-window", "-1"),  # was run as burst only, 200 calls
        ("--turn-window", "nan"),
        ("--standins-calls", "0"),  # was a ValueError traceback after the stand-ins' warm-up call
        ("--standins-calls", "1,200"),  # was the 1-call level twice
        ("--single-calls", "0"),  # was a ZeroDivisionError after the levels had run
        ("--figure-calls", "0"),
    ],
)
def test_bench_options_refuse_bad_values_before_running_anything(
    option: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def reached(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the bench ran with a bad option value")

    monkeypatch.setattr(bench_main, "level_plans", reached)
    monkeypatch.setattr(bench_main, "run_figures", reached)
    with pytest.raises(SystemExit) as exited:
        bench_main.main(["--only", "standins", "--only", "figures", option, value])
    assert exited.value.code == 2
    assert f"argument {option}: {value}" in capsys.readouterr().err


def test_short_calls_leave_no_tasks_and_no_descriptors() -> None:
    short = run_short_calls(30, warmup=10)
    assert short.leftover_tasks == []
    assert short.fds_end == short.fds_warm
    assert len(short.greeting_ms) == 30  # every call got its greeting before the caller hung up
    data = figures_json([], short)
    assert data["short_calls"] is not None and "python" in data["machine"]  # type: ignore[operator]


def _step(calls: int, cpu_pct: float, *, ok: bool, fed: float = 1.0) -> StepResult:
    # Only what the verdicts read: the step's CPU and call count, the frames it took in (`fed`:
    # the share of its calls' 50 a second), the callers' gaps and p99.
    bridge = SimpleNamespace(
        calls=calls,
        cpu_pct=cpu_pct,
        cpu_ms_per_call_s=10 * cpu_pct / calls,
        wall_s=10.0,
        frames_in=fed * calls * 50 * 10.0,
    )
    bridge.calls_per_core = lambda share: share * 1000 / bridge.cpu_ms_per_call_s
    callers = SimpleNamespace(bad_gaps=0 if ok else 5, p99_ms=21.0 if ok else 90.0)
    return StepResult(calls, cast(BridgeStats, bridge), cast(CallerStats, callers), cast(Leftovers, None))


def test_capacity_is_not_quoted_from_a_saturated_step() -> None:
    sweep = [_step(100, 40.0, ok=False), _step(200, 70.0, ok=False), _step(300, 95.0, ok=False)]
    result = CapacityResult(sweep, pinned=True, duration_s=1.0, scheduling="test")
    # No step within the jitter limits: the largest one under 90 % CPU, not the saturated 300.
    assert result.max_ok_calls == 0
    cap = result.capacity
    assert cap is not None and cap.calls == 200
    assert round(cap.capacity) == round(0.8 * 1000 / 3.5)
    saturated = CapacityResult(sweep[2:], pinned=True, duration_s=1.0, scheduling="test")
    assert saturated.capacity is None


def test_capacity_is_not_quoted_from_a_step_its_callers_did_not_feed() -> None:
    # The caller process starved (other work on its core): the bridge took in 77 % of the
    # frames, so its CPU per call-second is low for the wrong reason.
    sweep = [_step(250, 36.0, ok=False), _step(500, 52.0, ok=False, fed=0.77), _step(750, 95.0, ok=False)]
    cap = CapacityResult(sweep, pinned=True, duration_s=1.0, scheduling="test").capacity
    assert cap is not None and cap.calls == 250
