"""The example maps in dialogue_maps/: valid, lint-clean, and the cleaning script runs end to end."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.dialogue_map.lint import lint_map
from orchestrator.dialogue_map.loader import audio_key_uses, load_dialogue_map, tts_templates
from orchestrator.dialogue_map.models import (
    DateEntity,
    DialogueMap,
    NumberEntity,
    TimeEntity,
    TtsItem,
)
from orchestrator.dialogue_map.templates import render_template
from orchestrator.digit_keys import DigitCollector
from orchestrator.domain.models import SessionState
from orchestrator.flow_engine import MapFlowEngine, missing_entities
from orchestrator.intents.classifier import VectorIntentClassifier
from orchestrator.intents.ngram import CharNgramEmbedder

MAPS = Path(__file__).resolve().parents[1] / "dialogue_maps"
NOW = datetime(2025, 6, 11, 9, 0, tzinfo=UTC)  # a Wednesday, 12:00 in Moscow
ALL_MAPS = sorted(p for p in MAPS.glob("*.json") if p.name != "schema.json")
_CYRILLIC = re.compile(r"[а-яё]", re.IGNORECASE)


def test_there_are_example_maps() -> None:
    names = {p.name for p in ALL_MAPS}
    assert {"cleaning_quote.ru.json", "dental_appointment.ru.json"} <= names


@pytest.mark.parametrize("path", ALL_MAPS, ids=lambda p: p.name)
def test_map_loads_and_lints_without_errors(path: Path) -> None:
    m = load_dialogue_map(path)
    assert m.json_schema_ref == "./schema.json" and (path.parent / "schema.json").exists()
    assert [i for i in lint_map(path) if i.severity == "error"] == []
    # Every key it plays has a Russian text for `voicebridge cache warm`.
    for _, key in audio_key_uses(m):
        assert _CYRILLIC.search(m.audio[key]), key
    assert _CYRILLIC.search(m.settings.llm.system_prompt)


def test_cleaning_map_exercises_every_feature() -> None:
    m = load_dialogue_map(MAPS / "cleaning_quote.ru.json")
    items = [i for st in m.states.values() for i in st.system_response.playlist]
    assert {type(i).__name__ for i in items} == {"CacheItem", "FillerItem", "TtsItem"}
    # The spec's playlist shape: cache intro, filler, tts price, cache currency.
    quote = m.state("quote")
    assert [i.type for i in quote.system_response.playlist[:4]] == ["cache", "filler", "tts", "cache"]
    assert "{{ session.variables.final_price }}" in [t for _, t in tts_templates(m)]
    assert quote.fillers and quote.set_variables and quote.error_playlist
    assert m.intents["give_area"].required_entities == ["area_m2"]
    assert m.intents["give_area"].clarify_playlist
    assert isinstance(m.entities["area_m2"], NumberEntity)
    assert isinstance(m.entities["visit_day"], DateEntity)  # "в субботу", "двадцать пятого"
    assert m.global_transitions and m.faq["too_expensive"]
    assert m.settings.llm.system_prompt and m.settings.neutral_filler_keys
    assert m.settings.error_playlist
    end_states = {sid for sid, st in m.states.items() if st.action == "END_CALL"}
    # Both agreement and refusal end the call.
    assert m.next_state_id("ask_day", "choose_day") in end_states
    assert m.next_state_id("quote", "refuse") in end_states
    assert any(m.states[s].interruptible is False for s in end_states)
    dental = load_dialogue_map(MAPS / "dental_appointment.ru.json")
    assert isinstance(dental.entities["visit_time"], TimeEntity)  # "в половине третьего" -> 14:30


async def _turn(
    m: DialogueMap, clf: VectorIntentClassifier, s: SessionState, text: str
) -> tuple[SessionState, str]:
    """One caller turn as the Orchestrator runs it; returns the new session and what was played."""
    result, _ = await clf.classify_intent(text)
    engine = MapFlowEngine(m, clock=lambda: NOW)
    if result is None or not engine.has_transition(s.current_state_id, result.intent_id):
        faq = await clf.find_faq_answer(text)
        return s, f"faq:{faq.faq_id}" if faq else "llm"
    if missing_entities(m, result.intent_id, s.variables, result.entities, now=NOW):
        return s, "clarify"
    r = engine.process_event(s, result)
    assert r.status == "SUCCESS" and r.updated_session is not None, r.detail
    s = SessionState(s.call_id)
    r.updated_session.apply_to(s)
    said = [
        render_template(i.text_template, s) if isinstance(i, TtsItem) else i.key
        for i in m.state(s.current_state_id).system_response.playlist
    ]
    return s, " | ".join(said)


async def test_scripted_call_through_the_cleaning_map() -> None:
    m = load_dialogue_map(MAPS / "cleaning_quote.ru.json")
    clf = VectorIntentClassifier(m, CharNgramEmbedder())
    s = SessionState("call-1", m.initial_state)
    script = [
        ("ну квартира у нас большая", "clarify"),
        (
            "где-то сорок восемь квадратных метров",
            "static:final_price_intro | filler:hmm | 7200 | static:currency_rubles | static:ask_booking",
        ),
        ("это слишком дорого", "faq:too_expensive"),
        ("а вы работаете по праздникам", "llm"),
        ("хорошо, записывайте", "static:ask_day"),
        (
            "давайте в субботу",
            "static:booked_intro | на субботу, 14 июня, площадь 48 квадратных метров, "
            "стоимость 7200 рублей. | static:goodbye_booked",
        ),
    ]
    for text, expected in script:
        s, said = await _turn(m, clf, s, text)
        assert said == expected, text
    assert s.current_state_id == "booked" and m.state("booked").action == "END_CALL"
    assert s.state_history == ["greeting", "quote", "ask_day"]


async def test_refusal_ends_the_call() -> None:
    m = load_dialogue_map(MAPS / "cleaning_quote.ru.json")
    clf = VectorIntentClassifier(m, CharNgramEmbedder())
    s, said = await _turn(m, clf, SessionState("c", "greeting"), "нет, спасибо, не нужно")
    assert said == "static:goodbye_refusal"
    assert m.state(s.current_state_id).action == "END_CALL"


# Each clarify prompt suggests phrasings ("Например: сорок пять метров"); the caller who repeats
# one must get past the prompt: the intent is recognised in the prompt's state and every required
# entity resolves. (map, state, intent, phrase suggested by the prompt's audio, entity value)
_PHONE_WORDS = "восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь"
CLARIFY_ROWS = [
    ("cleaning_quote", "greeting", "give_area", "сорок пять метров", 45),
    ("cleaning_quote", "ask_day", "choose_day", "на завтра", "четверг, 12 июня"),
    ("cleaning_quote", "ask_day", "choose_day", "на субботу", "субботу, 14 июня"),
    ("dental_appointment", "greeting", "choose_doctor", "лечение", "терапевту"),
    ("dental_appointment", "greeting", "choose_doctor", "удаление зуба", "хирургу"),
    ("dental_appointment", "greeting", "choose_doctor", "чистка", "гигиенисту"),
    ("dental_appointment", "ask_time", "give_time", "десять тридцать", "10:30"),
    ("dental_appointment", "ask_phone", "give_phone", _PHONE_WORDS, "8 916 123 45 67"),
]


@pytest.mark.parametrize(("map_name", "state", "intent_id", "phrase", "value"), CLARIFY_ROWS)
async def test_clarify_prompts_accept_what_they_suggest(
    map_name: str, state: str, intent_id: str, phrase: str, value: object
) -> None:
    m = load_dialogue_map(MAPS / f"{map_name}.ru.json")
    intent = m.intents[intent_id]
    prompts = " ".join(m.audio[i.key] for i in intent.clarify_playlist if not isinstance(i, TtsItem))
    assert phrase in prompts.lower(), f"{phrase!r} is no longer suggested by {prompts!r}"
    clf = VectorIntentClassifier(m, CharNgramEmbedder())
    result, _ = await clf.classify_intent(phrase)
    # Digits said where the state collects them are its intent (as in the dialogue loop).
    result = DigitCollector(m, SessionState("c", state), MapFlowEngine(m)).said(phrase) or result
    assert result is not None and result.intent_id == intent_id, phrase
    assert MapFlowEngine(m).has_transition(state, intent_id)
    assert missing_entities(m, intent_id, {}, result.entities, now=NOW) == []
    r = MapFlowEngine(m, clock=lambda: NOW).process_event(SessionState("c", state), result)
    assert r.status == "SUCCESS" and r.updated_session is not None, r.detail
    (name,) = intent.required_entities
    from orchestrator.dialogue_map.templates import format_value

    assert format_value(r.updated_session.variables[name]) == str(value)


def test_every_clarify_prompt_of_the_example_maps_is_covered() -> None:
    covered = {(m, i) for m, _, i, _, _ in CLARIFY_ROWS}
    for path in sorted(MAPS.glob("*.ru.json")):
        m = load_dialogue_map(path)
        for iid, intent in m.intents.items():
            if intent.clarify_playlist:
                assert (path.name.removesuffix(".ru.json"), iid) in covered, (path.name, iid)
