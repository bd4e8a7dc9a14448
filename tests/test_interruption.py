"""The pause/cancel decision (orchestrator/interruption.py) on virtual time: 20 ms frames as numbers."""

from __future__ import annotations

import pydantic
import pytest

from orchestrator.interruption import InterruptionDecider, Verdict
from orchestrator.interruption_settings import InterruptionSettings
from orchestrator.overlap_words import PartialKind, partial_kind

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
        ("уборки квартиры", PartialKind.ECHO),
        ("квартиры уборки", PartialKind.CONTENT),
        ("уборк", PartialKind.CONTENT),  # whole words only
    ],
)
def test_partial_kinds(text: str, kind: PartialKind) -> None:
    assert partial_kind(text, WORDS, "стоимость уборки квартиры") is kind


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
    settings = InterruptionSettings(window_ms=600, sustained_start_ms=600)
    d = InterruptionDecider(settings)
    d.onset(frame(10))
    assert d.deadline == pytest.approx(frame(10) + 0.6)
    assert d.confirmed(frame(25)) is Verdict.PAUSE
    assert d.tick(frame(39)) is Verdict.KEEP  # not yet
    assert d.tick(frame(40)) is Verdict.CANCEL  # confirmed speech and an STT with no words

    quiet = InterruptionDecider(
        InterruptionSettings(window_ms=600, cancel_without_words=False, final_wait_ms=0)
    )
    quiet.onset(frame(10))
    quiet.confirmed(frame(25))
    assert quiet.speech_end(frame(35)) is Verdict.KEEP
    assert quiet.tick(frame(40)) is Verdict.RESUME  # the STT heard no words: noise
    # That overlap is judged: its further runs do not pause the bot again, only words cut it.
    assert quiet.onset(frame(50)) is Verdict.KEEP
    assert quiet.partial("стоп", frame(55)) is Verdict.CANCEL


def test_confirmed_speech_ending_inside_the_window_with_no_words_is_judged_then() -> None:
    # The STT not yet known to work (the call's start): the first words may still come.
    d = InterruptionDecider(InterruptionSettings(window_ms=900))
    d.onset(frame(10))
    d.confirmed(frame(25))
    assert d.speech_end(frame(40)) is Verdict.KEEP  # its words may still come: paused
    assert d.partial("ага", frame(50)) is Verdict.RESUME  # they came: a backchannel
    quiet = InterruptionDecider(InterruptionSettings(window_ms=900, final_wait_ms=0))
    quiet.onset(frame(10))
    quiet.confirmed(frame(25))
    assert quiet.speech_end(frame(40)) is Verdict.KEEP
    assert quiet.tick(frame(54)) is Verdict.KEEP
    assert quiet.tick(frame(55)) is Verdict.RESUME  # none by the window's end; 0.3 s of speech


def test_once_the_stt_gave_words_a_window_with_no_words_resumes_even_sustained_speech() -> None:
    # A cough, line noise: the STT works (it gave words 20 s ago) and heard nothing in it.
    d = InterruptionDecider(InterruptionSettings(window_ms=900, sustained_ms=600, final_wait_ms=0))
    d.words("площадь сорок пять", 0.0)
    assert d.stt_known(20.0)
    t0 = 20.0
    assert d.onset(t0) is Verdict.PAUSE
    assert d.confirmed(t0 + 0.24) is Verdict.PAUSE
    assert d.deadline == pytest.approx(t0 + 0.9)  # no sustained-speech deadline
    assert d.tick(t0 + 0.7) is Verdict.KEEP  # 0.7 s of voiced noise: no cancel
    assert d.tick(t0 + 0.9) is Verdict.KEEP  # the run goes on: its words may still come ...
    assert d.deadline == pytest.approx(t0 + 2.0)  # ... until max_pause_ms after the onset
    assert d.speech_end(t0 + 1.3) is Verdict.RESUME  # it ended with none
    assert d.onset(t0 + 1.4) is Verdict.KEEP  # judged: its further runs do not pause
    assert d.partial("подождите", t0 + 1.6) is Verdict.CANCEL  # words still cut it
    # Sound that never ends, the STT giving only empty results of it: paused for max_pause_ms at
    # most, then the bot stops talking over it (nothing shows the STT hears what the VAD hears).
    n = InterruptionDecider(InterruptionSettings(window_ms=900, max_pause_ms=2000))
    n.words("да", 0.0)
    n.onset(t0)
    n.confirmed(t0 + 0.24)
    assert n.partial("", t0 + 0.5) is Verdict.KEEP
    assert n.tick(t0 + 0.9) is Verdict.KEEP
    assert n.tick(t0 + 1.98) is Verdict.KEEP
    assert n.tick(t0 + 2.0) is Verdict.CANCEL


def test_speech_lasting_the_whole_pause_with_no_stt_result_since_its_onset_cancels() -> None:
    # The STT worked (words before the overlap) but says nothing of 2 s of confirmed speech: it is
    # behind the caller (on a real line: the recogniser took the echo for an utterance's start,
    # then its partials stopped while the caller spoke), so the bot must not talk over them.
    d = InterruptionDecider(InterruptionSettings(window_ms=900, max_pause_ms=2000))
    t0 = 5.0
    assert d.partial("у нас", t0 - 1.0) is Verdict.KEEP  # before the onset: not this overlap's
    assert d.onset(t0) is Verdict.PAUSE
    assert d.confirmed(t0 + 0.24) is Verdict.PAUSE
    assert d.tick(t0 + 0.9) is Verdict.KEEP  # held for its words
    assert d.tick(t0 + 2.0) is Verdict.CANCEL
    # The same speech ending before max_pause_ms resumes at the window's end (a long cough).
    e = InterruptionDecider(InterruptionSettings(window_ms=900, max_pause_ms=2000, final_wait_ms=0))
    e.words("да", 0.0)
    e.onset(t0)
    e.confirmed(t0 + 0.24)
    assert e.tick(t0 + 0.9) is Verdict.KEEP
    assert e.speech_end(t0 + 1.5) is Verdict.RESUME
    # Runs that stop and start (intermittent noise) are not one unheard stretch of speech.
    f = InterruptionDecider(InterruptionSettings(window_ms=900, max_pause_ms=2000, final_wait_ms=400))
    f.words("да", 0.0)
    f.onset(t0)
    f.confirmed(t0 + 0.24)
    assert f.speech_end(t0 + 0.6) is Verdict.KEEP  # waiting for its words
    f.onset(t0 + 0.8)
    f.confirmed(t0 + 0.9)
    assert f.tick(t0 + 1.0) is Verdict.KEEP  # held: the new run goes on
    assert f.tick(t0 + 2.0) is Verdict.RESUME


def test_the_bots_echo_recognised_during_the_pause_is_no_sign_the_stt_hears_the_caller() -> None:
    # The STT turns the echo into the bot's words and says nothing of the caller: 2 s of speech
    # with only echo partials still cancels at max_pause_ms.
    d = InterruptionDecider(InterruptionSettings(window_ms=900, max_pause_ms=2000))
    d.bot_says("Добрый день! Чем могу помочь?")
    d.words("да", 0.0)
    assert d.onset(1.0) is Verdict.PAUSE
    d.confirmed(1.2)
    assert d.partial("добрый день", 1.4) is Verdict.KEEP  # echo
    assert d.partial("", 1.6) is Verdict.KEEP  # nothing
    assert d.tick(1.9) is Verdict.KEEP
    assert d.tick(3.0) is Verdict.CANCEL


def test_stop_words_are_the_callers_even_where_the_bot_said_them() -> None:
    d = InterruptionDecider()
    d.bot_says("Если передумаете, скажите стоп. Нет проблем.")
    d.words("да", 0.0)
    d.onset(1.0)
    d.confirmed(1.2)
    assert d.partial("передумаете", 1.3) is Verdict.KEEP  # the bot's word: its echo
    assert d.partial("стоп", 1.4) is Verdict.CANCEL  # a stop word: the caller's
    e = InterruptionDecider()
    e.bot_says("Нет проблем.")
    e.onset(1.0)
    assert e.partial("нет", 1.1) is Verdict.CANCEL


def test_with_the_stt_known_confirmed_speech_with_no_words_resumes_at_the_windows_end() -> None:
    d = InterruptionDecider(InterruptionSettings(window_ms=900, final_wait_ms=0))
    d.words("да", 0.0)
    d.onset(frame(10))
    d.confirmed(frame(25))
    assert d.speech_end(frame(40)) is Verdict.KEEP  # its words may still come (the STT lags)
    assert d.tick(frame(55)) is Verdict.RESUME  # none came: nothing recognisable
    assert d.onset(frame(57)) is Verdict.KEEP  # the same overlap: not paused again
    assert d.partial("стоп", frame(60)) is Verdict.CANCEL  # late words of it still count


def test_speech_that_ended_with_no_words_keeps_the_bot_paused_for_its_final() -> None:
    # The STT gives no partials, only a final 0.3-0.8 s after the speech: "нет, спасибо" ended
    # (the VAD's speech end, 0.4 s after its last voiced frame) 80 ms before the window's end;
    # the bot stays paused final_wait_ms more, so the final cuts it instead of a resume first.
    d = InterruptionDecider(InterruptionSettings(window_ms=900, final_wait_ms=400, max_pause_ms=2000))
    d.words("да", 0.0)
    t0 = 3.34
    assert d.onset(t0) is Verdict.PAUSE
    assert d.confirmed(t0 + 0.42) is Verdict.PAUSE
    assert d.speech_end(t0 + 0.82) is Verdict.KEEP
    assert d.deadline == pytest.approx(t0 + 1.22)
    assert d.tick(t0 + 0.9) is Verdict.KEEP  # the window's end: still waiting for the final
    assert d.partial("нет, спасибо", t0 + 0.96) is Verdict.CANCEL
    # None comes: resumed at the wait's end; held runs wait after their end too, within
    # max_pause_ms of the onset.
    n = InterruptionDecider(InterruptionSettings(window_ms=900, final_wait_ms=400, max_pause_ms=2000))
    n.words("да", 0.0)
    n.onset(t0)
    n.confirmed(t0 + 0.24)
    assert n.partial("", t0 + 0.3) is Verdict.KEEP
    assert n.tick(t0 + 0.9) is Verdict.KEEP  # held: the run goes on
    assert n.speech_end(t0 + 1.8) is Verdict.KEEP
    assert n.deadline == pytest.approx(t0 + 2.0)  # max_pause_ms bounds the wait
    assert n.tick(t0 + 2.0) is Verdict.RESUME


def test_while_the_stt_is_not_known_sustained_speech_cancels_without_words() -> None:
    # After a stall: 600 ms of speech from its onset cancels.
    d = InterruptionDecider(InterruptionSettings(window_ms=900, sustained_ms=600))
    d.stt_lost()
    assert d.onset(frame(10)) is Verdict.PAUSE
    assert d.confirmed(frame(25)) is Verdict.PAUSE
    assert d.deadline == pytest.approx(frame(10) + 0.6)
    assert d.tick(frame(39)) is Verdict.KEEP
    assert d.tick(frame(40)) is Verdict.CANCEL
    # A shorter run (a cough, "угу" with the STT down) resumes at the window's end.
    short = InterruptionDecider(InterruptionSettings(window_ms=900, sustained_ms=600))
    short.stt_lost()
    short.onset(frame(10))
    short.confirmed(frame(25))
    assert short.speech_end(frame(30)) is Verdict.KEEP
    assert short.tick(frame(40)) is Verdict.KEEP  # not sustained: the run ended
    assert short.tick(frame(55)) is Verdict.RESUME
    # Runs of one overlap add up: 0.3 s + 0.3 s of the next run.
    runs = InterruptionDecider(InterruptionSettings(window_ms=900, sustained_ms=600, partial_grace_ms=600))
    runs.stt_lost()
    runs.onset(frame(10))
    runs.confirmed(frame(20))
    runs.speech_end(frame(25))  # 0.3 s voiced
    runs.onset(frame(30))
    runs.confirmed(frame(40))
    assert runs.deadline == pytest.approx(frame(30) + 0.3)
    assert runs.tick(frame(45)) is Verdict.CANCEL
    # Before the STT's first words on the call (its greeting): sustained_start_ms, so an "угу"
    # whose word comes 0.3 s after it resumes the bot first.
    start = InterruptionDecider(InterruptionSettings(window_ms=900, sustained_ms=600, sustained_start_ms=900))
    assert start.onset(frame(10)) is Verdict.PAUSE
    assert start.confirmed(frame(25)) is Verdict.PAUSE
    assert start.deadline == pytest.approx(frame(10) + 0.9)
    assert start.partial("угу", frame(40)) is Verdict.RESUME
    started = InterruptionDecider(
        InterruptionSettings(window_ms=900, sustained_ms=600, sustained_start_ms=900)
    )
    started.onset(frame(10))
    started.confirmed(frame(25))
    assert started.tick(frame(54)) is Verdict.KEEP
    assert started.tick(frame(55)) is Verdict.CANCEL
    # cancel_without_words off: never without words.
    never = InterruptionDecider(
        InterruptionSettings(window_ms=900, cancel_without_words=False, final_wait_ms=0)
    )
    never.onset(frame(10))
    never.confirmed(frame(25))
    assert never.tick(frame(55)) is Verdict.KEEP  # the run goes on: held for its words
    assert never.speech_end(frame(70)) is Verdict.RESUME  # ended with none


def test_a_stall_makes_the_stt_unknown_and_knowledge_expires() -> None:
    d = InterruptionDecider(InterruptionSettings(stt_known_s=60.0, sustained_ms=600))
    d.words("", 0.0)
    assert not d.stt_known(0.0)  # no words: nothing known
    d.words("да", 1.0)
    assert d.stt_known(61.0) and not d.stt_known(61.1)
    d.stt_lost()
    assert not d.stt_known(2.0)
    d.onset(2.0)
    d.confirmed(2.3)
    assert d.tick(2.6) is Verdict.CANCEL  # sustained speech with the STT stalled: heard


def test_words_that_arrive_before_the_sustained_deadline_decide_instead() -> None:
    d = InterruptionDecider(InterruptionSettings(window_ms=900, sustained_ms=600))
    d.onset(frame(10))
    d.confirmed(frame(25))
    assert d.partial("угу", frame(35)) is Verdict.RESUME  # a backchannel, and the STT works
    assert d.tick(frame(40)) is Verdict.KEEP
    assert d.deadline is None


def test_the_bots_own_words_recognised_from_its_echo_do_not_cancel() -> None:
    d = InterruptionDecider()
    d.words("да", 0.0)
    d.bot_says("Стоимость генеральной уборки составит девять тысяч рублей.")
    d.onset(frame(10))  # the echo passed the VAD
    assert d.partial("генеральной уборки", frame(20)) is Verdict.KEEP  # its own words
    assert d.partial("девять тысяч рублей", frame(30)) is Verdict.KEEP
    assert d.partial("уборки рублей", frame(35)) is Verdict.CANCEL  # not a run of them: the caller
    # The previous utterance's end still echoes just after the next one starts.
    e = InterruptionDecider()
    e.bot_says("девять тысяч рублей")
    e.bot_says("Уточните адрес")
    e.onset(frame(10))
    assert e.partial("тысяч рублей", frame(20)) is Verdict.KEEP
    assert e.partial("адрес квартиры", frame(25)) is Verdict.CANCEL


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
    d.words("да", 0.0)  # the STT known to work: only the window bounds the pause
    assert d.confirmed(frame(10)) is Verdict.PAUSE
    assert d.deadline == pytest.approx(frame(10) + 0.9)
    unknown = InterruptionDecider(InterruptionSettings(window_ms=900, sustained_start_ms=600))
    assert unknown.confirmed(frame(10)) is Verdict.PAUSE
    assert unknown.deadline == pytest.approx(frame(10) + 0.6)  # sustained from the confirmation


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


@pytest.mark.parametrize(
    "text, kind",
    [
        ("так, дальше", PartialKind.SHORT),  # one word outside the list
        ("аха", PartialKind.SHORT),
        ("дальше давайте", PartialKind.CONTENT),  # two
        ("а сколько", PartialKind.CONTENT),  # a floor word
        ("извините", PartialKind.CONTENT),
        ("не то", PartialKind.CONTENT),
        ("4600", PartialKind.CONTENT),  # a number said over the bot
        ("стоп", PartialKind.CONTENT),
        ("ну да", PartialKind.BACKCHANNEL),
        ("уборки", PartialKind.ECHO),  # the echo rule first
    ],
)
def test_short_partials_with_two_content_words(text: str, kind: PartialKind) -> None:
    s = InterruptionSettings()
    floor = frozenset(s.floor_words.split())
    stop = frozenset(s.stop_words.split())
    got = partial_kind(text, WORDS, "стоимость уборки квартиры", stop, floor, content_words=2)
    assert got is kind


def test_a_short_partial_holds_the_pause_then_resumes_at_the_runs_end() -> None:
    d = InterruptionDecider()
    assert d.onset(frame(10)) is Verdict.PAUSE
    assert d.confirmed(frame(25)) is Verdict.PAUSE
    assert d.partial("так дальше", frame(40)) is Verdict.KEEP  # paused: more words may come
    assert d.tick(frame(41)) is Verdict.KEEP
    # The run ended with one listener's word: its final may still bring more (paused for it).
    assert d.speech_end(frame(50)) is Verdict.KEEP
    assert d.tick(frame(69)) is Verdict.KEEP
    # None by final_wait_ms (400 ms) after the run's end: the bot goes on.
    assert d.tick(frame(70) + 1e-9) is Verdict.RESUME
    assert d.onset(frame(75)) is Verdict.KEEP  # judged: a further run of it does not pause again
    # Still watched for its grace: more words of it cut the bot.
    assert d.partial("так дальше давайте", frame(77)) is Verdict.CANCEL


def test_a_short_partial_then_a_final_with_a_stop_word_cancels_without_resuming() -> None:
    d = InterruptionDecider()
    d.onset(frame(10))
    d.confirmed(frame(25))
    assert d.partial("так дальше", frame(40)) is Verdict.KEEP
    assert d.speech_end(frame(45)) is Verdict.KEEP
    assert d.partial("так дальше подождите", frame(50)) is Verdict.CANCEL


def test_a_short_partial_then_a_second_word_cancels() -> None:
    d = InterruptionDecider()
    d.onset(frame(10))
    assert d.partial("мне", frame(30)) is Verdict.KEEP
    assert d.partial("мне нужна", frame(45)) is Verdict.CANCEL


def test_a_short_partial_in_a_long_run_still_cancels_at_the_pause_bound() -> None:
    # Two seconds of confirmed speech with one word recognised: the STT is behind the caller (it
    # can give one word of it), as with none.
    d = InterruptionDecider(InterruptionSettings(window_ms=900, max_pause_ms=2000))
    d.words("да", 0.0)
    d.onset(frame(10))
    d.confirmed(frame(25))
    assert d.partial("аха", frame(40)) is Verdict.KEEP
    verdicts = [d.tick(frame(n)) for n in range(41, 120)]
    assert Verdict.RESUME not in verdicts
    assert verdicts.index(Verdict.CANCEL) == 110 - 41  # onset + 2 s


def test_content_words_one_cancels_on_any_word_outside_the_list() -> None:
    d = InterruptionDecider(InterruptionSettings(content_words=1))
    d.onset(frame(10))
    assert d.partial("аха", frame(30)) is Verdict.CANCEL


def test_an_stt_whose_service_answered_is_known_to_work_before_its_first_words() -> None:
    # The call's start: no words yet, but the recognition's stream opened with the service's
    # answer (SpeechKit's WORKING status): speech with no words is not sustained-cancelled (an
    # "алло" whose word comes late, a cough); the window's end and the run's end decide.
    d = InterruptionDecider(InterruptionSettings(window_ms=900, sustained_start_ms=900, final_wait_ms=0))
    assert not d.stt_known(0.0)
    d.answered(0.0)
    assert d.stt_known(60.0) and not d.stt_known(60.1)  # for stt_known_s after the answer
    assert d.onset(frame(10)) is Verdict.PAUSE
    assert d.confirmed(frame(15)) is Verdict.PAUSE
    assert d.deadline == pytest.approx(frame(10) + 0.9)  # the window only: no sustained deadline
    assert d.speech_end(frame(45)) is Verdict.KEEP  # 0.7 s with no words: the window decides
    assert d.tick(frame(55)) is Verdict.RESUME
    # Its connection failed since (no answer: None): not known, sustained speech cancels.
    failed = InterruptionDecider(InterruptionSettings(window_ms=900, sustained_start_ms=900))
    failed.answered(0.0)
    failed.answered(None)
    failed.onset(frame(10))
    failed.confirmed(frame(15))
    assert failed.tick(frame(55)) is Verdict.CANCEL


def test_after_a_stall_the_services_answers_do_not_count_until_its_words() -> None:
    d = InterruptionDecider(InterruptionSettings(window_ms=900, sustained_ms=600))
    d.answered(0.0)
    d.stt_lost()  # it answers, but did not hear the caller
    d.answered(1.0)
    assert not d.stt_known(1.0)
    d.onset(frame(100))
    d.confirmed(frame(110))
    assert d.tick(frame(130)) is Verdict.CANCEL  # sustained_ms from the onset
    d.reset()
    d.words("да", 3.0)  # words again: its answers count once more
    assert d.stt_known(3.0 + 60.0)
    assert not d.stt_known(3.0 + 60.5)  # the words expired; the answer at 1 s is older still
    d.answered(70.0)
    assert d.stt_known(125.0)  # the answer at 70 s, the words at 3 s long forgotten
