"""The pause/cancel decision (orchestrator/interruption.py) on virtual time: 20 ms frames as numbers."""

from __future__ import annotations

import pydantic
import pytest

from orchestrator.interruption import (
    InterruptionDecider,
    InterruptionSettings,
    PartialKind,
    Verdict,
    partial_kind,
)

F = 0.02  # one frame, s
WORDS = frozenset(InterruptionSettings().backchannel_words.split())


def frame(n: int) -> float:
    return n * F


@pytest.mark.parametrize(
    "text, kind",
    [
        ("", PartialKind.EMPTY),
        (" ,.", PartialKind.EMPTY),
        ("угу", PartialKind.BACKCHANNEL),
        ("Да-да", PartialKind.BACKCHANNEL),
        ("ну понятно", PartialKind.BACKCHANNEL),
        ("мхм, ага", PartialKind.BACKCHANNEL),
        ("а сколько", PartialKind.CONTENT),
        ("подождите", PartialKind.CONTENT),
        ("да но", PartialKind.CONTENT),
        ("нет-нет", PartialKind.CONTENT),
    ],
)
def test_partial_kinds(text: str, kind: PartialKind) -> None:
    assert partial_kind(text, WORDS) is kind


def test_content_words_cancel_before_the_vad_confirms() -> None:
    d = InterruptionDecider()
    assert d.onset(frame(10)) is Verdict.PAUSE
    assert d.partial("подождите", frame(20)) is Verdict.CANCEL
    # Decided: nothing more from this overlap.
    assert d.confirmed(frame(25)) is Verdict.KEEP
    assert d.tick(frame(100)) is Verdict.KEEP
    assert d.speech_end(frame(60)) is Verdict.KEEP


def test_backchannel_words_resume_and_later_content_still_cancels() -> None:
    d = InterruptionDecider()
    assert d.onset(frame(10)) is Verdict.PAUSE
    assert d.confirmed(frame(22)) is Verdict.PAUSE  # already paused: the owner keeps it so
    assert d.partial("понятно", frame(40)) is Verdict.RESUME
    assert d.deadline is None  # no window left running
    assert d.onset(frame(45)) is Verdict.KEEP  # the same overlap, judged: no new pause
    assert d.partial("понятно а сколько", frame(60)) is Verdict.CANCEL


def test_no_words_by_the_window_cancels_confirmed_speech_or_resumes() -> None:
    settings = InterruptionSettings(window_ms=600)
    d = InterruptionDecider(settings)
    d.onset(frame(10))
    assert d.deadline == pytest.approx(frame(10) + 0.6)
    assert d.confirmed(frame(25)) is Verdict.PAUSE
    assert d.tick(frame(39)) is Verdict.KEEP  # not yet
    assert d.tick(frame(40)) is Verdict.CANCEL  # confirmed speech and an STT with no words

    quiet = InterruptionDecider(InterruptionSettings(window_ms=600, cancel_without_words=False))
    quiet.onset(frame(10))
    quiet.confirmed(frame(25))
    assert quiet.tick(frame(40)) is Verdict.RESUME  # the STT heard no words: noise
    # That overlap is judged: its further runs do not pause the bot again, only words cut it.
    assert quiet.onset(frame(50)) is Verdict.KEEP
    assert quiet.partial("стоп", frame(55)) is Verdict.CANCEL


def test_confirmed_speech_ending_inside_the_window_with_no_words_is_judged_then() -> None:
    d = InterruptionDecider(InterruptionSettings(window_ms=900))
    d.onset(frame(10))
    d.confirmed(frame(25))
    assert d.speech_end(frame(40)) is Verdict.KEEP  # its words may still come: paused
    assert d.partial("ага", frame(50)) is Verdict.RESUME  # they came: a backchannel
    d.onset(frame(100))
    d.confirmed(frame(115))
    assert d.speech_end(frame(130)) is Verdict.KEEP
    assert d.tick(frame(145)) is Verdict.CANCEL  # none by the window's end: a caller, cut
    quiet = InterruptionDecider(InterruptionSettings(window_ms=900, cancel_without_words=False))
    quiet.onset(frame(10))
    quiet.confirmed(frame(25))
    assert quiet.speech_end(frame(40)) is Verdict.RESUME


def test_an_unconfirmed_run_resumes_at_the_window_even_when_no_words_cancel() -> None:
    d = InterruptionDecider(InterruptionSettings(window_ms=400))
    d.onset(frame(10))
    assert d.tick(frame(31)) is Verdict.RESUME  # never confirmed: a cough, a breath


def test_a_rejected_run_resumes_and_its_late_words_still_count_for_the_grace() -> None:
    d = InterruptionDecider(InterruptionSettings(partial_grace_ms=600))
    d.onset(frame(10))
    assert d.rejected(frame(20)) is Verdict.RESUME
    assert d.deadline is None
    assert d.partial("стоп", frame(45)) is Verdict.CANCEL  # 0.5 s after: within the grace

    late = InterruptionDecider(InterruptionSettings(partial_grace_ms=600))
    late.onset(frame(10))
    late.rejected(frame(20))
    assert late.partial("стоп", frame(51)) is Verdict.KEEP  # 0.62 s after: not this overlap's


def test_a_new_run_inside_the_grace_gets_its_own_window() -> None:
    d = InterruptionDecider(InterruptionSettings(window_ms=900, partial_grace_ms=600))
    d.onset(frame(10))
    d.rejected(frame(20))  # "нет," then a pause
    assert d.onset(frame(30)) is Verdict.PAUSE  # "спасибо, не интересно"
    assert d.deadline == pytest.approx(frame(30) + 0.9)
    d.confirmed(frame(45))
    assert d.tick(frame(76)) is Verdict.CANCEL


def test_partials_while_nobody_spoke_over_the_bot_are_ignored() -> None:
    # E.g. the STT hearing the bot's own echo: no onset, no overlap, no cut.
    d = InterruptionDecider()
    assert d.partial("стоимость уборки", frame(10)) is Verdict.KEEP


def test_vad_alone_cancels_on_confirmation() -> None:
    d = InterruptionDecider(InterruptionSettings(use_partials=False))
    assert d.onset(frame(10)) is Verdict.PAUSE
    assert d.deadline is None  # no window: the VAD's own max_decision_ms bounds it
    assert d.partial("угу", frame(15)) is Verdict.KEEP
    assert d.confirmed(frame(20)) is Verdict.CANCEL


def test_confirmation_without_an_onset_pauses_and_opens_the_window() -> None:
    d = InterruptionDecider(InterruptionSettings(window_ms=900))
    assert d.confirmed(frame(10)) is Verdict.PAUSE
    assert d.deadline == pytest.approx(frame(10) + 0.9)


def test_reset_forgets_the_overlap() -> None:
    d = InterruptionDecider()
    d.onset(frame(10))
    d.partial("подождите", frame(20))
    d.reset()
    assert d.deadline is None and not d.engaged(frame(21))
    assert d.onset(frame(30)) is Verdict.PAUSE


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(pydantic.ValidationError, match="window_ms"):
        InterruptionSettings(window_ms=-1)
