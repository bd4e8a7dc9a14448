"""Backchannel words, and which states take them as an answer.

Speech that began over an uninterrupted bot turn is a backchannel ("угу", "ага"), dropped
(`orchestrator.barge_in`), except where the state asks a yes/no question: there "да" said over
the end of the question is the answer. A state's `backchannel` says so ("answer" / "drop");
unset, a state whose routed intents (its transitions) have a backchannel word among their
examples ("да" for a `confirm` intent) takes them as answers.
"""

from __future__ import annotations

from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.text import normalize

__all__ = ["BACKCHANNEL_WORDS", "is_backchannel", "takes_backchannel"]

# Words a listener says to show they follow, not to take the floor (normalised).
BACKCHANNEL_WORDS = frozenset(
    {"да", "ага", "угу", "мхм", "мгм", "ну", "так", "ясно", "понятно", "хорошо", "ок", "окей", "ладно"}
)


def is_backchannel(text: str) -> bool:
    """Whether `text` is only backchannel words ("угу", "да-да", "ага, понятно")."""
    words = normalize(text).split()
    return bool(words) and all(w in BACKCHANNEL_WORDS for w in words)


def takes_backchannel(dialogue_map: DialogueMap, state_id: str) -> bool:
    """Whether a backchannel begun over `state_id`'s playlist is the caller's answer (computed
    per result: a few per turn)."""
    state = dialogue_map.states.get(state_id)
    if state is None:
        return False
    if state.backchannel is not None:
        return state.backchannel == "answer"
    for intent_id in state.transitions:
        intent = dialogue_map.intent(intent_id)
        if intent is not None and any(is_backchannel(example) for example in intent.examples):
            return True
    return False
