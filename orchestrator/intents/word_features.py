"""What the n-gram embedder reads from words before their n-grams (`orchestrator.intents.ngram`).

- Content or function word (`is_content_word`, `tagged_content`): prepositions, conjunctions,
  particles other than the negation "не", pronouns, interjections and the modals "можно",
  "нужно", "надо", "быть" say little about which intent was meant; with the lexicon
  (`orchestrator.intents.lexicon`) a few answer particles ("да", "нет") count as content and a
  few fillers ("пожалуйста", "сколько") as function words. `content_lemmas` lists the content
  words' lemmas.
- Negation: an adjective or adverb "не-" + a known word splits ("неправильно" -> "не",
  "правильно": `split_negation`); a "не" before a perfective "вы" future ("скидку не
  сделаете?") is a polite question that negates nothing (`polite_ne`).
- A noun counted by "сколько" ("сколько человек": `counted_noun`): asked about, not asked for.
- The entity kinds said in a text (`entity_kinds`: "date", "time"; a bare number is no time).

Every word-level answer is cached per word (or per text): pymorphy3's parse is the cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from orchestrator.entities.dates import date_mentions
from orchestrator.entities.morph import Token
from orchestrator.entities.morph import tokens as entity_tokens
from orchestrator.entities.times import TimeMention, time_mentions
from orchestrator.intents.entities import NUMBER_WORDS
from orchestrator.intents.lexicon import CONTENT_WORDS, FILLER_WORDS, NOT_NEGATIONS
from orchestrator.intents.morphology import analyzer, lemma

__all__ = [
    "NEGATION",
    "content_lemmas",
    "counted_noun",
    "entity_kinds",
    "is_content_word",
    "is_preposition",
    "polite_ne",
    "split_negation",
    "tagged_content",
]

# Parts of speech whose lemmas carry no intent (OpenCorpora tags); "не" is kept, see the docstring.
_FUNCTION_POS = frozenset({"PREP", "CONJ", "PRCL", "NPRO", "INTJ"})
_KEPT_FUNCTION_WORDS = frozenset({"не"})
# Modal predicatives and "быть" head requests of every kind ("можно завтра", "можно картой",
# "можно с человеком"): as weak as function words, whatever their tag.
_FUNCTION_LEMMAS = frozenset({"можно", "нужно", "надо", "быть"})
# Adjectives and adverbs, the words whose "не-" form is their negation ("неправильно").
_NEGATABLE_POS = frozenset({"ADJF", "ADJS", "ADVB", "PRED", "COMP"})
NEGATION = "не"


def is_content_word(word: str) -> bool:
    """Whether a normalised word may say which intent was meant (see the module docstring)."""
    if word == "0" or word.isdigit() or word in CONTENT_WORDS:
        return True
    if word in FILLER_WORDS:
        return False
    return tagged_content(word)


def tagged_content(word: str) -> bool:
    """Whether a normalised word's lemma may say which intent was meant by its part of speech
    alone (no lexicon): not a function word's (the negation "не" is kept) nor a modal's."""
    lem = lemma(word)
    if lem.normal_form in _FUNCTION_LEMMAS:
        return False
    return lem.pos not in _FUNCTION_POS or lem.normal_form in _KEPT_FUNCTION_WORDS


def content_lemmas(words: Sequence[str]) -> list[str]:
    """Lemmas of the content words among normalised `words` ("0", a folded number, stays "0")."""
    return [w if w == "0" or w.isdigit() else lemma(w).normal_form for w in words if is_content_word(w)]


@lru_cache(maxsize=4096)
def is_preposition(word: str) -> bool:
    """Whether a normalised word's lemma is a preposition ("в", "на"; "" is none)."""
    return bool(word) and lemma(word).pos == "PREP"


@lru_cache(maxsize=4096)
def counted_noun(word: str) -> bool:
    """Whether `word` can be a noun in the genitive, as counted by "сколько" ("человек", "метров")."""
    return any(p.tag.POS == "NOUN" and "gent" in p.tag for p in analyzer().parse(word))


@lru_cache(maxsize=4096)
def _perfective_you(word: str) -> bool:
    parses = analyzer().parse(word)
    return {"VERB", "perf", "plur", "2per", "futr", "indc"} in parses[0].tag and not any(
        "impr" in p.tag for p in parses
    )


def polite_ne(word: str, following: list[str]) -> bool:
    """Whether `word` is the "не" of a polite question ("скидку не сделаете?", "не подскажете"):
    before a perfective "вы" future, which has no negated use as a request (a negated request is
    imperfective: "не звоните")."""
    return word == NEGATION and bool(following) and _perfective_you(following[0])


@lru_cache(maxsize=65536)
def split_negation(word: str) -> tuple[str, ...]:
    """("не", rest) for an adjective or adverb that is "не" + a known word of that kind, else (word,).

    "неправильно" -> ("не", "правильно"), "неинтересно" -> ("не", "интересно"); "неделя",
    "несколько" (`lexicon.NOT_NEGATIONS`) stay whole.
    """
    if len(word) < 6 or not word.startswith(NEGATION) or word in NOT_NEGATIONS:
        return (word,)
    rest = word[len(NEGATION) :]
    if (
        lemma(word).pos in _NEGATABLE_POS
        and analyzer().word_is_known(rest)
        and (lemma(rest).pos in _NEGATABLE_POS or rest in CONTENT_WORDS)  # "неверно"
    ):
        return (NEGATION, rest)
    return (word,)


# Words before a number that make it a time of day ("в пять", "к девяти", "часов в пять");
# a bare number ("метров двенадцать") is no time.
_TIME_LEADS = frozenset({"в", "во", "к", "на", "до", "после", "около", "примерно", "с", "часов", "часа"})


def _clear_time(toks: list[Token], m: TimeMention) -> bool:
    """Whether a time mention is a time of day for sure, not a bare number that could be one."""
    if m.value is None:
        return False
    first = toks[m.start]
    if first.kind in ("clock", "dec") or m.end - m.start > 1 and toks[m.end - 1].kind == "word":
        return True
    if first.kind == "word" and first.text not in NUMBER_WORDS:
        return True  # "полпятого", "в половине", "без пятнадцати", "утром", "полдень"
    return m.start > 0 and toks[m.start - 1].text in _TIME_LEADS


@lru_cache(maxsize=65536)
def entity_kinds(text: str) -> tuple[str, ...]:
    """The kinds of entity said in `text` that a feature stands for: "date", "time" (see the docstring)."""
    toks = entity_tokens(text)
    out: list[str] = []
    if any(m.value is not None for m in date_mentions(toks)):
        out.append("date")
    if any(_clear_time(toks, m) for m in time_mentions(toks)):
        out.append("time")
    return tuple(out)
