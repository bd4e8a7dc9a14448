"""What the intent classifier needs from an embeddings model.

`Embedder` is the public contract (dense vectors; an OpenAI-embeddings adapter implements it).
`SparseEmbedder` is an optional fast path: an embedder that can also return sparse, already
L2-normalised vectors lets the classifier score with dict lookups instead of dense dot products.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

SparseVector = dict[int, float]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into dense vectors whose cosine similarity tracks similarity of meaning."""

    name: str

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order. Raises `ClassifierError` when the service fails."""
        ...


@runtime_checkable
class SparseEmbedder(Embedder, Protocol):
    """An `Embedder` that also gives sparse unit vectors (index -> weight), synchronously."""

    def embed_sparse(self, texts: Sequence[str]) -> list[SparseVector]:
        """One L2-normalised sparse vector per text."""
        ...
