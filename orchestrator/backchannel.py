"""Backchannel words, and which states take them as an answer.

Speech that began over an uninterrupted bot turn is a backchannel ("угу", "ага"), dropped
(`orchestrator.barge_in`), except where the state asks a yes/no question: there "да" said over
the end of the question is the answer. A state's `backchannel` says so ("answer" / "drop");
unset, a state whose routed intents (its transitions) have a backchannel word among their
examples ("да" for a `confirm` intent) takes them as answers.

Only the backchannel words that are themselves whole examples of the state's routed intents are
answers there ("да", not "так"): the bot's own filler "Так..." coming back as echo, or a "ну"
said while listening, is no answer to a yes/no question. A state set to "answer" whose intents
have no such example takes every backchannel word.
"""

from __future__ import annotations

from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.overlap_words import BACKCHANNEL_TEXT
from orchestrator.text import normalize

__all__ = [
    "BACKCHANNEL_TEXT",
    "BACKCHANNEL_WORDS",
    "answer_words",
    "is_answer",
    "is_backchannel",
    "takes_backchannel",
]

BACKCHANNEL_WORDS = frozenset(BACKCHANNEL_TEXT.split())


def is_backchannel(text: str) -> bool:
    """Whether `text` is only backchannel words ("угу", "да-да", "ага, понятно")."""
    words = normalize(text).split()
    return bool(words) and all(w in BACKCHANNEL_WORDS for w in words)


def answer_words(dialogue_map: DialogueMap, state_id: str) -> frozenset[str]:
    """The backchannel words (normalised) that `state_id` takes as the caller's answer when begun
    over its playlist: those that are whole one-word examples of its routed intents ("да", or
    "да-да", for `agree`; not the words of "именно так": a lone "так" is no answer); empty: none
    (computed per result: a few per turn)."""
    state = dialogue_map.states.get(state_id)
    if state is None or state.backchannel == "drop":
        return frozenset()
    words: set[str] = set()
    for intent_id in state.transitions:
        intent = dialogue_map.intent(intent_id)
        for example in intent.examples if intent is not None else ():
            said = set(normalize(example).split())
            if len(said) == 1 and said <= BACKCHANNEL_WORDS:
                words.update(said)
    if not words and state.backchannel == "answer":
        return BACKCHANNEL_WORDS
    return frozenset(words)


def is_answer(text: str, words: frozenset[str]) -> bool:
    """Whether `text` is only words of `words` ("да", "да-да" for {"да"})."""
    said = normalize(text).split()
    return bool(said) and all(w in words for w in said)


def takes_backchannel(dialogue_map: DialogueMap, state_id: str) -> bool:
    """Whether any backchannel word begun over `state_id`'s playlist is the caller's answer."""
    return bool(answer_words(dialogue_map, state_id))
