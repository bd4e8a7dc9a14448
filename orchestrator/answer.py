"""The LLM answer pipeline (spec 4.3): an off-script turn answered by the LLM through streaming TTS.

Rules, in order:
1. One filler cover plays from the start until the first answer audio: it is not restarted when
   the synthesis stream opens or the first LLM chunk arrives, only cut when there is audio to play.
2. The synthesis stream opens first. When it cannot (`TTSConnectionError`, or no answer within
   the provider timeout) the caller hears the non-secure response and the LLM is not asked.
3. Gate: the first LLM chunk is read before any answer audio starts. Unsafe: stop the
   generation (`AnswerStream.aclose()`), play the non-secure response, ask again (at most
   `llm_max_retries` more times).
   No chunk at all: the non-secure response (never endless fillers).
4. Safe: its text goes into the synthesis stream, then two tasks run: the pipe (the rest of the LLM
   text into the stream; an unsafe chunk ends the answer there; `end_input()` at the end) and the
   playback (stream audio to the caller; the filler is cut the moment the first chunk is ready).
5. Waiting for the first LLM chunk and the first audio is bounded by the map's operation timeout
   (`OperationTimeout`, which the caller hears as the emergency filler), and so is each gap in the
   audio.
6. Every task is owned by the answer's `TaskOwner` and cancelled and awaited when the answer
   ends, however it ends (barge-in included); the filler, the LLM answer stream and the synthesis
   stream are closed then too. That whole cleanup has one bound (`[call] provider_timeout_s`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TypeVar

from orchestrator.call_context import CallContext
from orchestrator.contracts import AnswerStream, LLMManager, SynthesisStream, TTSManager
from orchestrator.domain.errors import LLMError, ProviderError, TTSConnectionError
from orchestrator.domain.models import LLMStreamChunk, SessionState, TranscriptEntry
from orchestrator.events import CallEventKind
from orchestrator.metrics import Mark
from orchestrator.playback import Cover, FillerSequence, PlaylistPlayer
from orchestrator.tasks import TaskOwner, bounded, cancel_and_wait

log = logging.getLogger(__name__)

_T = TypeVar("_T")


async def _next(items: AsyncIterator[_T]) -> _T | None:
    """The next item, None at the end (a coroutine, so it can run as a task and be raced)."""
    return await anext(items, None)


class AnswerPipeline:
    """Answers off-script turns of one call (see the module docstring for the rules)."""

    def __init__(self, ctx: CallContext, *, player: PlaylistPlayer, tts: TTSManager, llm: LLMManager) -> None:
        self._call_id = ctx.call_id
        self._player = player
        self._tts = tts
        self._llm = llm
        self._metrics = ctx.metrics
        self._clock = ctx.clock
        self._settings = ctx.dialogue_map.settings
        self._call = ctx.call
        self._observe = ctx.observe

    async def answer(self, text: str, session: SessionState, state_fillers: Sequence[str]) -> None:
        """Speak the LLM's answer to `text`; returns when it has been played (drained).

        Raises `ProviderError` (LLM or TTS failure, `OperationTimeout`) for the caller's
        emergency filler; cancellation (barge-in) stops everything at once, and the cleanup that
        follows is bounded as a whole by `[call] provider_timeout_s`.
        """
        player, settings, metrics = self._player, self._settings, self._metrics
        outbound = player.outbound
        assert outbound is not None, "run() sets the outbound stream"
        metrics.set(model_name=self._llm.model_name)
        fillers = FillerSequence(state_fillers, settings.neutral_filler_keys)
        deadline = self._clock.now() + settings.operation_timeout_s
        opening = await player.start_cover(fillers)
        cover: Cover | None = opening
        tasks = TaskOwner(f"{self._call_id}:answer", cancel_bound_s=self._call.cancel_bound_s)
        stream: SynthesisStream | None = None
        answer: AnswerStream | None = None
        try:
            try:
                async with asyncio.timeout(self._call.provider_timeout_s):
                    stream = await self._tts.open_stream()
            except (TTSConnectionError, TimeoutError) as exc:
                log.warning("call %s: streaming TTS unavailable: %s", self._call_id, exc)
                metrics.set(error=f"tts_stream: {exc}")
                await self._play_non_secure(opening)
                cover = None
                return
            for attempt in range(settings.llm_max_retries + 1):
                if cover is None:
                    cover = await player.start_cover(fillers)
                metrics.mark(Mark.T4_LLM_REQUEST)
                metrics.set(llm_attempts=attempt + 1)
                answer = self._llm.process_user_turn(text, session, attempt=attempt)
                chunks = aiter(answer)
                first = await self._first_chunk(chunks, deadline, tasks)
                if first is not None:
                    metrics.mark(Mark.LLM_FIRST_TOKEN)
                if first is None:
                    log.warning("call %s: the LLM answered nothing", self._call_id)
                    await self._play_non_secure(cover)
                    cover = None
                    break
                if not first.is_safe:
                    metrics.set(unsafe_reason=first.safety_reason)
                    self._observe(CallEventKind.LLM_UNSAFE, reason=first.safety_reason, attempt=attempt)
                    await self._stop_answer(answer, "after an unsafe first chunk")  # before speaking
                    answer = None
                    await self._play_non_secure(cover)
                    cover = None
                    continue
                stream.push_text(first.text_chunk)
                await self._speak(first, answer, chunks, stream, cover, deadline, tasks, session)
                break
            await outbound.drain()
        finally:
            # One bound on the whole cleanup, so a barge-in is followed by listening again soon.
            what = f"clean up call {self._call_id}'s LLM answer"
            await bounded(self._release(tasks, cover, answer, stream), self._call.provider_timeout_s, what)

    async def _play_non_secure(self, cover: Cover) -> None:
        """Cut the filler and say the scripted non-secure response."""
        await cover.stop()
        await self._player.play_clip(self._settings.non_secure_response_key)
        assert self._player.outbound is not None
        await self._player.outbound.drain()

    async def _stop_answer(self, answer: AnswerStream, why: str) -> None:
        """Stop the generation now (the adapter closes its HTTP stream), bounded and logged."""
        await bounded(
            answer.aclose(), self._call.provider_timeout_s, f"stop call {self._call_id}'s LLM answer {why}"
        )

    async def _release(
        self,
        tasks: TaskOwner,
        cover: Cover | None,
        answer: AnswerStream | None,
        stream: SynthesisStream | None,
    ) -> None:
        """Stop everything the answer started; each step idempotent, failures logged."""
        await tasks.aclose()  # first: the pipe iterates the answer, the playback the stream
        steps: list[Awaitable[None]] = []
        if cover is not None:
            steps.append(cover.stop())
        if answer is not None:
            steps.append(answer.aclose())  # now, not in the garbage collector
        if stream is not None:
            steps.append(stream.aclose())
        for result in await asyncio.gather(*steps, return_exceptions=True):
            if isinstance(result, Exception):
                log.error("call %s: answer cleanup failed", self._call_id, exc_info=result)

    async def _first_chunk(
        self, chunks: AsyncIterator[LLMStreamChunk], deadline: float, tasks: TaskOwner
    ) -> LLMStreamChunk | None:
        """The gate: the first LLM chunk, before any answer audio; None when the answer is empty."""
        first = tasks.spawn(_next(chunks), "llm_first")
        try:
            await self._player.wait_ready(first, deadline)
        finally:
            if not first.done():
                await cancel_and_wait(first, timeout=tasks.cancel_bound_s)
        try:
            return first.result()
        except ProviderError:
            raise
        except Exception as exc:  # an adapter bug must still end as a provider failure
            raise LLMError(repr(exc), provider="llm", retryable=False) from exc
        finally:
            # The task keeps its failure, whose traceback (re-raised here) holds this frame: without
            # this, that reference cycle holds the call (through the frames above) past its end.
            del first

    async def _speak(
        self,
        first: LLMStreamChunk,
        answer: AnswerStream,
        chunks: AsyncIterator[LLMStreamChunk],
        stream: SynthesisStream,
        cover: Cover,
        deadline: float,
        tasks: TaskOwner,
        session: SessionState,
    ) -> None:
        said: list[str] = [first.text_chunk]
        pipe = tasks.spawn(self._pipe_llm_to_tts(answer, chunks, stream, said), "llm_pipe")
        playback = tasks.spawn(self._stream_audio(stream, cover, deadline, tasks), "llm_playback")
        try:
            await asyncio.wait({playback})
            playback.result()
        finally:
            await cancel_and_wait(pipe, playback, timeout=tasks.cancel_bound_s)
            # A failure of `playback` is re-raised here, its traceback holding this frame: naming
            # the task (which keeps the failure) would make that a cycle holding the call.
            del pipe, playback
            spoken = "".join(said).strip()
            if spoken:
                session.transcript.append(TranscriptEntry("bot", spoken))
                self._observe(CallEventKind.LLM_SAID, text=spoken)

    async def _pipe_llm_to_tts(
        self,
        answer: AnswerStream,
        chunks: AsyncIterator[LLMStreamChunk],
        stream: SynthesisStream,
        said: list[str],
    ) -> None:
        """Task `llm_pipe`: LLM text into the synthesis stream; stops at an unsafe chunk."""
        unsafe = False
        try:
            async for chunk in chunks:
                if not chunk.is_safe:
                    self._metrics.set(unsafe_tail=chunk.safety_reason)
                    unsafe = True
                    break
                if chunk.text_chunk:
                    said.append(chunk.text_chunk)
                    stream.push_text(chunk.text_chunk)
        except ProviderError as exc:
            # Mid-answer failure: what was said stays said; the answer just ends here.
            log.warning("call %s: LLM stream broke: %s", self._call_id, exc)
            self._metrics.set(error=f"llm: {exc}")
        finally:
            stream.end_input()
            self._metrics.mark(Mark.LLM_DONE)
        if unsafe:
            await self._stop_answer(answer, "after an unsafe chunk")  # what was said plays on

    async def _stream_audio(
        self, stream: SynthesisStream, cover: Cover, deadline: float, tasks: TaskOwner
    ) -> None:
        """Task `llm_playback`: synthesis audio to the caller; the filler is cut at the first chunk."""
        audio = aiter(stream)
        first = tasks.spawn(_next(audio), "tts_first")
        try:
            await self._player.wait_ready(first, deadline)
        finally:
            if not first.done():
                await cancel_and_wait(first, timeout=tasks.cancel_bound_s)
        await cover.stop()
        try:
            chunk = first.result()  # raises the synthesis failure
        finally:
            del first  # as in `_first_chunk`: the failure it keeps would hold this frame, a cycle
        if chunk is None:
            return
        self._metrics.mark(Mark.T5_TTS_FIRST_CHUNK)
        self._observe(CallEventKind.PLAY, kind="llm")
        await self._player.write(chunk, "answer")
        await self._player.stream(lambda: anext(audio, None), "answer")
