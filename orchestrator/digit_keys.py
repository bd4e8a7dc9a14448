"""Keys the caller presses (DTMF) and digit strings keyed in a `collect_digits` state.

A key the state's `dtmf` (else the map's `global_dtmf`) names is routed as that intent, like
words that meant it. In a state with `collect_digits`, other keys build a digit string, done at
the entity's terminator, at its `max_length`, or when the caller pauses `inter_digit_timeout_s`
(the dialogue's wait, on the injected clock); then the state's intent is routed with the string
as the entity (too short or too long: no entity, so the intent's clarify playlist).

The same state takes the string said too (`said`): words holding digits ("восемь девятьсот
шестнадцать ...", "+7 916 123-45-67") are the state's intent whatever the classifier thought,
with the one digit string that fits the entity, or without it (clarify) when none or several do.
A digit string is strong evidence in a state that asks for one; a classifier of whole phrases
mistakes "восемь девятьсот ..." for a time or a number of some other intent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from orchestrator.contracts import FlowEngine, SttEvent
from orchestrator.dialogue_map.models import DialogueMap, DigitsEntity
from orchestrator.domain.models import IntentResult, SessionState
from orchestrator.entities.digits import digit_strings, extract_digits

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class DtmfPress:
    """A key the caller pressed, at clock time `at` (queued with the STT events)."""

    digit: str
    at: float


UserEvent = SttEvent | DtmfPress


@dataclass(slots=True, frozen=True)
class KeyTurn:
    """A turn the caller took with keys: `intent` routed as if said; `text` for the transcript
    ("[DTMF 0]", "[DTMF 89161234567]"); `at` the clock time of the key that closed it."""

    intent: IntentResult
    text: str
    at: float


class DigitCollector:
    """One call's keys: which intent a key means, and the digit string being keyed in."""

    def __init__(self, dialogue_map: DialogueMap, session: SessionState, flow: FlowEngine) -> None:
        self._map, self._session, self._flow = dialogue_map, session, flow
        self._digits: list[str] = []

    @property
    def keying(self) -> bool:
        """Whether some digits of a string are keyed and the string is not complete yet."""
        return bool(self._digits)

    def collecting(self) -> tuple[str, DigitsEntity] | None:
        """The state's digit-string intent and entity spec, when it collects digits."""
        collect = self._map.state(self._session.current_state_id).collect_digits
        if collect is None:
            return None
        spec = self._map.entities.get(collect.entity)
        return (collect.intent, spec) if isinstance(spec, DigitsEntity) else None

    def on_key(self, press: DtmfPress) -> KeyTurn | None:
        """The turn a key asks for, or None when it only adds to a digit string or means nothing."""
        state_id, digit = self._session.current_state_id, press.digit
        intent_id = self._map.dtmf_intent(state_id, digit)
        collecting = self.collecting()
        if collecting is not None and (self._digits or intent_id is None):
            spec = collecting[1]
            if digit == spec.terminator:
                return self.done(press.at) if self._digits else None
            if digit.isdigit():
                self._digits.append(digit)
                if len(self._digits) >= spec.max_length:
                    return self.done(press.at)
            return None
        if intent_id is None or not self._flow.has_transition(state_id, intent_id):
            log.info("call %s: key %r means nothing in state %s", self._session.call_id, digit, state_id)
            return None
        return KeyTurn(IntentResult(intent_id, 1.0, None, intent_id), f"[DTMF {digit}]", press.at)

    def done(self, at: float) -> KeyTurn:
        """The keyed digit string is complete: the state's intent with it (or without: clarify)."""
        collecting = self.collecting()
        digits = "".join(self._digits)
        self._digits.clear()
        assert collecting is not None, "digits are only kept while the state collects them"
        intent_id, spec = collecting
        entity = self._map.state(self._session.current_state_id).collect_digits
        assert entity is not None
        entities: dict[str, object] = {}
        if spec.min_length <= len(digits) <= spec.max_length:
            entities[entity.entity] = digits
        intent = IntentResult(intent_id, 1.0, entities, intent_id)
        return KeyTurn(intent, f"[DTMF {digits}]", at)

    def said(self, text: str) -> IntentResult | None:
        """The state's digit-string intent when the caller said digits in a collecting state
        (with the entity when exactly one string fits it); None otherwise."""
        collecting = self.collecting()
        if collecting is None or not digit_strings(text):
            return None
        intent_id, spec = collecting
        entity = self._map.state(self._session.current_state_id).collect_digits
        assert entity is not None
        value = extract_digits(text, spec)
        entities: dict[str, object] = {} if value is None else {entity.entity: value}
        return IntentResult(intent_id, 1.0, entities, intent_id)
