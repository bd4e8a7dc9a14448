"""The off-script answerer over any OpenAI-compatible streaming chat API.

Chunking for the safety gate: the FIRST chunk yielded is the first sentence of the answer (or,
when no sentence end comes within `first_chunk_chars`, the text up to the last space before that
many characters), so the gate judges meaningful text before anything is spoken. Later chunks
are whole sentences, each with its own verdict; the last one has `is_final=True` and the finish
reason. Every chunk's text ends with a space so the pieces concatenate for TTS.

Timeouts: no first token within `first_token_timeout_s`, or the whole answer not done within
`timeout_s`, raises `LLMError(retryable=True)` from the iteration. Closing the answer
(`AnswerStream.aclose()`, the contract's one way to stop it) closes the HTTP stream
(`await stream.close()`), which the server sees as a dropped connection; `abort_generation()` does
the same for whatever answer is running (used here before a new one, and by `shutdown()`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import openai
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from orchestrator.adapters.llm.safety import SafetyCheck, SafetyVerdict
from orchestrator.adapters.openai_settings import OpenAISettings
from orchestrator.contracts import AnswerStream
from orchestrator.dialogue_map.models import LLMSettings
from orchestrator.domain.errors import LLMError
from orchestrator.domain.models import LLMStreamChunk, SessionState
from orchestrator.tasks import bounded
from orchestrator.text import take_complete_sentences

PROVIDER = "openai-compat"
STRICTER_INSTRUCTION = (
    "Предыдущий вариант ответа отклонила проверка безопасности. Отвечай строго по теме звонка, "
    "коротко, вежливо и нейтрально; не касайся политики, медицины и не давай оценок собеседнику."
)


def map_openai_error(exc: BaseException, what: str) -> LLMError:
    """Our error for an SDK/transport failure; 429, 5xx, timeouts and dropped connections retry."""
    if isinstance(exc, openai.APIStatusError):
        retry = exc.status_code == 429 or exc.status_code >= 500
        return LLMError(f"{what}: HTTP {exc.status_code}: {exc.message}", provider=PROVIDER, retryable=retry)
    if isinstance(exc, openai.APIConnectionError | openai.APITimeoutError):
        return LLMError(f"{what}: {type(exc).__name__}: {exc}", provider=PROVIDER, retryable=True)
    # Transport errors raised mid-stream (connection dropped) are not wrapped by the SDK.
    return LLMError(f"{what}: {type(exc).__name__}: {exc}", provider=PROVIDER, retryable=True)


class OpenAICompatLLMManager:
    """`LLMManager` for one call; the client is the process's (closed by its owner)."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        settings: OpenAISettings,
        llm: LLMSettings,
        *,
        safety: SafetyCheck,
    ) -> None:
        """`settings`: the service's `[openai]` (model, timeouts, first chunk size); `llm`: the
        dialogue map's prompt and sampling (`settings.llm`)."""
        self._client = client
        self._model = settings.model
        self._system_prompt = llm.system_prompt
        self._safety = safety
        self._max_tokens = llm.max_tokens
        self._temperature = llm.temperature
        self._timeout = settings.timeout_s
        self._first_timeout = settings.first_token_timeout_s
        self._first_chars = settings.first_chunk_chars
        self._safety_timeout = settings.safety_timeout_s
        self._close_timeout = settings.close_timeout_s
        self._stream: openai.AsyncStream[ChatCompletionChunk] | None = None
        self._aborted = False

    @property
    def model_name(self) -> str:
        """Model used, for the metrics."""
        return self._model

    def _messages(self, text: str, session: SessionState, attempt: int) -> list[ChatCompletionMessageParam]:
        msgs: list[ChatCompletionMessageParam] = []
        if self._system_prompt:
            msgs.append({"role": "system", "content": self._system_prompt})
        if attempt > 0:
            msgs.append({"role": "system", "content": STRICTER_INSTRUCTION})
        history = list(session.transcript)
        if history and history[-1].role == "user" and history[-1].text == text:
            history.pop()  # the Orchestrator already logged this turn
        for entry in history:
            if entry.role == "user":
                msgs.append({"role": "user", "content": entry.text})
            else:
                msgs.append({"role": "assistant", "content": entry.text})
        msgs.append({"role": "user", "content": text})
        return msgs

    async def _verdict(self, text: str) -> SafetyVerdict:
        try:
            async with asyncio.timeout(self._safety_timeout):
                return await self._safety.check(text)
        except TimeoutError:
            return SafetyVerdict(False, f"safety check did not answer within {self._safety_timeout}s")

    async def _chunk(self, text: str, *, final: bool = False, finish: str | None = None) -> LLMStreamChunk:
        verdict = await self._verdict(text) if text.strip() else SafetyVerdict(True)
        return LLMStreamChunk(
            text_chunk=text,
            is_safe=verdict.safe,
            is_final=final,
            finish_reason=finish,
            model=self._model,
            safety_reason=verdict.reason,
        )

    def process_user_turn(self, text: str, session: SessionState, *, attempt: int = 0) -> AnswerStream:
        """The answer to `text` as an `AnswerStream`: chunks, first sentence first.

        Never raises: nothing happens until the first `async for` step (which aborts a generation
        still open). The iteration raises `LLMError` (HTTP failure, timeouts, an empty answer);
        `aclose()` on the stream closes its HTTP stream.
        """
        return self._answer(text, session, attempt)

    async def _answer(
        self, text: str, session: SessionState, attempt: int
    ) -> AsyncGenerator[LLMStreamChunk, None]:
        await self.abort_generation()
        self._aborted = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        first_deadline = min(deadline, loop.time() + self._first_timeout)
        try:
            async with asyncio.timeout_at(first_deadline):
                stream = await self._client.chat.completions.create(
                    model=self._model,
                    messages=self._messages(text, session, attempt),
                    stream=True,
                    max_tokens=self._max_tokens,
                    temperature=self._temperature,
                )
        except TimeoutError:
            raise LLMError(
                f"no response within {self._first_timeout}s", provider=PROVIDER, retryable=True
            ) from None
        except openai.OpenAIError as exc:
            raise map_openai_error(exc, "chat.completions.create") from exc
        self._stream = stream
        buffer, first_sent, got_text, finish = "", False, False, None
        it = stream.__aiter__()
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline if got_text else first_deadline):
                        chunk = await anext(it)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    what = "whole answer" if got_text else "first token"
                    limit = self._timeout if got_text else self._first_timeout
                    raise LLMError(f"{what} not within {limit}s", provider=PROVIDER, retryable=True) from None
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                finish = choice.finish_reason or finish
                delta = choice.delta.content if choice.delta is not None else None
                if not delta:
                    continue
                got_text = True
                buffer += delta
                if not first_sent:
                    piece, buffer = self._first_piece(buffer)
                    if piece:
                        first_sent = True
                        yield await self._chunk(piece)
                    continue
                sentences, buffer = take_complete_sentences(buffer)
                for sentence in sentences:
                    yield await self._chunk(sentence + " ")
        except LLMError:
            raise
        except Exception as exc:
            if self._aborted:
                return  # the stream was closed on purpose (barge-in, unsafe answer)
            raise map_openai_error(exc, "chat completion stream") from exc
        finally:
            if self._stream is stream:
                self._stream = None
            await self._close(stream)
        if self._aborted:
            return
        if not got_text:
            raise LLMError("the model returned an empty answer", provider=PROVIDER, retryable=True)
        sentences, rest = take_complete_sentences(buffer + " ")
        pieces = [s + " " for s in sentences] + ([rest.strip() + " "] if rest.strip() else [])
        for i, piece in enumerate(pieces):
            yield await self._chunk(piece, final=i == len(pieces) - 1, finish=finish)
        if not pieces:
            yield await self._chunk("", final=True, finish=finish)

    def _first_piece(self, buffer: str) -> tuple[str, str]:
        """The first sentence (or first `first_chunk_chars` up to a space) and the rest."""
        sentences, _rest = take_complete_sentences(buffer)
        if sentences:
            first = sentences[0]
            end = buffer.index(first) + len(first)
            return first + " ", buffer[end:].lstrip()
        if len(buffer) >= self._first_chars:
            cut = buffer.rfind(" ", 0, self._first_chars + 1)
            cut = cut if cut > 0 else self._first_chars
            return buffer[:cut].rstrip() + " ", buffer[cut:].lstrip()
        return "", buffer

    async def _close(self, stream: openai.AsyncStream[ChatCompletionChunk]) -> None:
        # Bounded, and a failure is logged: the answer already ended (or was abandoned) either way.
        await bounded(stream.close(), self._close_timeout, f"close the {self._model} answer stream")

    async def abort_generation(self) -> None:
        """Close the running generation's HTTP stream, if any. Idempotent."""
        stream, self._stream = self._stream, None
        if stream is not None:
            self._aborted = True
            await self._close(stream)

    async def shutdown(self) -> None:
        """Abort any generation. Idempotent; the client stays open (it is the process's)."""
        await self.abort_generation()
