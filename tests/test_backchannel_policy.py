"""A yes/no state takes "да" said over its question as the answer; other states drop it.

Virtual time: the caller's short "да" (too short for the VAD to report: no barge-in) over the
bot's turn, its STT final during the turn or just after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.backchannel import answer_words, is_backchannel, takes_backchannel
from orchestrator.dialogue_map.loader import load_dialogue_map
from orchestrator.dialogue_map.models import DialogueMap
from testkit.fakes import KeywordClassifier, Say
from tests.test_orchestrator import call, make_map

AREA = Say(1.5, "площадь 45 метров", duration=1.0)  # final at 2.8: the quote plays from then


def classifier() -> KeywordClassifier:
    return KeywordClassifier({"give_area": ["площад"], "refuse": ["нет"], "agree": ["да"]}, {})


def with_quote_policy(policy: str | None) -> DialogueMap:
    data: dict[str, Any] = make_map().model_dump(by_alias=True, exclude_none=True)
    if policy is not None:
        data["states"]["quote"]["backchannel"] = policy
    return DialogueMap.model_validate(data)


def said(run: Any) -> list[str]:
    return [str(e.data["text"]) for e in run.events if e.kind == "user_said"]


def quote_end(run: Any) -> float:
    """When the quote's turn ended (the dialogue listened again)."""
    return next(e.at for e in run.events if e.kind == "listening" and e.data["state"] == "quote")


# The quote plays 2.8-3.78 s. "да" at 3.2 s: its final during the quote (no VAD report: too short),
# or 0.9 s after it, when the turn is over (the VAD announced an onset, then rejected it).
YES_DURING = Say(3.2, "да", duration=0.3, vad=False, stt_delay=0.2)
YES_LATE = Say(3.2, "да", duration=0.3, vad=False, onset=True, stt_delay=0.9)


@pytest.mark.parametrize("yes", [YES_DURING, YES_LATE], ids=["during", "late"])
def test_yes_over_a_yes_no_question_is_the_answer(yes: Say) -> None:
    run = call([AREA, yes], hangup_at=12.0, classifier=classifier())
    final_at = yes.at + yes.duration + yes.stt_delay
    assert (final_at < quote_end(run)) is (yes is YES_DURING)
    assert said(run) == ["площадь 45 метров", "да"]
    assert run.orchestrator.session_state.current_state_id == "goodbye_ok"
    assert run.orchestrator.barge_in.results_dropped == 0


@pytest.mark.parametrize("yes", [YES_DURING, YES_LATE], ids=["during", "late"])
def test_a_state_set_to_drop_backchannels_drops_the_same_yes(yes: Say) -> None:
    run = call(
        [AREA, yes],
        hangup_at=9.0,
        classifier=classifier(),
        dmap=with_quote_policy("drop"),
    )
    assert said(run) == ["площадь 45 метров"]
    assert run.orchestrator.session_state.current_state_id == "quote"
    assert run.orchestrator.barge_in.results_dropped == 1


def test_the_greeting_drops_a_yes_it_did_not_ask_for() -> None:
    # "start" routes give_area and refuse ("нет"): no yes/no question, "да" is a backchannel.
    run = call(
        [Say(0.5, "да", duration=0.3, vad=False, stt_delay=0.2)], hangup_at=5.0, classifier=classifier()
    )
    assert said(run) == []
    assert run.orchestrator.barge_in.results_dropped == 1


def test_only_backchannel_words_are_answers_there() -> None:
    # The bot's own words coming back as echo are no answer, even in a yes/no state.
    run = call(
        [AREA, Say(3.2, "рублей", duration=0.3, vad=False, stt_delay=0.2)],
        hangup_at=9.0,
        classifier=classifier(),
    )
    assert said(run) == ["площадь 45 метров"]


@pytest.mark.parametrize("word", ["так", "ну", "понятно"])
def test_a_backchannel_word_no_routed_intent_has_as_an_example_is_dropped(word: str) -> None:
    # The quote plays a filler "Так...": its echo recognised as "так" is not the caller's answer;
    # only "да" (a whole example of `agree`) is.
    run = call(
        [AREA, Say(3.2, word, duration=0.3, vad=False, stt_delay=0.2)],
        hangup_at=9.0,
        classifier=classifier(),
    )
    assert said(run) == ["площадь 45 метров"]
    assert run.orchestrator.barge_in.results_dropped == 1


def test_the_policy_of_the_example_maps() -> None:
    dmap = make_map()
    assert takes_backchannel(dmap, "quote")  # agree: "да"
    assert not takes_backchannel(dmap, "start")
    assert not takes_backchannel(with_quote_policy("drop"), "quote")
    assert answer_words(dmap, "quote") == {"да"} and answer_words(dmap, "start") == frozenset()
    assert is_backchannel("Да-да.") and is_backchannel("угу") and not is_backchannel("да, записывайте")


def test_answer_words_come_from_one_word_examples_only() -> None:
    # The dental map's `confirm` intent has "именно так" and "ага, верно" among its examples; only
    # its one-word ones ("да", "правильно") answer: a lone "так" (or the bot's own "Так..." as
    # echo) is no yes.
    dental = load_dialogue_map(Path(__file__).parents[1] / "dialogue_maps" / "dental_appointment.ru.json")
    assert answer_words(dental, "confirm_booking") == frozenset({"да", "правильно"})
    assert answer_words(dental, "confirm_phone") == frozenset({"да", "правильно"})
