"""MapFlowEngine: transitions, entities, set_variables, on the example cleaning map."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from orchestrator.contracts import FlowEngine
from orchestrator.dialogue_map.loader import load_dialogue_map, parse_dialogue_map
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.dialogue_map.templates import render_template
from orchestrator.domain.models import IntentResult, SessionState, SessionUpdate
from orchestrator.flow_engine import MapFlowEngine, missing_entities

EXAMPLE = Path(__file__).resolve().parents[1] / "dialogue_maps" / "cleaning_quote.ru.json"


@pytest.fixture(scope="module")
def cmap() -> DialogueMap:
    return load_dialogue_map(EXAMPLE)


@pytest.fixture
def engine(cmap: DialogueMap) -> FlowEngine:
    return MapFlowEngine(cmap)


def intent(intent_id: str, **entities: Any) -> IntentResult:
    return IntentResult(intent_id, 0.9, entities, intent_id)


def apply(session: SessionState, update: SessionUpdate | None) -> SessionState:
    assert update is not None
    fresh = SessionState(call_id=session.call_id)
    update.apply_to(fresh)
    return fresh


def test_area_gives_a_quote(engine: FlowEngine) -> None:
    s = SessionState("c1", current_state_id="greeting", variables={"caller": "+7900"})
    before = copy.deepcopy(s)
    r = engine.process_event(s, intent("give_area", area_m2=45))
    assert r.status == "SUCCESS", r.detail
    assert r.updated_session == SessionUpdate(
        current_state_id="quote",
        variables={"caller": "+7900", "area_m2": 45, "base_price": 6750, "final_price": 6750},
        state_history=["greeting"],
    )
    assert s == before  # pure: the session passed in is untouched


def test_minimum_order_applies(engine: FlowEngine) -> None:
    r = engine.process_event(SessionState("c", "greeting"), intent("give_area", area_m2=12.5))
    assert r.updated_session is not None
    assert r.updated_session.variables["final_price"] == 3000


def test_missing_required_entity(engine: FlowEngine) -> None:
    r = engine.process_event(SessionState("c", "greeting"), intent("give_area"))
    assert r.status == "MISSING_ENTITY"
    assert r.detail is not None and "area_m2" in r.detail
    assert r.updated_session is None


def test_required_entity_known_from_earlier_in_the_call(engine: FlowEngine) -> None:
    s = SessionState("c", "greeting", variables={"area_m2": 60})
    r = engine.process_event(s, IntentResult("give_area", 0.8, None, "give_area"))
    assert r.status == "SUCCESS"
    assert r.updated_session is not None
    assert r.updated_session.variables["final_price"] == 9000


def test_new_entity_value_replaces_the_old_one_and_none_is_ignored(engine: FlowEngine) -> None:
    s = SessionState("c", "quote", variables={"area_m2": 60})
    r = engine.process_event(s, intent("give_area", area_m2=80))
    assert r.updated_session is not None
    assert r.updated_session.variables["final_price"] == 12000
    r = engine.process_event(s, intent("give_area", area_m2=None))
    assert r.updated_session is not None
    assert r.updated_session.variables["area_m2"] == 60


def test_no_transition(engine: FlowEngine) -> None:
    r = engine.process_event(SessionState("c", "greeting"), intent("choose_day", visit_day="завтра"))
    assert r.status == "EXECUTION_ERROR"
    assert r.detail is not None and "no transition" in r.detail
    assert not engine.has_transition("greeting", "choose_day")
    assert engine.has_transition("greeting", "give_area")


def test_global_transition_from_any_state(engine: FlowEngine) -> None:
    for state in ("greeting", "quote", "ask_day"):
        assert engine.has_transition(state, "operator")
        r = engine.process_event(SessionState("c", state), intent("operator"))
        assert r.updated_session is not None
        assert r.updated_session.current_state_id == "transfer_operator"


def test_unknown_current_state(engine: FlowEngine) -> None:
    r = engine.process_event(SessionState("c", "nowhere"), intent("agree"))
    assert r.status == "EXECUTION_ERROR"
    assert r.detail is not None and "nowhere" in r.detail


def test_set_variables_failure_is_an_execution_error(cmap: DialogueMap) -> None:
    data = cmap.model_dump(by_alias=True)
    data["states"]["ask_day"]["set_variables"] = {"bad": "visit_day * 2"}
    broken = MapFlowEngine(parse_dialogue_map(data, "inline"))
    s = SessionState("c", "quote", variables={"visit_day": "субботу"})
    r = broken.process_event(s, intent("agree"))
    assert r.status == "EXECUTION_ERROR"
    assert r.detail is not None
    assert "ask_day" in r.detail and "set_variables.bad" in r.detail and "not a number" in r.detail


def test_missing_entities_helper(cmap: DialogueMap) -> None:
    assert missing_entities(cmap, "give_area", {}, {}) == ["area_m2"]
    assert missing_entities(cmap, "give_area", {}, {"area_m2": 40}) == []
    assert missing_entities(cmap, "give_area", {"area_m2": 40}) == []
    assert missing_entities(cmap, "give_area", {"area_m2": None}, {"area_m2": None}) == ["area_m2"]
    assert missing_entities(cmap, "agree", {}) == []
    assert missing_entities(cmap, "no_such_intent", {}) == []


def test_whole_call_walk(cmap: DialogueMap) -> None:
    engine = MapFlowEngine(cmap)
    s = SessionState("c", cmap.initial_state)
    steps = [
        (intent("give_area", area_m2=45), "quote"),
        (intent("agree"), "ask_day"),
        (intent("choose_day", visit_day="субботу"), "booked"),
    ]
    for event, expected in steps:
        r = engine.process_event(s, event)
        assert r.status == "SUCCESS", r.detail
        s = apply(s, r.updated_session)
        assert s.current_state_id == expected
    assert s.state_history == ["greeting", "quote", "ask_day"]
    booked = cmap.state("booked")
    assert booked.action == "END_CALL"
    tts = [i for i in booked.system_response.playlist if i.type == "tts"]
    assert render_template(tts[0].text_template, s) == (
        "на субботу, площадь 45 квадратных метров, стоимость 6750 рублей."
    )
