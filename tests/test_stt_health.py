"""STT and LLM health in the call's time scale, on virtual time: a stalled recognizer is noticed
within `[call] stt_stall_s` of the caller's speech, the caller hears the emergency phrase whole
even while talking, the call goes on when STT recovers or ends ("stt_failure") after
`stt_recovery_s`; the per-provider circuit breakers make the next calls fail fast and close
within a probe interval of the provider answering again."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import pytest

from orchestrator.breaker import BreakerSettings, CircuitBreaker, GuardedLLM
from orchestrator.cache.memory import InMemoryAudioCache
from orchestrator.call_settings import CallSettings
from orchestrator.clock import LoopClock
from orchestrator.dialogue_map.templates import render_template
from orchestrator.domain.errors import CallSetupError, LLMError
from orchestrator.domain.models import LLMStreamChunk, SessionState
from orchestrator.events import END_REASONS
from orchestrator.factory import CallServices, create_orchestrator_instance
from orchestrator.flow_engine import MapFlowEngine
from orchestrator.stt_watchdog import SttWatchdog
from testkit.fakes import FakeInbound, FakeLLM, FakeSTT, FakeTTS, LLMAttempt, Say, make_playout
from testkit.virtual_time import run_virtual
from tests.test_orchestrator import (
    CACHED,
    PRICE_LABEL,
    CallRun,
    keyword_classifier,
    label,
    make_map,
    run_call,
)

EMERGENCY = label("filler:emergency")
FRAME_S = 0.02


def _runs(run: CallRun) -> list[tuple[int, float, int]]:
    """Runs of one label between silences: (label, start time, frames)."""
    out: list[tuple[int, float, int]] = []
    previous = 0
    for t, lab in run.sink.frames:
        if lab and lab == previous:
            out[-1] = (lab, out[-1][1], out[-1][2] + 1)
        elif lab:
            out.append((lab, t, 1))
        previous = lab
    return out


def _emergency_start(run: CallRun) -> float:
    """Clock time of the emergency phrase's first frame (the sink logs one entry per 20 ms tick)."""
    return next(t for t, lab in run.sink.frames if lab == EMERGENCY)


def test_frozen_stt_is_detected_within_the_stall_bound_and_the_call_ends_politely() -> None:
    # The recognizer stops at 1.0 s and never comes back; the caller talks from 2.0 s for 6 s.
    run = run_virtual(
        lambda: run_call(
            [Say(2.0, "это дорого", duration=6.0)],
            stt_options={"stall": (1.0, 1000.0), "buffer_frames": 5000},
            hangup_at=None,
        )
    )
    # Detected after 3 s of unheard speech (2.0 + 3.0), heard whole although the caller talks on.
    assert 5.0 <= _emergency_start(run) <= 5.0 + 2 * FRAME_S
    # No recovery within 8 s of the stall: the phrase again as the last words, and the call ends,
    # said so everywhere. Each phrase whole (0.6 s, 30 frames), although the caller talks on.
    runs = _runs(run)
    assert [(lab, n) for lab, _, n in runs] == [
        (label("static:greeting"), 50),
        (EMERGENCY, 30),
        (EMERGENCY, 30),
    ]
    assert 13.0 <= runs[2][1] <= 13.0 + 2 * FRAME_S
    assert run.outcome.reason == "stt_failure" and run.outcome.hang_up
    final = run.records[-1]
    assert final["event"] == "call_end" and final["reason"] == "stt_failure"
    assert "stt" in str(final["end_detail"])
    failures = [e for e in run.events if e.kind == "provider_failure"]
    assert [e.data["stage"] for e in failures] == ["stt", "stt"]  # the stall, then the give-up
    assert 13.0 <= failures[-1].at <= 13.1


def test_stt_that_recovers_after_the_apology_lets_the_call_go_on() -> None:
    run = run_virtual(
        lambda: run_call(
            [Say(2.0, "это дорого", duration=4.0), Say(12.0, "это дорого")],
            stt_options={"stall": (1.0, 6.0), "buffer_frames": 5000},
            hangup_at=16.0,
        )
    )
    assert run.sink.labels() == [label("static:greeting"), EMERGENCY, label("static:faq_expensive")]
    assert run.outcome.reason == "caller_hangup"
    assert run.records[-1]["reason"] == "caller_hangup"


def test_healthy_stt_with_long_speech_never_trips_the_watchdog() -> None:
    run = run_virtual(lambda: run_call([Say(2.0, "это очень очень дорого", duration=8.0)], hangup_at=14.0))
    assert EMERGENCY not in run.sink.labels()
    assert run.outcome.reason == "caller_hangup"


def _services(breaker: CircuitBreaker, inbound: FakeInbound, **kw: Any) -> CallServices:
    dmap = make_map()
    return CallServices(
        dialogue_map=dmap,
        flow_engine=MapFlowEngine(dmap),
        intent_classifier=keyword_classifier(),
        audio_cache=InMemoryAudioCache(CACHED),
        clock=LoopClock(),
        render=render_template,
        stt_factory=lambda cid: FakeSTT(inbound, **kw),
        tts_factory=lambda cid: FakeTTS({"4500": PRICE_LABEL}),
        llm_factory=lambda cid: FakeLLM([]),
        stt_breaker=breaker,
        call=CallSettings(),
    )


def _call_while_open(probe: Any) -> tuple[Any, list[Any], list[dict[str, Any]], CircuitBreaker]:
    """One call started while another call's stall holds the STT circuit open."""

    async def main() -> tuple[Any, list[Any], list[dict[str, Any]], CircuitBreaker]:
        breaker = CircuitBreaker("stt", BreakerSettings(), clock=LoopClock(), probe=probe)
        breaker.failure("a call before this one stalled")
        pacer, playout, sink = make_playout()
        inbound = FakeInbound()
        pacer.add(inbound)
        pacer.start()
        records: list[dict[str, Any]] = []
        services = _services(breaker, inbound)
        services.metrics_sink = records.append
        listening = asyncio.Event()

        def observe(event: Any) -> None:
            if event.kind == "listening":
                listening.set()

        orch = await create_orchestrator_instance("call-2", services, observer=observe)
        run = asyncio.create_task(orch.run(inbound, playout))
        if probe is not _never_answers:  # STT healthy: the call is greeted, then the caller hangs up
            await asyncio.wait_for(listening.wait(), 60)
            inbound.hang_up()
        outcome = await asyncio.wait_for(run, 60)
        pacer.stop()
        playout.close()
        await breaker.aclose()
        return outcome, sink.frames, records, breaker

    return run_virtual(main)


def test_a_call_that_starts_while_the_stt_circuit_stays_open_hears_the_emergency_phrase_after_one_probe() -> (
    None
):
    outcome, frames, records, breaker = _call_while_open(_never_answers)
    assert outcome.reason == "stt_failure" and records[-1]["reason"] == "stt_failure"
    assert [lab for _, lab in frames if lab][:1] == [EMERGENCY]  # no greeting: nobody could hear
    assert {lab for _, lab in frames if lab} == {EMERGENCY}
    # It waited one probe (probe_every_s + probe_timeout_s = 1.25 s) for the circuit to close.
    bound = BreakerSettings().probe_every_s + BreakerSettings().probe_timeout_s
    assert bound <= next(t for t, lab in frames if lab == EMERGENCY) <= bound + 3 * FRAME_S
    assert breaker.refused == 1


def test_a_call_that_starts_while_the_stt_circuit_is_open_is_greeted_once_a_healthy_stt_closes_it() -> None:
    async def answers() -> None:
        return None

    outcome, frames, _records, breaker = _call_while_open(answers)
    assert outcome.reason == "caller_hangup"
    assert next(lab for _, lab in frames if lab) == label("static:greeting")
    first = next(t for t, lab in frames if lab)
    assert first <= BreakerSettings().probe_every_s + 3 * FRAME_S  # closed by the first probe
    assert not breaker.is_open and breaker.refused == 0


async def _never_answers() -> None:
    await asyncio.sleep(3600)


def test_the_breaker_closes_within_a_probe_interval_of_the_provider_answering() -> None:
    async def main() -> None:
        up_at = 7.3
        loop = asyncio.get_running_loop()

        async def probe() -> None:
            if loop.time() < up_at:
                raise ConnectionRefusedError

        breaker = CircuitBreaker("stt", BreakerSettings(probe_every_s=0.5), clock=LoopClock(), probe=probe)
        breaker.failure("stalled")
        assert breaker.is_open and breaker.openings == 1
        breaker.failure("again")  # already open: nothing new
        assert breaker.openings == 1
        await asyncio.sleep(up_at - 0.01 - loop.time())
        assert breaker.is_open  # down until up_at: every probe failed
        await asyncio.sleep(up_at + 0.5 - loop.time())
        assert not breaker.is_open  # closed within one probe interval of the provider answering
        await breaker.aclose()

    run_virtual(main)


def test_a_frozen_probe_is_bounded_and_the_threshold_counts_failures_in_a_row() -> None:
    async def main() -> None:
        breaker = CircuitBreaker(
            "llm",
            BreakerSettings(failure_threshold=2, probe_every_s=0.5, probe_timeout_s=1.0),
            clock=LoopClock(),
            probe=_never_answers,
        )
        breaker.failure("one")
        breaker.success()
        breaker.failure("two")
        assert not breaker.is_open  # not in a row
        breaker.failure("three")
        assert breaker.is_open
        await asyncio.sleep(10)
        assert breaker.is_open  # frozen probes time out, the circuit stays open
        breaker.success()  # a call got through
        assert not breaker.is_open
        await breaker.aclose()

    run_virtual(main)


def test_an_open_llm_circuit_fails_the_answer_without_a_request() -> None:
    async def main() -> None:
        breaker = CircuitBreaker("llm", BreakerSettings(), clock=LoopClock(), probe=_never_answers)
        inner = FakeLLM([LLMAttempt(error_after=0.5), LLMAttempt([(0.1, LLMStreamChunk("Да."))])])
        llm = GuardedLLM(inner, breaker)
        session = SessionState(call_id="c", current_state_id="start")
        try:
            async for _ in llm.process_user_turn("hi", session):
                pass
        except LLMError:
            pass
        assert breaker.is_open
        started = asyncio.get_running_loop().time()
        try:
            async for _ in llm.process_user_turn("hi again", session):
                pass
            raise AssertionError("an open circuit must fail the answer")
        except LLMError as exc:
            assert "circuit open" in str(exc)
        assert asyncio.get_running_loop().time() == started  # at once: no request, no timeout
        assert len(inner.calls) == 1
        assert breaker.refused == 1
        await breaker.aclose()

    run_virtual(main)


class _RejectingLLM:
    """An LLM server that answers every request with a non-retryable error (HTTP 401, 400)."""

    model_name = "rejecting"

    def process_user_turn(self, text: str, session: SessionState, *, attempt: int = 0) -> Any:
        async def answer() -> Any:
            raise LLMError("HTTP 401: invalid api key", provider="openai-compat", retryable=False)
            yield  # an async generator

        return answer()

    async def shutdown(self) -> None:
        return None


def test_a_non_retryable_llm_error_does_not_open_the_circuit() -> None:
    async def main() -> None:
        breaker = CircuitBreaker("llm", BreakerSettings(), clock=LoopClock(), probe=_never_answers)
        llm = GuardedLLM(_RejectingLLM(), breaker)  # type: ignore[arg-type]
        session = SessionState(call_id="c", current_state_id="start")
        for _ in range(3):
            with pytest.raises(LLMError, match="401"):
                async for _ in llm.process_user_turn("hi", session):
                    pass
        assert not breaker.is_open and breaker.openings == 0
        await breaker.aclose()

    run_virtual(main)


def test_an_llm_failure_opens_the_circuit_and_the_next_turn_is_answered_at_once() -> None:
    breaker: list[CircuitBreaker] = []

    async def main() -> CallRun:
        cb = CircuitBreaker("llm", BreakerSettings(), clock=LoopClock(), probe=_never_answers)
        breaker.append(cb)
        llm = FakeLLM([LLMAttempt(error_after=4.0)])
        try:
            return await run_call(
                [Say(2.0, "расскажи анекдот"), Say(12.0, "расскажи сказку")],
                llm=GuardedLLM(llm, cb),  # type: ignore[arg-type]
                hangup_at=18.0,
            )
        finally:
            await cb.aclose()

    run = run_virtual(main)
    fails = [e for e in run.events if e.kind == "provider_failure"]
    assert len(fails) == 2 and "circuit open" in str(fails[1].data["error"])
    said = [e.at for e in run.events if e.kind == "user_said"]
    # The second answer: the emergency phrase within a frame or two of the turn, no filler wait.
    assert fails[1].at - said[1] < 0.1


def test_every_end_reason_is_one_of_the_taxonomy() -> None:
    assert {"end_call", "caller_hangup", "no_input", "stt_failure", "error", "shutdown"} <= set(END_REASONS)
    assert {"protocol_error", "setup_failed", "transferred"} <= set(END_REASONS)


class _BuggyClassifier:
    async def classify_intent(self, text: str, *, previous_leader: str | None = None) -> Any:
        raise RuntimeError("a bug")

    async def find_faq_answer(self, text: str) -> Any:
        return None


def test_the_call_end_record_and_the_outcome_agree_for_each_ending() -> None:
    cases: list[tuple[str, dict[str, Any]]] = [
        ("end_call", {"script": [Say(2.0, "нет")], "hangup_at": None}),
        ("caller_hangup", {"script": [], "hangup_at": 3.0}),
        ("no_input", {"script": [], "hangup_at": None, "dmap": make_map(no_input_timeout_s=1.0)}),
        ("error", {"script": [Say(2.0, "да")], "hangup_at": None, "classifier": _BuggyClassifier()}),
    ]
    for reason, kw in cases:
        script = kw.pop("script")
        run = run_virtual(lambda script=script, kw=kw: run_call(script, **kw))
        assert run.outcome.reason == reason
        assert run.records[-1]["event"] == "call_end" and run.records[-1]["reason"] == reason
        if reason == "error":
            assert "RuntimeError: a bug" in str(run.records[-1]["end_detail"])


def test_a_call_that_cannot_be_set_up_is_recorded_as_setup_failed() -> None:
    async def main() -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        services = _services(CircuitBreaker("stt", BreakerSettings(), clock=LoopClock()), FakeInbound())
        services.tts_factory = lambda cid: FakeTTS({}, fail_connect=True)
        services.metrics_sink = records.append
        with pytest.raises(CallSetupError):
            await create_orchestrator_instance("call-x", services)
        return records

    records = run_virtual(main)
    assert records[-1]["reason"] == "setup_failed"  # what the service logs and counts too


def test_the_probe_does_not_run_in_the_context_of_the_call_that_opened_the_circuit() -> None:
    trace: contextvars.ContextVar[str] = contextvars.ContextVar("trace", default="")
    seen: list[str] = []

    async def probe() -> None:
        seen.append(trace.get())

    async def main() -> None:
        breaker = CircuitBreaker("stt", BreakerSettings(), clock=LoopClock(), probe=probe)

        async def call() -> None:
            trace.set("call-1")
            breaker.failure("call-1 stalled")

        await asyncio.create_task(call())
        await asyncio.wait_for(breaker.wait_state("closed"), 5)
        await breaker.aclose()

    run_virtual(main)
    assert seen == [""]


def test_a_failing_stt_watchdog_ends_the_call_as_an_error_and_is_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: object) -> None:
        await asyncio.sleep(1.0)
        raise RuntimeError("watchdog bug")

    monkeypatch.setattr(SttWatchdog, "run", broken)
    with caplog.at_level(logging.ERROR, logger="orchestrator.orchestrator"):
        run = run_virtual(lambda: run_call([], hangup_at=20.0))
    assert run.outcome.reason == "error"
    assert "stt_watchdog failed" in caplog.text and "watchdog bug" in caplog.text
