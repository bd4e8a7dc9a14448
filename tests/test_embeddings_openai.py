"""OpenAICompatEmbedder against the OpenAI stand-in over real HTTP."""

from __future__ import annotations

import math

import openai
import pytest

from orchestrator.adapters.embeddings.openai_compat import OpenAICompatEmbedder
from orchestrator.adapters.openai_settings import OpenAISettings
from orchestrator.domain.errors import ClassifierError
from orchestrator.intents.embedder import Embedder
from testkit.standins.openai_server import OpenAIStandin


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


async def test_vectors_in_order_and_cached(
    openai_standin: OpenAIStandin, openai_client: openai.AsyncOpenAI
) -> None:
    emb = OpenAICompatEmbedder(openai_client, OpenAISettings(embeddings_model="text-embedding-3-small"))
    assert isinstance(emb, Embedder) and emb.name == "openai:text-embedding-3-small"
    texts = ["сколько стоит доставка", "стоимость доставки", "позовите оператора", ""]
    vecs = await emb.embed(texts)
    assert len(vecs) == 4 and all(len(v) == 64 for v in vecs)
    assert cosine(vecs[0], vecs[1]) > cosine(vecs[0], vecs[2])
    assert emb.requests_made == 1
    # Cached texts cost nothing; only the new one is sent.
    again = await emb.embed(["позовите оператора", "сколько стоит доставка", "новый текст"])
    assert again[:2] == [vecs[2], vecs[0]]
    assert emb.requests_made == 2
    assert openai_standin.requests[-1][1]["input"] == ["новый текст"]
    await emb.embed(texts)
    assert emb.requests_made == 2


async def test_failure_is_a_classifier_error(openai_standin: OpenAIStandin) -> None:
    down = openai.AsyncOpenAI(base_url="http://127.0.0.1:1/v1", api_key="x", max_retries=0)
    with pytest.raises(ClassifierError, match="embeddings") as exc:
        await OpenAICompatEmbedder(down, OpenAISettings(embeddings_model="m")).embed(["привет"])
    assert exc.value.retryable
    await down.close()
