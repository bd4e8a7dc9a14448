"""The new value kinds through the FlowEngine and the templates: no guess ever reaches a price."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path

import pytest

from orchestrator.dialogue_map.loader import load_dialogue_map
from orchestrator.dialogue_map.models import DigitsEntity
from orchestrator.dialogue_map.templates import format_value
from orchestrator.domain.models import IntentResult, SessionState
from orchestrator.entities.extract import extract_entities, extract_entity
from orchestrator.entities.values import UNREADABLE, Approximate, Range, SaidDate, SaidTime
from orchestrator.flow_engine import MapFlowEngine, missing_entities

MAPS = Path(__file__).resolve().parents[1] / "dialogue_maps"
NOW = datetime(2025, 6, 11, 9, 0, tzinfo=UTC)
CLEANING = load_dialogue_map(MAPS / "cleaning_quote.ru.json")
DENTAL = load_dialogue_map(MAPS / "dental_appointment.ru.json")


def _intent(intent_id: str, **entities: object) -> IntentResult:
    return IntentResult(intent_id, 0.9, dict(entities), intent_id)


def test_a_range_is_missing_even_when_an_older_area_is_known() -> None:
    engine = MapFlowEngine(CLEANING, clock=lambda: NOW)
    s = SessionState("c", "quote", variables={"area_m2": 50, "final_price": 7500})
    r = engine.process_event(s, _intent("give_area", area_m2=Range(80, 90)))
    assert r.status == "MISSING_ENTITY"
    assert missing_entities(CLEANING, "give_area", s.variables, {"area_m2": Range(80, 90)}) == ["area_m2"]
    over = {"area_m2": Approximate(100, "over")}  # "сто с хвостиком"
    assert missing_entities(CLEANING, "give_area", s.variables, over) == ["area_m2"]
    # The cleaning map accepts "около ста": the quote is for the area the caller named.
    r = engine.process_event(s, _intent("give_area", area_m2=Approximate(100)))
    assert r.status == "SUCCESS" and r.updated_session is not None
    assert r.updated_session.variables["final_price"] == 15000


def test_times_and_dates_are_resolved_and_spoken() -> None:
    engine = MapFlowEngine(DENTAL, clock=lambda: NOW)
    s = SessionState("c", "ask_time", variables={"doctor": "терапевту"})
    r = engine.process_event(s, _intent("give_time", visit_time=SaidTime(2, 30)))
    assert r.status == "SUCCESS" and r.updated_session is not None
    assert r.updated_session.variables["visit_time"] == time(14, 30)
    assert format_value(time(14, 30)) == "14:30" and format_value(time(9, 5)) == "9:05"
    assert format_value(date(2025, 6, 20)) == "пятницу, 20 июня"
    cleaning = MapFlowEngine(CLEANING, clock=lambda: NOW)
    s = SessionState("c", "ask_day", variables={"area_m2": 45, "final_price": 6750})
    r = cleaning.process_event(s, _intent("choose_day", visit_day=SaidDate(weekday=4, week="next")))
    assert r.status == "SUCCESS" and r.updated_session is not None
    assert r.updated_session.variables["visit_day"] == date(2025, 6, 20)


def test_a_vague_time_or_a_past_date_asks_again() -> None:
    vague = {"visit_time": Approximate(SaidTime(13, 0, "pm"))}  # "к обеду"
    assert missing_entities(DENTAL, "give_time", {}, vague, now=NOW) == ["visit_time"]
    past = {"visit_day": SaidDate(offset_days=-1)}
    assert missing_entities(CLEANING, "choose_day", {}, past, now=NOW) == ["visit_day"]


UNREAD_ROWS = [
    "нет, у нас сто сорокк метров",
    "площадь не пятьдесят, а сто пядесят",
    "двести эээ пятьдесят метров",
    "сто сем метров",
    "сто пятьдесят и пять метров балкон",
    "сто двадцать, может сто тридцать метров",
]


@pytest.mark.parametrize("text", UNREAD_ROWS)
def test_an_unreadable_new_area_never_keeps_the_old_price(text: str) -> None:
    entities = extract_entities(text, ["area_m2"], CLEANING.entities)
    assert entities == {"area_m2": UNREADABLE}, text
    engine = MapFlowEngine(CLEANING, clock=lambda: NOW)
    s = SessionState("c", "quote", variables={"area_m2": 50, "final_price": 7500})
    r = engine.process_event(s, _intent("give_area", **entities))
    assert r.status == "MISSING_ENTITY", text
    assert missing_entities(CLEANING, "give_area", s.variables, entities, now=NOW) == ["area_m2"]


@pytest.mark.parametrize(
    ("text", "entity", "names"),
    [
        ("в десять сорокк", "visit_time", DENTAL),
        ("восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят сем", None, None),
    ],
)
def test_unreadable_times_are_kept_as_such(text: str, entity: str | None, names: object) -> None:
    if entity is None:
        spec = DigitsEntity(type="digits", min_length=11, max_length=11)
        assert extract_entity(text, spec) is UNREADABLE
        return
    assert extract_entity(text, DENTAL.entities[entity]) is UNREADABLE
    assert missing_entities(DENTAL, "give_time", {"visit_time": time(10, 0)}, {entity: UNREADABLE}, now=NOW)


def test_nothing_said_for_the_entity_is_absent_not_unreadable() -> None:
    assert extract_entities("спасибо, до свидания", ["area_m2"], CLEANING.entities) == {}
    assert extract_entities("у нас 2 комнаты", ["area_m2"], CLEANING.entities) == {}  # out of bounds
    assert extract_entities("нас сто метров", ["area_m2"], CLEANING.entities) == {"area_m2": 100}


def test_a_24_hour_time_before_opening_asks_again_on_the_dental_map() -> None:
    for text in ("давайте в 08:00", "в 08 00"):
        entities = extract_entities(text, ["visit_time"], DENTAL.entities)
        assert missing_entities(DENTAL, "give_time", {}, entities, now=NOW) == ["visit_time"], text
    entities = extract_entities("в 09:30", ["visit_time"], DENTAL.entities)
    engine = MapFlowEngine(DENTAL, clock=lambda: NOW)
    s = SessionState("c", "ask_time", variables={"doctor": "терапевту"})
    r = engine.process_event(s, _intent("give_time", **entities))
    assert r.status == "SUCCESS" and r.updated_session is not None
    assert r.updated_session.variables["visit_time"] == time(9, 30)


CHOICE_ROWS: list[tuple[str, object]] = [
    ("не к терапевту, а к хирургу", "хирургу"), ("хочу к гигиенисту, ой нет, к терапевту", "терапевту"),
    ("к гигиенисту, вернее к хирургу", "хирургу"), ("не к хирургу, к терапевту", "терапевту"),
    ("мне к терапевту", "терапевту"), ("к хирургу", "хирургу"), ("нужна чистка", "гигиенисту"),
    ("хочу вылечить зуб", "терапевту"), ("к терапевту, то есть к гигиенисту", "гигиенисту"),
    # two values left, or only a value ruled out: asked again, never the first one named
    ("болит после удаления, к хирургу", UNREADABLE), ("не знаю, к терапевту или к хирургу", UNREADABLE),
    ("не к хирургу", UNREADABLE), ("к терапевту или к гигиенисту", UNREADABLE),
    ("мне к стоматологу", None),
]  # fmt: skip


@pytest.mark.parametrize(("text", "want"), CHOICE_ROWS)
def test_choice_table(text: str, want: object) -> None:
    assert extract_entity(text, DENTAL.entities["doctor"]) == want, text


def test_a_negated_doctor_never_keeps_the_old_one() -> None:
    entities = extract_entities("не к терапевту", ["doctor"], DENTAL.entities)
    assert missing_entities(DENTAL, "choose_doctor", {"doctor": "терапевту"}, entities, now=NOW) == ["doctor"]
