"""Russian morphology for matching: one process-wide pymorphy3 analyzer, lemmas cached per word.

The analyzer is the entity extractor's (`orchestrator.entities.morph.analyzer`), so the dictionary
(~15 MB, shipped in the `pymorphy3-dicts-ru` wheel, nothing downloaded at run time) is loaded
once per process, on first use (~0.1-0.2 s), not at import.

Words are expected already normalised (`orchestrator.text.normalize`: lower case, ё -> е). For an
ambiguous word the most probable parse wins (pymorphy3 sorts parses by score); that is right for
matching, where both the caller's words and the map's examples go through the same choice.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from orchestrator.entities.morph import analyzer

__all__ = ["Lemma", "analyzer", "lemma", "lemmatize"]


class Lemma(NamedTuple):
    """A word's dictionary form and part of speech (OpenCorpora tag, e.g. "NOUN", "PREP"; "" if none)."""

    normal_form: str
    pos: str


@lru_cache(maxsize=65536)
def lemma(word: str) -> Lemma:
    """The most probable lemma of one normalised word ("оператора" -> ("оператор", "NOUN")).

    Digits and unknown words come back as themselves (pymorphy3 guesses unknown Cyrillic words
    by their endings). The dictionary spells ё; the result is folded to е like normalised text.
    """
    parse = analyzer().parse(word)[0]
    return Lemma(parse.normal_form.replace("ё", "е"), str(parse.tag.POS or ""))


def lemmatize(words: list[str]) -> list[Lemma]:
    """`lemma()` of each word, in order."""
    return [lemma(w) for w in words]
