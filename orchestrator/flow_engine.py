"""The FlowEngine: executes a dialogue map, one intent at a time, without I/O.

Rules of one step (`process_event`), in order:
1. The next state is the current state's transition for the intent, else the map's global
   transition for it; neither -> EXECUTION_ERROR "no transition".
2. The intent's entities are resolved (`orchestrator.entities.resolve_entities`: times with the
   map's business hours, dates against the call's date in the map's time zone, from the engine's
   clock) and merged over the session's variables: a caller who corrects the area replaces the
   old value.
3. Every required entity of the intent must be in the merged variables, and one said now must
   have resolved: a range ("80-90"), a hedge the entity does not accept ("сто с хвостиком"), a
   phrase heard but not understood (`Unreadable`: "сто сорокк метров") or an impossible date is
   missing even when an older value is known -> else MISSING_ENTITY (the
   Orchestrator plays the intent's clarify playlist and stays in the state).
4. The next state's `set_variables` are evaluated in the map's order, each seeing the ones
   before it; a failure (missing or non-numeric variable, division by zero) -> EXECUTION_ERROR.
5. SUCCESS carries the new `current_state_id`, `variables` and `state_history` (the old state
   appended). The session passed in is never mutated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from orchestrator.dialogue_map.expressions import ExpressionError, evaluate
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.domain.models import FlowResult, IntentResult, SessionState, SessionUpdate
from orchestrator.entities.extract import context_for, resolve_entities


def missing_entities(
    dialogue_map: DialogueMap,
    intent_id: str,
    variables: Mapping[str, Any],
    entities: Mapping[str, Any] | None = None,
    *,
    now: datetime | None = None,
) -> list[str]:
    """Required entities of `intent_id` that are not known, in order (rule 3 of the module).

    `entities` are the ones just extracted (raw, resolved here at `now`, default the system
    clock); `variables` the session's. A required entity said now that does not resolve is
    missing even if `variables` has an older value: the caller meant a new one.
    """
    intent = dialogue_map.intents.get(intent_id)
    if intent is None:
        return []
    fresh = resolve_entities(dialogue_map, entities or {}, context_for(dialogue_map, now))
    return [
        name
        for name in intent.required_entities
        if fresh.get(name) is None and (name in fresh or variables.get(name) is None)
    ]


class MapFlowEngine:
    """`FlowEngine` over one validated `DialogueMap` (share it between calls: it keeps no state)."""

    def __init__(self, dialogue_map: DialogueMap, *, clock: Callable[[], datetime] | None = None) -> None:
        """`clock`: the wall clock (aware datetimes) that dates are counted from; default UTC now."""
        self._map = dialogue_map
        self._clock = clock or (lambda: datetime.now(UTC))

    @property
    def dialogue_map(self) -> DialogueMap:
        """The map this engine executes."""
        return self._map

    def has_transition(self, state_id: str, intent_id: str) -> bool:
        """Whether `intent_id` leads anywhere from `state_id` (own or global transition)."""
        return self._map.next_state_id(state_id, intent_id) is not None

    def process_event(self, session: SessionState, intent: IntentResult) -> FlowResult:
        """Apply `intent` to `session` (not mutated); see the module docstring for the rules."""
        current = session.current_state_id
        if current not in self._map.states:
            return FlowResult("EXECUTION_ERROR", detail=f"unknown current state {current!r}")
        target = self._map.next_state_id(current, intent.intent_id)
        if target is None:
            return FlowResult(
                "EXECUTION_ERROR",
                detail=f"no transition for intent {intent.intent_id!r} from state {current!r}",
            )
        now = self._clock()
        variables = dict(session.variables)
        fresh = resolve_entities(self._map, intent.entities or {}, context_for(self._map, now))
        for name, value in fresh.items():
            if value is not None:
                variables[name] = value
        missing = missing_entities(self._map, intent.intent_id, variables, intent.entities, now=now)
        if missing:
            return FlowResult(
                "MISSING_ENTITY",
                detail=f"intent {intent.intent_id!r} needs {', '.join(missing)}",
            )
        state = self._map.states.get(target)
        if state is None:  # the loader rejects such maps; guard maps built in code
            return FlowResult("EXECUTION_ERROR", detail=f"unknown target state {target!r}")
        for name, expr in state.set_variables.items():
            try:
                variables[name] = evaluate(expr, variables)
            except ExpressionError as exc:
                return FlowResult(
                    "EXECUTION_ERROR",
                    detail=f"state {target!r}: set_variables.{name}: {exc}",
                )
        return FlowResult(
            "SUCCESS",
            updated_session=SessionUpdate(
                current_state_id=target,
                variables=variables,
                state_history=[*session.state_history, current],
            ),
        )
