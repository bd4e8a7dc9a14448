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
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from functools import lru_cache

from orchestrator.intents.embedder import SparseVector
from orchestrator.intents.entities import NUMBER_WORDS
from orchestrator.intents.morphology import lemma
from orchestrator.text import normalize

# Chosen on the tuning split of dialogue_maps/eval (never on tests/data/heldout_*.json): with
# lemmas at 1 and function words at 0.6, "мне бы оператора" scores 0.51 for `operator` (0.41
# with n-grams alone) and the tuning split stays at 61/64; lemma weights of 1.5-2 and function
# weights of 0.3-0.4 gained nothing there and cost a dental tuning phrase or an off-script one.
LEMMA_WEIGHT = 1.0
FUNCTION_WORD_WEIGHT = 0.6

# Parts of speech whose lemmas carry no intent (OpenCorpora tags); "не" is kept, see the docstring.
_FUNCTION_POS = frozenset({"PREP", "CONJ", "PRCL", "NPRO", "INTJ"})
_KEPT_FUNCTION_WORDS = frozenset({"не"})
# Modal predicatives and "быть" head requests of every kind ("можно завтра", "можно картой",
# "можно с человеком"): as weak as function words, whatever their tag.
_FUNCTION_LEMMAS = frozenset({"можно", "нужно", "надо", "быть"})
_LEMMA_PREFIX = "="  # never produced by n-grams, which hold letters, digits and spaces only


def is_content_word(word: str) -> bool:
    """Whether a normalised word may say which intent was meant (see the module docstring)."""
    if word == "0" or word.isdigit():
        return True
    lem = lemma(word)
    if lem.normal_form in _FUNCTION_LEMMAS:
        return False
    return lem.pos not in _FUNCTION_POS or lem.normal_form in _KEPT_FUNCTION_WORDS


def content_lemmas(words: Sequence[str]) -> list[str]:
    """Lemmas of the content words among normalised `words` ("0", a folded number, stays "0")."""
    return [w if w == "0" or w.isdigit() else lemma(w).normal_form for w in words if is_content_word(w)]


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
    ) -> None:
        if dim < 16 or not 1 <= min_n <= max_n or lemma_weight < 0 or not 0 <= function_word_weight <= 1:
            raise ValueError(
                "need dim >= 16, 1 <= min_n <= max_n, lemma_weight >= 0, 0 <= function_word_weight <= 1"
            )
        self.dim = dim
        self.min_n = min_n
        self.max_n = max_n
        self.fold_numbers = fold_numbers
        self.lemma_weight = lemma_weight
        self.function_word_weight = function_word_weight
        self.name = (
            f"char-ngram-{min_n}-{max_n}-d{dim}"
            + ("-fold" if fold_numbers else "")
            + (f"-lemma{lemma_weight:g}" if lemma_weight else "")
            + (f"-fw{function_word_weight:g}" if function_word_weight != 1.0 else "")
        )

    def words(self, text: str) -> list[str]:
        """The normalised words of `text`; with `fold_numbers`, each run of number words is "0".

        Folding makes "55 кв м" and "метров тридцать восемь" share a feature: which number an
        example happens to use says nothing about the intent.
        """
        words = [w for w in normalize(text).split(" ") if w]
        if not self.fold_numbers:
            return words
        out: list[str] = []
        for w in words:
            if w.isdigit() or w in NUMBER_WORDS:
                if not out or out[-1] != "0":
                    out.append("0")
            else:
                out.append(w)
        return out

    def features(self, text: str) -> dict[str, tuple[int, float]]:
        """Each feature of `text` with its count and weight (for inspection and tests).

        Features are the words' character n-grams and, with `lemma_weight`, "=lemma" features.
        An n-gram's weight is the largest of its words' weights: 1, or `function_word_weight`
        for a function word (see `content_lemmas`).
        """
        feats: dict[str, tuple[int, float]] = {}

        def add(key: str, weight: float) -> None:
            count, w = feats.get(key, (0, 0.0))
            feats[key] = (count + 1, max(w, weight))

        words = self.words(text)
        for word in words:
            content = self.function_word_weight == 1.0 or is_content_word(word)
            weight = 1.0 if content else self.function_word_weight
            padded = f" {word} "
            for n in range(self.min_n, self.max_n + 1):
                for i in range(len(padded) - n + 1):
                    add(padded[i : i + n], weight)
        if self.lemma_weight:
            for lem in content_lemmas(words):
                add(_LEMMA_PREFIX + lem, self.lemma_weight)
        return feats

    def embed_one(self, text: str) -> SparseVector:
        """Sparse unit vector of `text` (empty for text without words)."""
        vec: SparseVector = {}
        for gram, (tf, weight) in self.features(text).items():
            b = _bucket(gram, self.dim)
            vec[b] = vec.get(b, 0.0) + weight * (1.0 + math.log(tf))
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
