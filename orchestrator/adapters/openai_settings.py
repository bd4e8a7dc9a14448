"""What the OpenAI-compatible adapters share: their settings and the one HTTP client.

One `AsyncOpenAI` client per process serves the LLM, the moderation check and the embeddings
(`base_url` may point at any OpenAI-compatible server). The SDK's own retries are off: the
Orchestrator decides what a failed answer means for the call.
"""

from __future__ import annotations

from typing import Annotated, Literal

import openai
import pydantic.dataclasses
from pydantic import ConfigDict, Field

from orchestrator.domain.addresses import HttpUrl

__all__ = ["OpenAISettings", "openai_client"]

_Positive = Annotated[float, Field(gt=0)]


@pydantic.dataclasses.dataclass(
    frozen=True, slots=True, config=ConfigDict(extra="forbid", allow_inf_nan=False)
)
class OpenAISettings:
    """OpenAI-compatible LLM, moderation and embeddings (section `[openai]`). Times in seconds.

    The LLM's system prompt, `max_tokens` and `temperature` belong to the dialogue map
    (`settings.llm`), not here. Invalid values raise `pydantic.ValidationError` naming the field.
    """

    base_url: HttpUrl = "https://api.openai.com/v1"
    api_key: str | None = None
    timeout_s: _Positive = 10.0  # one HTTP request; also the bound on one whole LLM answer
    max_retries: Annotated[int, Field(ge=0)] = 0  # the SDK's own retries (the Orchestrator retries answers)
    # --- LLM (chat completions, streamed)
    model: str = "gpt-4o-mini"
    first_token_timeout_s: _Positive = 5.0  # no first token within this: the answer failed
    first_chunk_chars: Annotated[int, Field(ge=1)] = 120  # the first chunk is cut at a sentence end or this
    safety_timeout_s: _Positive = 3.0  # bound on the safety verdict of one chunk
    close_timeout_s: _Positive = 2.0  # bound on closing one answer's HTTP stream (abort or end)
    # --- moderation of LLM output (besides the local deny rules)
    moderation: bool = True
    moderation_model: str = "omni-moderation-latest"
    moderation_timeout_s: _Positive = 3.0
    # --- embeddings (`[providers] intents = "openai"`)
    embeddings_model: str = "text-embedding-3-small"
    embeddings_timeout_s: _Positive = 5.0
    embeddings_cache_size: Annotated[int, Field(ge=0)] = 10_000  # texts whose vectors are kept
    embeddings_batch_size: Annotated[int, Field(ge=1)] = 256  # texts per request
    # --- the constrained intent step on unsure turns (its band and timeout are the map's
    # `settings.intent_arbiter`): off, or on with this model (default: `model`) and answer format
    intent_arbiter: bool = True
    intent_arbiter_model: str | None = None
    intent_arbiter_format: Literal["json_schema", "json_object"] = "json_schema"


def openai_client(settings: OpenAISettings) -> openai.AsyncOpenAI:
    """The process-wide client; close it with `await client.close()`."""
    return openai.AsyncOpenAI(
        base_url=settings.base_url,
        api_key=settings.api_key or "not-set",
        timeout=settings.timeout_s,
        max_retries=settings.max_retries,
    )
