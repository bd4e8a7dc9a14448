"""The recognition's audio on the call's clock, and which late results are a resumed run's words.

`SttResult.audio_*_ms` count the audio fed to the recognition; the stream reports the call-clock
time of its 0 ms (`AudioOrigin`: its session's first frame; a new session moves it), and a stream
that does not is taken from when the Orchestrator attached it. Virtual time through the real
Orchestrator, as tests.test_late_words (the stream's first frame is at the call's start).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from orchestrator.contracts import SttEvent
from orchestrator.interruption import InterruptionDecider, Verdict
from orchestrator.recognition_capabilities import AudioOrigin
from testkit.fakes import FakeInbound, FakeRecognition, Say, SttFailure
from tests.test_late_words import (
    ONSET,
    SPOKEN_S,
    LateSTT,
    dropped,
    lagging_call,
    partial,
    refusal,
    said,
)
from tests.test_orchestrator import call, numbered_greeting

RUN_END = ONSET + SPOKEN_S  # the VAD's speech end of the lines below: 1.8
_COUGH = Say(ONSET, "", duration=SPOKEN_S, stt_delay=3.0)  # no words; its empty final at 4.8


class RestartingSTT(LateSTT):
    """`LateSTT` whose stream starts a new session (result times from 0 again) at `restart_at`."""

    def __init__(self, inbound: FakeInbound, failures: Sequence[SttFailure] = (), **kw: Any) -> None:
        self.restart_at: float = kw.pop("restart_at")
        super().__init__(inbound, failures, **kw)

    def open_stream(self) -> FakeRecognition:
        stream = super().open_stream()
        asyncio.get_running_loop().call_at(self.restart_at, stream.restart)
        return stream


class _Unreported:
    """A `RecognitionStream` that does not report its audio's origin (as the Yandex adapter
    before it does): the Orchestrator falls back to when it attached it."""

    def __init__(self, inner: FakeRecognition) -> None:
        self._inner = inner

    def push_audio(self, frame: bytes) -> None:
        self._inner.push_audio(frame)

    @property
    def frames_dropped(self) -> int:
        return self._inner.frames_dropped

    @property
    def answered_at(self) -> float | None:
        return self._inner.answered_at

    def end_input(self) -> None:
        self._inner.end_input()

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> AsyncIterator[SttEvent]:
        return self._inner.__aiter__()


class UnreportedSTT(LateSTT):
    def open_stream(self) -> Any:  # (the Orchestrator takes any RecognitionStream)
        return _Unreported(super().open_stream())


def test_the_fake_stream_reports_its_first_frame_as_the_origin() -> None:
    run = lagging_call(_COUGH, [])
    stream = run.stt.streams[0]
    assert isinstance(stream, AudioOrigin) and not isinstance(_Unreported(stream), AudioOrigin)
    assert stream.audio_origin == pytest.approx(-0.02, abs=0.021)  # first frame (0-20 ms) less 20 ms


def test_a_stream_restart_mid_call_resets_the_origin() -> None:
    # A new session at 0.6 (before the onset at 1.0): its result times count from there. "нет"
    # at 3.7 whose audio ends 0.7 s into the new session (1.3 on the call's clock, in the run)
    # is the refusal's and cuts the bot. With the origin kept at the call's start its audio would
    # end at 0.7, before the onset, and be dropped (the mutant: `restart()` a no-op, or the
    # Orchestrator ignoring the stream's report for its attach time: no barge-in).
    late = [(3.7, partial("нет", 0.7, start_s=0.3))]
    run = call(
        [refusal(2.7, 4.0)],
        hangup_at=9.0,
        cache=numbered_greeting(6.0),
        stt_class=RestartingSTT,
        stt_options={"late": late, "restart_at": 0.6},
    )
    stream = run.stt.streams[0]
    assert stream.audio_origin == pytest.approx(0.6 - 0.02, abs=0.021)
    assert run.event_times("barge_in") == [pytest.approx(3.7)]
    assert said(run) == ["нет, спасибо"]


def test_a_stream_that_does_not_report_its_origin_is_timed_from_its_attachment() -> None:
    # The review's pre-onset case (tests.test_late_words_review) through a stream without
    # `audio_origin`: attached at the call's start, so "подождите" (audio to 0.8 s) stays before
    # the onset and dropped, "нет" (to 1.4 s) cuts at 3.7. Mutant: no origin without a report
    # (results untimed): "подождите" cuts at 3.5.
    late = [(3.5, partial("подождите", 0.8)), (3.7, partial("нет", 1.4))]
    run = call(
        [refusal(2.7, 3.7)],
        hangup_at=9.0,
        cache=numbered_greeting(6.0),
        stt_class=UnreportedSTT,
        stt_options={"late": late},
    )
    assert run.event_times("barge_in") == [pytest.approx(3.7)]
    assert "подождите" in dropped(run)


@pytest.mark.parametrize(
    ("start_s", "cuts"),
    [
        (RUN_END + 0.15, True),  # after the run's end, within the tolerance (0.3 s): its words
        (RUN_END + 0.45, False),  # wholly after the run and the tolerance: not its words
    ],
)
def test_a_result_starting_after_the_remembered_run_is_not_its_words(start_s: float, cuts: bool) -> None:
    # A cough under lag (1.0-1.8, resumed at 2.2, remembered); at 3.5 content words whose audio
    # ends at 2.6 (after the run's end plus the tolerance either way). Mutants: the bound
    # dropped (the later one cuts); judged by the end, not the start, or the tolerance 0 (the
    # earlier one does not cut).
    run = lagging_call(_COUGH, [(3.5, partial("площадь сорок", 2.6, start_s=start_s))])
    assert run.event_times("barge_in") == ([pytest.approx(3.5)] if cuts else [])
    assert ("площадь сорок" in dropped(run)) is not cuts


@pytest.mark.parametrize(
    ("span", "heard"),
    [
        ((0.35, 0.65), True),  # the cough's own audio: its owed words
        ((1.5, 1.95), False),  # audio after the run (the greeting's end, misrecognised)
    ],
)
def test_owed_words_hear_a_content_final_after_the_turn_only_from_the_runs_audio(
    span: tuple[float, float], heard: bool
) -> None:
    # A no-words run 0.3-0.7 over the 1 s greeting (resumed at 1.2, its final owed until 3.7);
    # the turn ends at 1.9 with only that memory live (no window open); a content final at 2.0.
    # Mutants: owed words counted whatever the audio (the old `pending(now)` at the turn's end:
    # the later one heard); owed words not counted after the turn (the earlier one dropped).
    cough = Say(0.3, "", duration=0.4, partials=False, stt_delay=3.0)
    late = [(2.0, partial("площадь сорок", span[1], final=True, start_s=span[0]))]
    run = call([cough], hangup_at=6.0, stt_class=LateSTT, stt_options={"late": late})
    assert said(run) == (["площадь сорок"] if heard else [])
    assert ("площадь сорок" in dropped(run)) is not heard


@pytest.mark.parametrize(("span", "heard"), [((1.9, 2.3), True), ((2.75, 2.95), False)])
def test_a_run_going_on_past_the_turn_bounds_its_owed_words_at_its_end(
    span: tuple[float, float], heard: bool
) -> None:
    # An onset at 0.3 the VAD neither confirms nor rejects until 2.3 (a long noise, or speech it
    # doubts): the window closes at 1.2 with nothing heard, the greeting resumes while the run
    # goes on and ends at 1.9; the run ends at 2.3 (rejected), after the turn. A content final
    # at 3.0 is the run's words if its audio starts by 2.3 + 0.3 s. Mutant: the owed run's end
    # left open after the turn (inf): the later one is heard too.
    hum = Say(0.3, "", duration=2.0, vad=False, onset=True, partials=False, stt_delay=3.0)
    late = [(3.0, partial("площадь сорок", span[1], final=True, start_s=span[0]))]
    run = call([hum], hangup_at=6.0, stt_class=LateSTT, stt_options={"late": late})
    assert said(run) == (["площадь сорок"] if heard else [])


# --- the decider alone ----------------------------------------------------------------------


def test_the_decider_bounds_a_run_resumed_while_it_went_on_by_its_later_end() -> None:
    # An onset at 1.0 whose window closes at 1.9 unconfirmed and unheard (the STT answered only
    # at 0.0): resumed while the run goes on, so its end is open until the VAD gives up on it
    # at 4.0; results starting up to then (plus the tolerance) are its words, later ones not.
    # Mutants: the bound taken at the resume (1.9): the result starting at 3.6 does not cut;
    # the bound left open after the run's end: the one starting at 4.5 cuts.
    d = InterruptionDecider()
    d.answered(0.0)
    assert d.onset(1.0) is Verdict.PAUSE
    assert d.tick(1.9) is Verdict.RESUME
    owed = d.owed(2.0)
    assert owed is not None and (owed.onset, owed.end) == (1.0, float("inf"))
    d.rejected(4.0)
    owed = d.owed(4.7)
    assert owed is not None and owed.end == 4.0
    assert d.partial("площадь сорок", 4.8, audio_start=4.5, audio_end=4.7) is Verdict.KEEP
    assert d.partial("нет спасибо", 4.9, audio_start=3.6, audio_end=3.9) is Verdict.CANCEL
