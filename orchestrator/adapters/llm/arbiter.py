"""`IntentArbiter` over an OpenAI-compatible chat API: one short, constrained, non-streamed request.

The request names the closed set twice: in the prompt (each label with example phrases, so the
model knows what a label means) and in the response format. With `response_format="json_schema"`
the answer must be `{"label": <one of the labels or "none">}` (an enum, `strict`), which OpenAI
and servers with guided decoding (vLLM, llama.cpp, ...) enforce; `"json_object"` only asks for
JSON, for servers without schemas. Either way the answer is checked by the caller
(`orchestrator.intents.arbiter`): this adapter returns what the model said and never trusts it.

Temperature 0 and a few output tokens keep it fast; the wait is bounded by the caller (the map's
`settings.intent_arbiter.timeout_s`), whose cancellation closes the HTTP request.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import openai
from openai.types.chat import ChatCompletionMessageParam

from orchestrator.adapters.llm.openai_compat import map_openai_error
from orchestrator.domain.models import ArbiterOption

ResponseFormat = Literal["json_schema", "json_object"]
SCHEMA_NAME = "intent_choice"  # also how the stand-in recognises the request
NONE_LABEL = "none"

INSTRUCTIONS = (
    "You route one utterance of a caller on a phone line (the caller speaks Russian) to exactly one "
    'label of the closed list below, or to "none". Pick a label only when the utterance means it; '
    'a question or request no label covers, small talk, and anything unclear are "none". '
    'Reply with JSON only: {"label": "<a label from the list or none>"}.\n'
    "Labels, each with example phrases:"
)


def option_lines(options: Sequence[ArbiterOption]) -> str:
    """One line per option: `- <label>: "<example>" | "<example>"` (the stand-in parses these)."""
    return "\n".join(
        f"- {o.label}: " + " | ".join(json.dumps(e, ensure_ascii=False) for e in o.examples) for o in options
    )


class OpenAICompatArbiter:
    """`IntentArbiter`: asks the chat model for one label of the closed set (see the module docstring)."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        model: str,
        response_format: ResponseFormat = "json_schema",
        max_tokens: int = 24,
    ) -> None:
        self._client = client
        self._model = model
        self._format: ResponseFormat = response_format
        self._max_tokens = max_tokens

    @property
    def name(self) -> str:
        """The model asked, for the metrics."""
        return self._model

    def _messages(
        self, text: str, options: Sequence[ArbiterOption], context: str
    ) -> list[ChatCompletionMessageParam]:
        system = f"{INSTRUCTIONS}\n{option_lines(options)}\n- {NONE_LABEL}"
        if context:
            system += (
                f"\nThe bot's last words before the caller spoke: {json.dumps(context, ensure_ascii=False)}"
            )
        return [{"role": "system", "content": system}, {"role": "user", "content": text}]

    def _response_format(self, options: Sequence[ArbiterOption]) -> dict[str, Any]:
        if self._format == "json_object":
            return {"type": "json_object"}
        labels = [o.label for o in options] + [NONE_LABEL]
        return {
            "type": "json_schema",
            "json_schema": {
                "name": SCHEMA_NAME,
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {"label": {"type": "string", "enum": labels}},
                    "required": ["label"],
                    "additionalProperties": False,
                },
            },
        }

    async def choose(self, text: str, options: Sequence[ArbiterOption], *, context: str = "") -> str | None:
        """The label the model picked ("none" -> None); its raw text when that is not the JSON asked
        for (the caller counts it as invalid). Raises `LLMError` when the request fails."""
        try:
            # The SDK's typed overloads do not cover a response_format built at run time.
            completion = await self._client.chat.completions.create(  # type: ignore[call-overload]
                model=self._model,
                messages=self._messages(text, options, context),
                response_format=self._response_format(options),
                max_tokens=self._max_tokens,
                temperature=0,
                stream=False,
            )
        except openai.OpenAIError as exc:
            raise map_openai_error(exc, "intent arbiter") from exc
        content = (completion.choices[0].message.content or "").strip() if completion.choices else ""
        try:
            data = json.loads(content)
        except json.JSONDecodeError:
            return content or None
        label = data.get("label") if isinstance(data, dict) else None
        if not isinstance(label, str):
            return content
        return None if label == NONE_LABEL else label
