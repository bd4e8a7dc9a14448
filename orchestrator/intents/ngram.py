"""A local embedder for Russian: hashed character n-grams, no model download.

Text is normalised (lower case, ё -> е, punctuation dropped, spaces collapsed); each word is
padded with spaces (" дорого ") so n-grams mark word starts and ends, and its character 2..4-grams
are hashed (CRC-32, stable across processes, unlike `hash()`) into `dim` buckets. Weights are
sublinear term frequencies (1 + ln tf), and vectors are L2-normalised, so a dot product is the
cosine similarity. Word-boundary n-grams make it robust to Russian inflection ("метров",
"метра", "метр" share " ме", "мет", "метр") and to small STT misspellings, which is most of
what a script's intents need; it knows no synonyms, so intents need varied examples.

With `lemma_weight` > 0, each content word also adds its lemma as one whole-word feature
("=оператор" from "оператора", "оператором"; `orchestrator.intents.morphology`), weighted
`lemma_weight` times a character n-gram. N-grams see shared stems; lemmas see the same word
however it is inflected, even where stems differ ("идёт"/"шли") or a short word's n-grams are
swamped by the rest of the phrase ("мне бы оператора"). Function words (prepositions,
conjunctions, particles other than the negation "не", pronouns, interjections, and the modal
"можно"/"нужно"/"надо") add no lemma, and with `function_word_weight` < 1 their n-grams weigh
less: "а", "по", "мне", "бы", "можно" say little about which intent was meant.

With `lexicon` (`orchestrator.intents.lexicon`), colloquial spellings are folded first, a few
particles that answer a call ("да", "нет", "спасибо") count as content and a few fillers
("пожалуйста", "сколько") as function words, and each word of a synonym group adds its concept
("~person" for "оператор", "сотрудник", "менеджер"), weighted `concept_weight`: the synonyms
a map's examples never use. With `negation`, the word right after "не" is negated and so is an
adjective or adverb "не-" + a known word ("неправильно" = "не правильно"): all its features are
marked, so "правильно" and "неправильно" share only the "не"; a negated word always counts as
content ("не надо"); a "не" before a perfective "вы" future ("скидку не сделаете?") is a polite
question and negates nothing. A noun counted by "сколько" ("сколько человек") has its features
marked "#": it is asked about, not asked for. A clock time as STT writes it ("9:15") is one token, "00", not a number.

`fitted(groups)` (the classifier calls it with the map's examples per label) weighs each
feature by how few labels use it, so words every intent shares ("давайте", "запишите") count
less than those that tell the labels apart.

The word-level rules (content or function word, negation, counted nouns, entity kinds) are
`orchestrator.intents.word_features`; this module holds the embedder and its weights.

Speed: lemmas and negation splits are cached per word; a caller's utterance costs well under a
millisecond to embed and score on the example maps.
"""

from __future__ import annotations

import copy
import math
import re
import zlib
from collections.abc import Sequence
from functools import lru_cache

from orchestrator.intents.embedder import SparseVector
from orchestrator.intents.entities import NUMBER_WORDS
from orchestrator.intents.lexicon import concept, fold_raw, fold_words
from orchestrator.intents.morphology import lemma
from orchestrator.intents.word_features import (
    NEGATION,
    counted_noun,
    entity_kinds,
    is_content_word,
    is_preposition,
    polite_ne,
    split_negation,
    tagged_content,
)
from orchestrator.text import normalize

# Lemma and function-word weights were chosen on the tuning split of dialogue_maps/eval: with
# lemmas at 1 and function words at 0.6, "мне бы оператора" scores 0.51 for `operator` (0.41
# with n-grams alone); lemma weights of 1.5-2 and function weights of 0.3-0.4 gained nothing.
# The concept weight, label-frequency weighting and per-word normalisation were chosen on the
# dev set (tests/data/heldout_*.json) together with the map lint's confusions (a signal the dev
# set does not feed): concept weights 1/2/3/4 gave 90/93/94/96 of 103 dev phrases without
# label weighting and 4 was best with it (99/103, lint clean after the examples' fixes, where 3
# left 4 confusions). Normalising each word's n-grams to weigh 1 in all (tried) gained nothing
# over it and left more confusions.
LEMMA_WEIGHT = 1.0
FUNCTION_WORD_WEIGHT = 0.6
CONCEPT_WEIGHT = 4.0
LABEL_IDF = True

_LEMMA_PREFIX = "="  # never produced by n-grams, which hold letters, digits and spaces only
_CONCEPT_PREFIX = "~"
# Words after which a noun is counted, not asked for ("сколько человек приедет").
_COUNTERS = frozenset({"сколько", "несколько", "0"})
_HOW_MANY = "сколько"
_COUNTED = "#"  # marks the features of a noun counted by "сколько"
_ENTITY_PREFIX = "~@"  # "~@date", "~@time": a date or a time of day said in the text
_NEGATED = "!"  # marks the features of a negated word
# A clock time as STT writes it ("9:15", "10:30"): one token, "00", unlike a folded number "0",
# so "запишите на 9:15" is near "в 10:30", not near "метров 38".
_CLOCK_TIME = re.compile(r"(?<![\d:])([01]?\d|2[0-3]):[0-5]\d(?![\d:])")
_TIME_TOKEN = "00"
_TIME_PLACEHOLDER = "clocktimetoken"


@lru_cache(maxsize=65536)
def _bucket(gram: str, dim: int) -> int:
    return zlib.crc32(gram.encode("utf-8")) % dim


class CharNgramEmbedder:
    """`Embedder` and `SparseEmbedder` over hashed character n-grams (see the module docstring)."""

    def __init__(
        self,
        *,
        dim: int = 8192,
        min_n: int = 2,
        max_n: int = 4,
        fold_numbers: bool = True,
        lemma_weight: float = LEMMA_WEIGHT,
        function_word_weight: float = FUNCTION_WORD_WEIGHT,
        concept_weight: float = CONCEPT_WEIGHT,
        lexicon: bool = True,
        negation: bool = True,
        label_idf: bool = LABEL_IDF,
        entity_kinds: bool = True,
    ) -> None:
        if (
            dim < 16
            or not 1 <= min_n <= max_n
            or lemma_weight < 0
            or concept_weight < 0
            or not 0 <= function_word_weight <= 1
        ):
            raise ValueError(
                "need dim >= 16, 1 <= min_n <= max_n, lemma_weight >= 0, concept_weight >= 0,"
                " 0 <= function_word_weight <= 1"
            )
        self.dim = dim
        self.min_n = min_n
        self.max_n = max_n
        self.fold_numbers = fold_numbers
        self.lemma_weight = lemma_weight
        self.function_word_weight = function_word_weight
        self.concept_weight = concept_weight
        self.lexicon = lexicon
        self.negation = negation
        self.label_idf = label_idf
        self.entity_kinds = entity_kinds
        self._idf: dict[int, float] = {}
        self.name = (
            f"char-ngram-{min_n}-{max_n}-d{dim}"
            + ("-fold" if fold_numbers else "")
            + (f"-lemma{lemma_weight:g}" if lemma_weight else "")
            + (f"-fw{function_word_weight:g}" if function_word_weight != 1.0 else "")
            + (f"-lex{concept_weight:g}" if lexicon else "")
            + ("-neg" if negation else "")
            + ("-ent" if entity_kinds else "")
        )

    def words(self, text: str) -> list[str]:
        """The normalised words of `text`, as the features see them.

        With `fold_numbers`, each run of number words is "0" and a clock time ("9:15") is "00":
        folding makes "55 кв м" and "метров тридцать восемь" share a feature (which number an
        example happens to use says nothing about the intent), and a time stays apart from an
        amount. With `lexicon`, colloquial spellings are folded (`lexicon.SPELLINGS`); with
        `negation`, a negated adjective or adverb is split ("неправильно" -> "не", "правильно").
        """
        if self.fold_numbers:
            text = _CLOCK_TIME.sub(f" {_TIME_PLACEHOLDER} ", text)
        if self.lexicon:
            text = fold_raw(text)
        words = [w for w in normalize(text).split(" ") if w]
        if self.lexicon:
            words = fold_words(words)
        if self.negation:
            words = [part for w in words for part in split_negation(w)]
            words = [w for i, w in enumerate(words) if not polite_ne(w, words[i + 1 : i + 2])]
        if not self.fold_numbers:
            return words
        out: list[str] = []
        for w in words:
            if w == _TIME_PLACEHOLDER:
                out.append(_TIME_TOKEN)
            elif w.isdigit() or w in NUMBER_WORDS:
                if not out or out[-1] != "0":
                    out.append("0")
            else:
                out.append(w)
        return out

    def tokens(self, text: str) -> list[tuple[str, bool]]:
        """`words()` each with whether it is negated: the word right after "не" (with `negation`)."""
        words = self.words(text)
        if not self.negation:
            return [(w, False) for w in words]
        out: list[tuple[str, bool]] = []
        for i, w in enumerate(words):
            before = words[i - 1] if i > 0 else ""
            if before != NEGATION and is_preposition(before) and i > 1:
                before = words[i - 2]  # "не с роботом", "не к тому врачу": the noun is negated
            out.append((w, before == NEGATION and w != NEGATION and not is_preposition(w)))
        return out

    def _is_content(self, word: str) -> bool:
        if self.lexicon:
            return is_content_word(word)
        if word == "0" or word.isdigit():
            return True
        return tagged_content(word)

    def features(self, text: str) -> dict[str, tuple[int, float]]:
        """Each feature of `text` with its count and weight (for inspection and tests).

        Features are the words' character n-grams, "=lemma" features (with `lemma_weight`) and
        "~concept" features (with `concept_weight`, `lexicon.CONCEPTS`). An n-gram's weight is
        the largest of its words' weights: 1, or `function_word_weight` for a function word (see
        `is_content_word`). Every feature of a negated word is marked "!" ("!прав", "=!правильно",
        "~!yes"), so "правильно" and "неправильно" share only the "не".
        """
        feats: dict[str, tuple[int, float]] = {}

        def add(key: str, weight: float) -> None:
            count, w = feats.get(key, (0, 0.0))
            feats[key] = (count + 1, max(w, weight))

        previous = ""
        for word, negated in self.tokens(text):
            asked = previous == _HOW_MANY and counted_noun(word)
            counted, previous = previous in _COUNTERS, word
            # "сколько человек": a headcount asked, so none of its features meets a "человек" asked for
            mark = (_NEGATED if negated else "") + (_COUNTED if asked else "")
            content = negated or self._is_content(word)
            weight = 1.0 if content or self.function_word_weight == 1.0 else self.function_word_weight
            padded = f" {word} "
            grams = [
                padded[i : i + n]
                for n in range(self.min_n, self.max_n + 1)
                for i in range(len(padded) - n + 1)
            ]
            for gram in grams:
                add(mark + gram, weight)
            if not content:
                continue
            lem = word if word == "0" or word.isdigit() else lemma(word).normal_form
            if self.lemma_weight:
                add(_LEMMA_PREFIX + mark + lem, self.lemma_weight)
            group = (concept(lem) or concept(word)) if self.lexicon and self.concept_weight else None
            if counted and lemma(word).pos == "NOUN":
                group = None  # "сколько человек", "два человека": a headcount, not a request for one
            if group is not None:
                add(_CONCEPT_PREFIX + mark + group, self.concept_weight)
        if self.entity_kinds and self.concept_weight:
            for kind in entity_kinds(text):
                add(_ENTITY_PREFIX + kind, self.concept_weight)
        return feats

    def fitted(self, groups: Sequence[Sequence[str]]) -> CharNgramEmbedder:
        """A copy weighing each feature by how few of `groups` use it (label frequency).

        `groups` are the texts of each label (an intent's examples, a FAQ entry's questions). A
        feature found in the examples of `df` of the `n` labels weighs
        `(1 + ln(n / df)) / (1 + ln n)`: 1 when one label has it, about 0.3 when all of
        them do ("давайте", "запишите", " за"); a feature no example has weighs 1. So what
        tells the map's labels apart counts, and what they all share does not drown it ("запишите
        на 9:15" is near the time examples, not the doctor's "запишите к хирургу"). With fewer
        than two groups, or `label_idf` off, the copy weighs every feature 1.
        """
        out = copy.copy(self)
        out._idf = {}
        n = sum(1 for g in groups if g)
        if not self.label_idf or n < 2:
            return out
        df: dict[int, int] = {}
        for texts in groups:
            buckets = {_bucket(f, self.dim) for t in texts for f in self.features(t)}
            for b in buckets:
                df[b] = df.get(b, 0) + 1
        top = 1.0 + math.log(n)
        out._idf = {b: (1.0 + math.log(n / d)) / top for b, d in df.items()}
        out.name = self.name + "-idf"
        return out

    def embed_one(self, text: str) -> SparseVector:
        """Sparse unit vector of `text` (empty for text without words)."""
        vec: SparseVector = {}
        idf = self._idf
        for gram, (tf, weight) in self.features(text).items():
            b = _bucket(gram, self.dim)
            vec[b] = vec.get(b, 0.0) + weight * (1.0 + math.log(tf)) * idf.get(b, 1.0)
        norm = math.sqrt(sum(w * w for w in vec.values()))
        if norm == 0.0:
            return {}
        return {b: w / norm for b, w in vec.items()}

    def embed_sparse(self, texts: Sequence[str]) -> list[SparseVector]:
        """One sparse unit vector per text."""
        return [self.embed_one(t) for t in texts]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Dense `dim`-long unit vectors (the `Embedder` contract)."""
        out: list[list[float]] = []
        for sparse in self.embed_sparse(texts):
            dense = [0.0] * self.dim
            for b, w in sparse.items():
                dense[b] = w
            out.append(dense)
        return out


def sparse_dot(a: SparseVector, b: SparseVector) -> float:
    """Dot product of two sparse vectors (cosine, for unit vectors)."""
    if len(a) > len(b):
        a, b = b, a
    return sum(w * b.get(i, 0.0) for i, w in a.items())
