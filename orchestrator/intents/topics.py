"""What a caller's question asks about, so a FAQ entry that never speaks of it is no answer to it.

The n-gram scores match a question to the FAQ entry sharing most of its words; a question about
something else that shares a verb with the entry ("а генеральную уборку делаете" and "что именно
вы делаете") scores as high as a paraphrase. Two signs tell them apart, both read from the words
as `CharNgramEmbedder.tokens` gives them:

- `topics`: what the question measures: a `lexicon.TOPIC_CONCEPTS` word ("сколько длится",
  "сколько по времени": duration) or a noun counted by "сколько" ("сколько человек приедет": a
  headcount, "#человек"). An entry none of whose questions has the topic does not answer it.
- `closed_objects`: the direct objects of a yes/no question about the callee's work, "вы ... X
  делаете / моете / сделаете" with no open question word ("что", "какой", "как", ...): the noun
  and adjective lemmas outside prepositional phrases ("а химчистку дивана вы делаете": химчистка,
  диван; "а на первый заказ скидку дадите": скидка). An entry whose questions name none of one
  object (by lemma or `lexicon.CONCEPTS` group) cannot say yes or no to it.

`vocabulary` is the set these are checked against: the content lemmas and concepts of an entry's
questions. All functions are pure; the classifier applies the penalty (`TOPIC_PENALTY`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

from orchestrator.intents.lexicon import TOPIC_CONCEPTS, concept
from orchestrator.intents.morphology import analyzer, lemma
from orchestrator.intents.ngram import CharNgramEmbedder
from orchestrator.intents.word_features import counted_noun, is_content_word

__all__ = ["closed_objects", "topics", "vocabulary"]

_HOW_MANY = "сколько"
# Open question words: the caller asks what, which or how, so an object named beside them is not
# what is asked about ("а что конкретно вы сделаете за эти деньги").
_OPEN_QUESTION = frozenset(
    {"что", "чего", "чем", "какой", "какая", "какое", "какие", "каких", "как", "сколько", "когда", "или"}
)
_MODALS = frozenset({"мочь", "хотеть"})  # "вы можете скидку сделать" asks for it, see the FAQ's words
_OBJECT_POS = frozenset({"NOUN", "ADJF"})
_PP_POS = frozenset({"ADJF", "NOUN", "NUMR", "PRTF", "NPRO"})  # the words a preposition governs


def _key(word: str) -> str:
    lem = lemma(word).normal_form
    group = concept(lem) or concept(word)
    return f"~{group}" if group is not None else lem


def vocabulary(texts: Iterable[str], embedder: CharNgramEmbedder) -> frozenset[str]:
    """The content lemmas and concepts ("~rooms") of `texts`, with their topics and the lemmas themselves."""
    out: set[str] = set()
    for text in texts:
        for word, _ in embedder.tokens(text):
            if is_content_word(word):
                out.add(lemma(word).normal_form)
                out.add(_key(word))
        out |= topics(embedder.tokens(text))
    return frozenset(out)


def topics(tokens: Sequence[tuple[str, bool]]) -> frozenset[str]:
    """What `tokens` (word, negated) measure: "duration" and the like, "#<noun>" counted by "сколько"."""
    found: set[str] = set()
    previous = ""
    for word, negated in tokens:
        counted, previous = previous == _HOW_MANY, word
        group = concept(lemma(word).normal_form) or concept(word)
        if not negated and group in TOPIC_CONCEPTS:
            found.add(group)
        elif counted and counted_noun(word):
            found.add(f"#{_key(word)}")
    return frozenset(found)


@lru_cache(maxsize=4096)
def _tag(word: str) -> tuple[str, bool]:
    """The part of speech of `word`'s first parse and whether it is pronominal ("ваш", "свой")."""
    tag = analyzer().parse(word)[0].tag
    return str(tag.POS or ""), "Apro" in tag


@lru_cache(maxsize=4096)
def _you_verb(word: str) -> bool:
    """A non-modal indicative verb in the second person plural ("делаете", "сделаете", "моете")."""
    tag = analyzer().parse(word)[0].tag
    return tag.POS == "VERB" and {"plur", "2per", "indc"} in tag and lemma(word).normal_form not in _MODALS


def closed_objects(tokens: Sequence[tuple[str, bool]]) -> frozenset[str]:
    """The objects of a yes/no question about the callee's work (see the module docstring), else none.

    Keys as in `vocabulary`: a word's concept ("~rooms") if it has one, else its lemma.
    """
    words = [w for w, _ in tokens]
    if not any(_you_verb(w) for w in words) or any(w in _OPEN_QUESTION for w in words):
        return frozenset()
    objects: set[str] = set()
    adjuncts: set[str] = set()
    in_pp = False
    for word, negated in tokens:
        pos, pronominal = _tag(word)
        if pos == "PREP":
            in_pp = True
            continue
        adjunct = in_pp and pos in _PP_POS
        in_pp = adjunct and pos != "NOUN"  # the phrase ends with its noun ("на первый раз | скидку")
        if not negated and pos in _OBJECT_POS and not pronominal and is_content_word(word):
            (adjuncts if adjunct else objects).add(_key(word))
    return frozenset(objects or adjuncts)
