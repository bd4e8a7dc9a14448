"""Russian morphology for matching: one process-wide pymorphy3 analyzer, lemmas cached per word.

Shared by the intent classifier (lemmatized matching) and the entity extractor (numbers in any
case), so the dictionary (~15 MB, shipped in the `pymorphy3-dicts-ru` wheel, nothing downloaded
at run time) is loaded once per process, on first use (~0.1 s), not at import.

Words are expected already normalised (`orchestrator.text.normalize`: lower case, ё -> е). For an
ambiguous word the most probable parse wins (pymorphy3 sorts parses by score); that is right for
matching, where both the caller's words and the map's examples go through the same choice.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import pymorphy3

__all__ = ["Lemma", "analyzer", "lemma", "lemmatize"]

_lock = threading.Lock()
_analyzer: pymorphy3.MorphAnalyzer | None = None


def analyzer() -> pymorphy3.MorphAnalyzer:
    """The process-wide analyzer (Russian), loaded on the first call; thread-safe."""
    global _analyzer
    if _analyzer is None:
        with _lock:
            if _analyzer is None:
                import pymorphy3

                _analyzer = pymorphy3.MorphAnalyzer(lang="ru")
    return _analyzer


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
