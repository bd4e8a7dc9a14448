"""The LLM answer pipeline (spec 4.3): an off-script turn answered by the LLM through streaming TTS.

Rules, in order:
1. One filler cover plays from the start until the first answer audio: it is not restarted when
   the synthesis stream opens or the first LLM chunk arrives, only cut when there is audio to play.
2. The synthesis stream opens first. When it cannot (`TTSConnectionError`, or no answer within
   the provider timeout) the caller hears the non-secure response and the LLM is not asked.
3. Gate: the first LLM chunk is read before any answer audio starts. Unsafe: abort the
   generation, play the non-secure response, ask again (at most `llm_max_retries` more times).
   No chunk at all: the non-secure response (never endless fillers).
4. Safe: its text goes into the synthesis stream, then two tasks run: the pipe (the rest of the LLM
   text into the stream; an unsafe chunk ends the answer there; `end_input()` at the end) and the
   playback (stream audio to the caller; the filler is cut the moment the first chunk is ready).
5. Waiting for the first LLM chunk and the first audio is bounded by the map's operation timeout
   (`OperationTimeout`, which the caller hears as the emergency filler), and so is each gap in the
   audio.
6. Every task is owned by the answer's `TaskOwner` and cancelled and awaited (bounded) when the
   answer ends, however it ends (barge-in included); the LLM answer stream and the synthesis
   stream are closed then too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence

from orchestrator.call_settings import CallSettings
from orchestrator.contracts import Clock, LLMManager, SynthesisStream, TTSManager
from orchestrator.dialogue_map.models import Settings
from orchestrator.domain.errors import LLMError, ProviderError, TTSConnectionError
from orchestrator.domain.models import AudioChunk, LLMStreamChunk, SessionState, TranscriptEntry
from orchestrator.events import CallEventKind, Observe
from orchestrator.metrics import Mark, MetricsLogger
from orchestrator.playback import Cover, FillerSequence, PlaylistPlayer
from orchestrator.tasks import TaskOwner, bounded, cancel_and_wait

log = logging.getLogger(__name__)


async def _next_chunk(chunks: AsyncIterator[LLMStreamChunk]) -> LLMStreamChunk | None:
    return await anext(chunks, None)


async def _next_audio(audio: AsyncIterator[AudioChunk]) -> AudioChunk | None:
    return await anext(audio, None)


class AnswerPipeline:
    """Answers off-script turns of one call (see the module docstring for the rules)."""

    def __init__(
        self,
        *,
        call_id: str,
        player: PlaylistPlayer,
        tts: TTSManager,
        llm: LLMManager,
        metrics: MetricsLogger,
        clock: Clock,
        settings: Settings,
        call: CallSettings,
        observe: Observe,
    ) -> None:
        self._call_id = call_id
        self._player = player
        self._tts = tts
        self._llm = llm
        self._metrics = metrics
        self._clock = clock
        self._settings = settings
        self._call = call
        self._observe = observe

    async def answer(self, text: str, session: SessionState, state_fillers: Sequence[str]) -> None:
        """Speak the LLM's answer to `text`; returns when it has been played (drained).

        Raises `ProviderError` (LLM or TTS failure, `OperationTimeout`) for the caller's
        emergency filler; cancellation (barge-in) stops everything at once.
        """
        player, settings, metrics = self._player, self._settings, self._metrics
        outbound = player.outbound
        assert outbound is not None, "run() sets the outbound stream"
        metrics.set(model_name=self._llm.model_name)
        fillers = FillerSequence(state_fillers, settings.neutral_filler_keys)
        deadline = self._clock.now() + settings.operation_timeout_s
        opening_cover = await player.start_cover(fillers)
        cover: Cover | None = opening_cover
        tasks = TaskOwner(f"{self._call_id}:answer", cancel_bound_s=self._call.cancel_bound_s)
        stream: SynthesisStream | None = None
        try:
            try:
                async with asyncio.timeout(self._call.provider_timeout_s):
                    stream = await self._tts.open_stream()
            except (TTSConnectionError, TimeoutError) as exc:
                log.warning("call %s: streaming TTS unavailable: %s", self._call_id, exc)
                metrics.set(error=f"tts_stream: {exc}")
                await opening_cover.stop()
                await player.play_clip(settings.non_secure_response_key)
                await outbound.drain()
                return
            for attempt in range(settings.llm_max_retries + 1):
                if cover is None:
                    cover = await player.start_cover(fillers)
                metrics.mark(Mark.T4_LLM_REQUEST)
                metrics.set(llm_attempts=attempt + 1)
                answer = self._llm.process_user_turn(text, session, attempt=attempt)
                chunks = aiter(answer)
                try:
                    first = await self._first_chunk(chunks, deadline, tasks)
                    if first is None:
                        log.warning("call %s: the LLM answered nothing", self._call_id)
                        await cover.stop()
                        cover = None
                        await player.play_clip(settings.non_secure_response_key)
                        break
                    if not first.is_safe:
                        metrics.set(unsafe_reason=first.safety_reason)
                        self._observe(CallEventKind.LLM_UNSAFE, reason=first.safety_reason, attempt=attempt)
                        await self._bounded("abort the generation", self._llm.abort_generation())
                        await cover.stop()
                        cover = None
                        await player.play_clip(settings.non_secure_response_key)
                        continue
                    stream.push_text(first.text_chunk)
                    await self._speak(first, chunks, stream, cover, deadline, tasks, session)
                    break
                finally:
                    await self._bounded("close the LLM answer", answer.aclose())  # now, not in the GC
            await outbound.drain()
        finally:
            await tasks.aclose()
            if cover is not None:
                await cover.stop()
            if stream is not None:
                await self._bounded("close the synthesis stream", stream.aclose())  # idempotent
            await self._bounded("abort the generation", self._llm.abort_generation())

    async def _bounded(self, what: str, step: Awaitable[None]) -> None:
        """Cleanup that must neither hang the turn nor mask why it ended: bounded, logged."""
        await bounded(step, self._call.provider_timeout_s, f"{what} (call {self._call_id})")

    async def _first_chunk(
        self, chunks: AsyncIterator[LLMStreamChunk], deadline: float, tasks: TaskOwner
    ) -> LLMStreamChunk | None:
        """The gate: the first LLM chunk, before any answer audio; None when the answer is empty."""
        first = tasks.spawn(_next_chunk(chunks), "llm_first")
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

    async def _speak(
        self,
        first: LLMStreamChunk,
        chunks: AsyncIterator[LLMStreamChunk],
        stream: SynthesisStream,
        cover: Cover,
        deadline: float,
        tasks: TaskOwner,
        session: SessionState,
    ) -> None:
        said: list[str] = [first.text_chunk]
        pipe = tasks.spawn(self._pipe_llm_to_tts(chunks, stream, said), "llm_pipe")
        playback = tasks.spawn(self._stream_audio(stream, cover, deadline, tasks), "llm_playback")
        try:
            await asyncio.wait({playback})
            playback.result()
        finally:
            await cancel_and_wait(pipe, playback, timeout=tasks.cancel_bound_s)
            spoken = "".join(said).strip()
            if spoken:
                session.transcript.append(TranscriptEntry("bot", spoken))
                self._observe(CallEventKind.LLM_SAID, text=spoken)

    async def _pipe_llm_to_tts(
        self, chunks: AsyncIterator[LLMStreamChunk], stream: SynthesisStream, said: list[str]
    ) -> None:
        """Task `llm_pipe`: LLM text into the synthesis stream; stops at an unsafe chunk."""
        try:
            async for chunk in chunks:
                if not chunk.is_safe:
                    self._metrics.set(unsafe_tail=chunk.safety_reason)
                    await self._bounded("abort the generation", self._llm.abort_generation())
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

    async def _stream_audio(
        self, stream: SynthesisStream, cover: Cover, deadline: float, tasks: TaskOwner
    ) -> None:
        """Task `llm_playback`: synthesis audio to the caller; the filler is cut at the first chunk."""
        audio = aiter(stream)
        first = tasks.spawn(_next_audio(audio), "tts_first")
        try:
            await self._player.wait_ready(first, deadline)
        finally:
            if not first.done():
                await cancel_and_wait(first, timeout=tasks.cancel_bound_s)
        await cover.stop()
        chunk = first.result()  # raises the synthesis failure
        if chunk is None:
            return
        self._metrics.mark(Mark.T5_TTS_FIRST_CHUNK)
        self._observe(CallEventKind.PLAY, kind="llm")
        await self._player.write(chunk, "answer")
        await self._player.stream(lambda: anext(audio, None), "answer")
