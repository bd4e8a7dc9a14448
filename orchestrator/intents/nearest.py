"""Nearest-example scores: an owner's score is the best cosine between a text and its examples.

Vectors are unit length: sparse (`SparseVector`, from a `SparseEmbedder`: dict lookups) or
dense (a list from any other `Embedder`, normalized with `unit`), never mixed. `SparseIndex`
gives every owner's best score for a sparse vector in one pass over an inverted index; `dot`
is one cosine. The rules that turn these scores into an intent or a FAQ answer are
`orchestrator.intents.classifier`.
"""

from __future__ import annotations

import math
import operator

from orchestrator.intents.embedder import SparseVector
from orchestrator.intents.ngram import sparse_dot

__all__ = ["SparseIndex", "Vector", "dot", "unit"]

Vector = SparseVector | list[float]


def unit(v: list[float]) -> list[float]:
    """`v` scaled to length 1 (a zero vector as it is)."""
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v] if norm else v


def dot(a: Vector, b: Vector) -> float:
    """The dot product of two vectors of one kind (the cosine, for unit vectors)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return sparse_dot(a, b)
    if isinstance(a, list) and isinstance(b, list):
        return math.fsum(map(operator.mul, a, b))
    raise TypeError("mixed sparse and dense vectors")


class SparseIndex:
    """An inverted index over sparse example vectors: each owner's best cosine in one pass.

    Scoring walks the postings of the query's buckets only (about a tenth of the dict lookups of
    one `sparse_dot` per example); the result equals `max(sparse_dot(...))` per owner.
    """

    def __init__(self, table: dict[str, list[Vector]]) -> None:
        self._owners: list[str] = []
        self._postings: dict[int, list[tuple[int, float]]] = {}
        for owner, vectors in table.items():
            for vec in vectors:
                assert isinstance(vec, dict)
                row = len(self._owners)
                self._owners.append(owner)
                for bucket, weight in vec.items():
                    self._postings.setdefault(bucket, []).append((row, weight))
        self._empty = dict.fromkeys(table, 0.0)

    def best(self, vec: SparseVector) -> dict[str, float]:
        """Every owner's best cosine with `vec`, capped at 1 (0.0 for an owner none shares a bucket with)."""
        acc = [0.0] * len(self._owners)
        postings = self._postings
        for bucket, weight in vec.items():
            for row, w in postings.get(bucket, ()):
                acc[row] += weight * w
        out = dict(self._empty)
        for row, score in enumerate(acc):
            owner = self._owners[row]
            if score > out[owner]:
                out[owner] = score
        # min(): a text equal to an example as a bag of words scores 1 up to rounding
        return {owner: min(1.0, score) for owner, score in out.items()}
