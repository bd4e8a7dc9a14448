"""Review of the late-words rule (19335ff): results it judged as a resumed run's words that are
not (were strict xfails; they pass since the recognition's audio has a true origin on the call's
clock, results starting after the run are not its words, and owed words need their audio).

Virtual time through the real Orchestrator, as tests.test_late_words."""

from __future__ import annotations

import pytest

from testkit.fakes import Say
from tests.test_late_words import ONSET, SPOKEN_S, LateSTT, dropped, lagging_call, partial, refusal, said
from tests.test_orchestrator import call

# Each: the STT lags the audio, so a confirmed run resumed at the window's end (2.2) is remembered.
_COUGH = Say(ONSET, "", duration=SPOKEN_S, stt_delay=3.0)  # no words; its empty final at 4.8


def test_a_late_result_of_pre_onset_audio_stays_dropped_without_a_timely_result_before() -> None:
    # tests.test_late_words' pre-onset case without its timely "ага" at 0.6: "подождите" (audio
    # to 0.8 s, before the onset at 1.0) is the call's first timed result. The old estimate of
    # the origin (the earliest-answering result) put its end at its arrival (3.5 >= 1.0) and it
    # cut the bot; the stream's true origin puts it at 0.8.
    run = lagging_call(refusal(2.7, 3.7), [(3.5, partial("подождите", 0.8)), (3.7, partial("нет", 1.4))])
    assert run.event_times("barge_in") == [pytest.approx(3.7)]  # (was [3.5])


def test_content_words_of_later_audio_do_not_cut_the_bot_after_a_cough() -> None:
    # A cough under lag (no result for it before its empty final at 4.8); at 3.5 content words
    # whose audio ends at 3.3 s, 1.5 s after the run ended (speech the VAD did not report: the
    # bot's echo misrecognised, noise): not the cough's words (they start after its end), so
    # dropped, as in the timely-cough test (untimed, they would still count: nothing says not).
    run = lagging_call(_COUGH, [(3.5, partial("площадь сорок", 3.3))])
    assert run.event_times("barge_in") == []  # (was [3.5])
    assert "площадь сорок" in dropped(run)


def test_a_content_final_after_the_turn_is_not_heard_for_a_cough_still_owed() -> None:
    # A cough 0.3-0.7 over the 1 s greeting (resumed at 1.2, its final owed until 3.7); the
    # turn ends at 1.9 with the memory live; a content final at 2.0 (audio after the turn: the
    # greeting's echo misrecognised) is not the cough's words, so dropped (the 1.5 s
    # late-backchannel rule: no decision was waiting at the turn's end). It used to be heard.
    cough = Say(0.3, "", duration=0.4, partials=False, stt_delay=3.0)
    late = [(2.0, partial("площадь сорок", 1.95, final=True))]
    run = call([cough], hangup_at=6.0, stt_class=LateSTT, stt_options={"late": late})
    assert said(run) == []  # (was ["площадь сорок"])
