"""Absurd input to the entity grammars: no exception, the entity is missing, the map asks again.

Issue 10 item 6: a caller who "says" a number with 5,000 digits made Python's int-string limit
(4,300 digits) or float overflow raise inside the dialogue, and the call hung up without a word.
A digit run longer than `MAX_TOKEN_DIGITS` is now a token no grammar reads.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.dialogue_map.loader import load_dialogue_map
from orchestrator.domain.models import IntentResult, SessionState
from orchestrator.entities.extract import extract_entities
from orchestrator.entities.morph import MAX_TOKEN_DIGITS, tokens
from orchestrator.entities.values import UNREADABLE
from orchestrator.flow_engine import MapFlowEngine

MAPS = Path(__file__).resolve().parents[1] / "dialogue_maps"
NOW = datetime(2025, 6, 11, 9, 0, tzinfo=UTC)
CLEANING = load_dialogue_map(MAPS / "cleaning_quote.ru.json")
DENTAL = load_dialogue_map(MAPS / "dental_appointment.ru.json")

HOSTILE = [
    "7" * 5000,
    "у нас " + "5" * 5000 + " метров",
    "1" * 5000 + ".5",
    "0," + "3" * 5000,
    "8" * 4301,
    "записать на " + "2" * 300 + "-е число",
    "9" * (MAX_TOKEN_DIGITS + 1) + " квадратных метров",
]


@pytest.mark.parametrize("dialogue_map", [CLEANING, DENTAL], ids=["cleaning", "dental"])
@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: f"{len(t)}chars")
def test_an_absurdly_long_digit_run_gives_no_value_for_any_entity(dialogue_map: object, text: str) -> None:
    specs = dialogue_map.entities  # type: ignore[attr-defined]
    found = extract_entities(text, list(specs), specs)
    assert all(value is UNREADABLE for value in found.values()), found


def test_a_long_run_is_one_token_no_grammar_reads_and_ordinary_numbers_are_untouched() -> None:
    assert [t.kind for t in tokens("5" * 5000)] == ["long"]
    assert [t.kind for t in tokens("9" * MAX_TOKEN_DIGITS)] == ["int"]
    assert extract_entities("у нас 60 метров", ["area_m2"], CLEANING.entities) == {"area_m2": 60}


def test_the_map_asks_again_when_the_area_was_5000_digits() -> None:
    engine = MapFlowEngine(CLEANING, clock=lambda: NOW)
    session = SessionState("c", "greeting")
    entities = extract_entities("у нас " + "5" * 5000 + " метров", ["area_m2"], CLEANING.entities)
    r = engine.process_event(session, IntentResult("give_area", 0.9, entities, "give_area"))
    assert r.status == "MISSING_ENTITY"
