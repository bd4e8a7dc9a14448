"""A local embedder for Russian: hashed character n-grams, no model download.

Text is normalised (lower case, ё -> е, punctuation dropped, spaces collapsed); each word is
padded with spaces (" дорого ") so n-grams mark word starts and ends, and its character 2..4-grams
are hashed (CRC-32, stable across processes, unlike `hash()`) into `dim` buckets. Weights are
sublinear term frequencies (1 + ln tf), and vectors are L2-normalised, so a dot product is the
cosine similarity. Word-boundary n-grams make it robust to Russian inflection ("метров",
"метра", "метр" share " ме", "мет", "метр") and to small STT misspellings, which is most of
what a script's intents need; it knows no synonyms, so intents need varied examples.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from functools import lru_cache

from orchestrator.intents.embedder import SparseVector
from orchestrator.intents.entities import NUMBER_WORDS
from orchestrator.text import normalize


@lru_cache(maxsize=65536)
def _bucket(gram: str, dim: int) -> int:
    return zlib.crc32(gram.encode("utf-8")) % dim


class CharNgramEmbedder:
    """`Embedder` and `SparseEmbedder` over hashed character n-grams (see the module docstring)."""

    def __init__(self, *, dim: int = 8192, min_n: int = 2, max_n: int = 4, fold_numbers: bool = True) -> None:
        if dim < 16 or not 1 <= min_n <= max_n:
            raise ValueError("need dim >= 16 and 1 <= min_n <= max_n")
        self.dim = dim
        self.min_n = min_n
        self.max_n = max_n
        self.fold_numbers = fold_numbers
        self.name = f"char-ngram-{min_n}-{max_n}-d{dim}" + ("-fold" if fold_numbers else "")

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

    def features(self, text: str) -> dict[str, int]:
        """The n-grams of `text` with their counts (for inspection and tests)."""
        counts: dict[str, int] = {}
        for word in self.words(text):
            padded = f" {word} "
            for n in range(self.min_n, self.max_n + 1):
                for i in range(len(padded) - n + 1):
                    gram = padded[i : i + n]
                    counts[gram] = counts.get(gram, 0) + 1
        return counts

    def embed_one(self, text: str) -> SparseVector:
        """Sparse unit vector of `text` (empty for text without words)."""
        vec: SparseVector = {}
        for gram, tf in self.features(text).items():
            b = _bucket(gram, self.dim)
            vec[b] = vec.get(b, 0.0) + 1.0 + math.log(tf)
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
