"""Words an STT that lags the audio gives after the bot resumed from their speech's pause.

The stand-ins bench at 200 calls: the caller's "нет, спасибо" 1 s into the bot's turn paused it,
the STT's first partial came 1.8-5.1 s after the onset (after the decision window), the bot
resumed as from a false alarm, and the late "нет" and "нет, спасибо" were dropped as a
backchannel over an uninterrupted bot: the refusal was lost. Virtual time, through the real
Orchestrator (tests.test_orchestrator), and the decider alone (sans-I/O).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from orchestrator.domain.models import SttResult
from orchestrator.interruption import InterruptionDecider, Verdict
from orchestrator.interruption_settings import InterruptionSettings
from testkit.fakes import FakeInbound, FakeRecognition, FakeSTT, Say, SttFailure
from tests.test_orchestrator import CallRun, call, greeting_frames, numbered_greeting

ONSET = 1.0  # into the 6 s greeting
SPOKEN_S = 0.8  # "нет, спасибо": the VAD's run 1.0-1.8; paused to 2.2 (final_wait_ms), engaged to 2.8


class LateSTT(FakeSTT):
    """`FakeSTT` plus `late`: (at, result) delivered as they are (audio timing kept)."""

    def __init__(
        self,
        inbound: FakeInbound,
        failures: Sequence[SttFailure] = (),
        *,
        late: Sequence[tuple[float, SttResult]] = (),
        **kw: Any,
    ) -> None:
        super().__init__(inbound, failures, **kw)
        self.late = list(late)

    def open_stream(self) -> FakeRecognition:
        stream = super().open_stream()
        loop = asyncio.get_running_loop()
        for at, result in self.late:
            loop.call_at(at, stream.emit, result)
        return stream


def partial(
    text: str, end_s: float | None = None, *, final: bool = False, start_s: float | None = None
) -> SttResult:
    """A result; `end_s`, `start_s`: its audio's end and start, s from the stream's start
    (None: no timing)."""
    end_ms = None if end_s is None else round(end_s * 1000)
    start_ms = None if start_s is None else round(start_s * 1000)
    kind = "final" if final else "partial"
    return SttResult(text, final, 0.5, kind, audio_start_ms=start_ms, audio_end_ms=end_ms)


def lagging_call(line: Say, late: Sequence[tuple[float, SttResult]]) -> CallRun:
    """The greeting (6 s, numbered frames) with the caller's `line`, whose only results are its
    final (`line.stt_delay` after it: no partials of its own) and `late`."""
    return call(
        [line],
        hangup_at=9.0,
        cache=numbered_greeting(6.0),
        stt_class=LateSTT,
        stt_options={"late": late},
    )


def said(run: CallRun) -> list[str]:
    return [str(e.data["text"]) for e in run.events if e.kind == "user_said"]


def dropped(run: CallRun) -> list[str]:
    return [str(e.data["text"]) for e in run.events if e.kind == "stt_dropped"]


def refusal(partial_lag: float, final_lag: float) -> Say:
    """ "нет, спасибо" at ONSET, its final `final_lag` after the onset."""
    return Say(ONSET, "нет, спасибо", duration=SPOKEN_S, partials=False, stt_delay=final_lag - SPOKEN_S)


@pytest.mark.parametrize("partial_lag", [2.2, 4.1])
def test_a_refusal_whose_words_come_after_the_window_cuts_the_resumed_bot(partial_lag: float) -> None:
    # The bench's sequence: onset, window closed with the STT silent, the bot resumed; then
    # "нет" (a stop word) over the bot, after the run's partial grace too (2.8): it cuts the bot
    # then, and the final is the caller's turn (before: both dropped, the state kept).
    final_lag = partial_lag + 1.0
    run = lagging_call(refusal(partial_lag, final_lag), [(ONSET + partial_lag, partial("нет"))])
    barge = run.orchestrator.barge_in
    assert (barge.pauses, barge.resumes) == (1, 1)  # paused at the onset, resumed: no words yet
    assert run.event_times("barge_in") == [pytest.approx(ONSET + partial_lag)]
    frames = greeting_frames(run)
    assert [t for t, _ in frames if 2.2 < t < ONSET + partial_lag]  # it did talk meanwhile ...
    assert max(t for t, _ in frames) <= ONSET + partial_lag + 0.02  # ... and stopped on the word
    assert said(run) == ["нет, спасибо"]
    assert dropped(run) == [] and barge.results_dropped == 0
    assert run.orchestrator.session_state.current_state_id == "goodbye"


def test_the_audio_timing_keeps_a_late_result_of_earlier_audio_out_of_it() -> None:
    # Results carry their audio's end (ms from the stream's start, whose origin the stream
    # reports: its first frame, at the call's start). "подождите" whose audio ended at 0.8 s,
    # before the onset (an earlier echo, another word),
    # is not the onset's and stays dropped (without the timing it would cut at 3.5); "нет"
    # whose audio reaches 1.4 s is, and cuts.
    late = [
        (0.6, partial("ага", 0.5, final=True)),
        (3.5, partial("подождите", 0.8)),
        (3.7, partial("нет", 1.4)),
    ]
    run = lagging_call(refusal(2.7, 3.7), late)
    assert run.event_times("barge_in") == [pytest.approx(3.7)]
    assert dropped(run) == ["ага", "подождите"]
    assert said(run) == ["нет, спасибо"]


def test_a_late_backchannel_under_the_same_lag_stays_dropped() -> None:
    # "угу" for 0.5 s at 1.0, its only result 2.5 s later: the bot resumed at the window's end
    # and goes on; the late "угу" is still dropped, the greeting whole and in order.
    uhu = Say(ONSET, "угу", duration=0.5, partials=False, stt_delay=2.0)
    run = lagging_call(uhu, [])
    assert run.event_times("barge_in") == []
    assert [lab for _, lab in greeting_frames(run)] == list(range(1000, 1300))
    assert dropped(run) == ["угу"] and said(run) == []
    assert (run.orchestrator.barge_in.pauses, run.orchestrator.barge_in.resumes) == (1, 1)


def test_with_a_timely_stt_a_cough_resumes_and_later_words_are_not_its() -> None:
    # A cough (0.8 s, no words): the STT answers for it timely (its empty final at 2.0, before
    # the pause ends at 2.2), so nothing is owed: the bot resumes at 2.2 as before, and a
    # content partial at 4.0 (speech the VAD did not report: nothing paused for it) is dropped
    # as over an uninterrupted bot (remembering the cough would have cut the bot there).
    cough = Say(ONSET, "", duration=SPOKEN_S, stt_delay=0.2)
    run = lagging_call(cough, [(4.0, partial("площадь сорок"))])
    assert run.event_times("barge_in") == []
    frames = greeting_frames(run)
    assert [lab for _, lab in frames] == list(range(1000, 1300))
    assert not [t for t, _ in frames if 1.02 < t < 2.2 - 1e-6]
    assert [t for t, _ in frames if 2.2 - 1e-6 <= t <= 2.22 + 1e-6]  # resumed at the wait's end
    assert dropped(run) == ["", "площадь сорок"]  # (the cough's empty final too)


def test_words_owed_when_the_turn_ends_are_heard_after_it() -> None:
    # The greeting (1 s, paused 0.3-1.2: the window) ends at 1.9; the refusal's final comes at
    # 2.0, inside the 1.5 s after the turn in which a backchannel's final is dropped: it is heard.
    line = Say(0.3, "нет, спасибо", duration=0.4, partials=False, stt_delay=1.3)
    run = call([line], hangup_at=6.0, stt_class=LateSTT)
    assert run.event_times("barge_in") == []
    assert said(run) == ["нет, спасибо"]
    assert run.orchestrator.session_state.current_state_id == "goodbye"


# --- the decider alone ----------------------------------------------------------------------


def resumed_unheard(
    settings: InterruptionSettings | None = None, answered: float = 0.0
) -> InterruptionDecider:
    """Confirmed speech 1.0-1.8 and no result: resumed at 2.2, when the STT's service last
    answered at `answered` (polled at the window's end, as `BargeIn` does)."""
    d = InterruptionDecider(settings)
    d.answered(0.0)  # the stream's opening status: the STT is known to work
    assert d.confirmed(1.0) is Verdict.PAUSE
    assert d.speech_end(1.8) is Verdict.KEEP  # paused for its words to 2.2 (final_wait_ms)
    d.answered(answered)
    assert d.tick(2.2) is Verdict.RESUME
    return d


def test_the_decider_judges_owed_words_until_their_final() -> None:
    d = resumed_unheard()
    assert d.pending(3.0)
    assert d.partial("угу", 3.0) is Verdict.KEEP  # a backchannel: the bot goes on
    assert d.partial("нет спасибо", 3.5, final=True) is Verdict.CANCEL
    d = resumed_unheard()
    d.bot_says("Здравствуйте, это клининговая компания")
    assert d.partial("клининговая компания", 2.9, final=True) is Verdict.KEEP  # its echo's final ...
    assert d.pending(3.0)  # ... is no verdict on the caller's speech
    assert d.partial("угу", 3.0, final=True) is Verdict.KEEP  # its final: nothing owed now
    assert not d.pending(3.1)
    assert d.partial("нет спасибо", 3.5) is Verdict.KEEP


def test_the_decider_bounds_owed_words_by_late_words_ms() -> None:
    d = resumed_unheard(InterruptionSettings(late_words_ms=1000))
    assert d.pending(3.2)
    assert not d.pending(3.3)
    assert d.partial("нет спасибо", 3.3) is Verdict.KEEP
    off = resumed_unheard(InterruptionSettings(late_words_ms=0))
    assert not off.pending(2.3)
    assert off.partial("нет спасибо", 3.0) is Verdict.KEEP


def test_the_decider_owes_nothing_once_the_stt_answered_for_the_whole_run() -> None:
    # An answer after the run's end (no timed results): the STT heard it all, gave no words.
    assert not resumed_unheard(answered=1.9).pending(2.3)
    assert resumed_unheard(answered=1.7).pending(2.3)  # mid-run: the rest is still owed
    # With timed results, only their audio counts: an answer (a result about older audio)
    # arriving after the run says nothing of it.
    d = InterruptionDecider()
    d.answered(0.0)
    d.words("", 0.9, audio_end=0.5)
    assert d.confirmed(1.0) is Verdict.PAUSE
    assert d.speech_end(1.8) is Verdict.KEEP
    d.answered(2.0)
    assert d.tick(2.2) is Verdict.RESUME
    assert d.partial("нет", 3.0, audio_end=0.9) is Verdict.KEEP  # audio before the onset
    assert d.partial("нет", 3.1, audio_end=1.3) is Verdict.CANCEL
