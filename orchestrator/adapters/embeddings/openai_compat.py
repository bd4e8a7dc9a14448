"""Text embeddings over any OpenAI-compatible `/v1/embeddings` endpoint, cached in the process.

The dialogue map's example phrases are embedded once and then served from the cache; the
caller's words are new each time. The cache is bounded (oldest entries go first).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence

import openai

from orchestrator.adapters.openai_settings import OpenAISettings
from orchestrator.domain.errors import ClassifierError

PROVIDER = "openai-embeddings"


class OpenAICompatEmbedder:
    """`Embedder`: one request for all texts not cached yet, in the order given."""

    def __init__(self, client: openai.AsyncOpenAI, settings: OpenAISettings) -> None:
        """`settings`: `embeddings_model`, `embeddings_timeout_s` (one request), the cache size
        (texts) and the batch size (texts per request)."""
        self.name = f"openai:{settings.embeddings_model}"
        self._client = client
        self._model = settings.embeddings_model
        self._timeout = settings.embeddings_timeout_s
        self._cache: OrderedDict[str, list[float]] = OrderedDict()
        self._cache_size = settings.embeddings_cache_size
        self._batch = settings.embeddings_batch_size
        self.requests_made = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text; raises `ClassifierError` when the service fails or times out."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for i in range(0, len(missing), self._batch):
            await self._fetch(missing[i : i + self._batch])
        out: list[list[float]] = []
        for t in texts:
            vec = self._cache.get(t)
            if vec is None:  # evicted by a huge batch: fetch it alone
                await self._fetch([t])
                vec = self._cache[t]
            out.append(vec)
        return out

    async def _fetch(self, batch: list[str]) -> None:
        # The API rejects empty strings; embed a single space instead (it means "no words").
        inputs = [t if t.strip() else " " for t in batch]
        try:
            async with asyncio.timeout(self._timeout):
                resp = await self._client.embeddings.create(model=self._model, input=inputs)
        except TimeoutError:
            raise ClassifierError(
                f"embeddings: no answer within {self._timeout}s", provider=PROVIDER, retryable=True
            ) from None
        except openai.APIStatusError as exc:
            retry = exc.status_code == 429 or exc.status_code >= 500
            raise ClassifierError(
                f"embeddings: HTTP {exc.status_code}: {exc.message}", provider=PROVIDER, retryable=retry
            ) from exc
        except openai.OpenAIError as exc:
            raise ClassifierError(
                f"embeddings: {type(exc).__name__}: {exc}", provider=PROVIDER, retryable=True
            ) from exc
        self.requests_made += 1
        if len(resp.data) != len(batch):
            raise ClassifierError(
                f"embeddings: asked for {len(batch)} vectors, got {len(resp.data)}", provider=PROVIDER
            )
        for item in sorted(resp.data, key=lambda d: d.index):
            self._cache[batch[item.index]] = list(item.embedding)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
