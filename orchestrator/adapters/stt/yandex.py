"""Streaming recognition over SpeechKit v3 `Recognizer.RecognizeStreaming` (gRPC).

Shape of one call's recognition:
- `_pump` (task "stt-pump") batches the caller's 20 ms frames into ~100 ms chunks on an internal
  queue that outlives any one gRPC stream, so audio keeps accumulating while a stream is being
  renewed or reconnected and none is lost (bounded by `max_buffered_s`).
- `_supervise` (task "stt-supervisor") opens one stream at a time. Each stream's request
  generator sends the session options, then chunks, and a `silence_chunk` whenever no audio has
  come for `keepalive_s` (the service cuts a stream after 5 s without data).
- Renewal: before 5 min / 10 MB (`renew_after_s`, `renew_after_bytes`) the request generator
  half-closes its stream, preferably in a pause (no partial pending and the audio sent last
  quiet for `renew_quiet_ms`), at the latest `renew_grace_s` later. The next stream opens at once and takes the following chunks, while the
  old one drains its last results (its reader task is kept until it ends).
- One final per utterance: with normalization on, the service sends `final` then
  `final_refinement` (normalized text). We hold the final for at most
  `final_refinement_wait_s` (or until the next event, e.g. `eou_update`) and emit ONE
  `SttResult(kind="final")` carrying the normalized text if it came in time, else the raw text;
  a late refinement is dropped. The Orchestrator treats each final as one user turn.
- Retryable failures (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, a reset
  stream, the server ending the stream on its own, a local cancel) are logged, counted
  (`reconnects`, `last_error`) and followed by a reconnect with doubling backoff; they do NOT go on
  the result queue (the Orchestrator plays an emergency phrase for every `STTError`). An `STTError`
  goes in-band only when the streamer gives up: a non-retryable failure, `reconnect_attempts`
  failures in a row, a failure after the input ended, or an unexpected error in a reader; it is
  then always non-retryable and nothing follows it.
- A stream that died never takes audio from the shared queue again: its request generator waits
  for data and for the stream's end together, and takes a chunk only while the call is alive
  (gRPC keeps pulling a finished call's generator; `call.cancel()` is then a no-op).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar, cast

import grpc
from yandex.cloud.ai.stt.v3 import stt_pb2, stt_service_pb2_grpc

from orchestrator.adapters.speechkit import YandexSettings, map_rpc_error
from orchestrator.audio import rms
from orchestrator.contracts import Clock, SttEvent
from orchestrator.domain.errors import STTError
from orchestrator.domain.models import SttResult

log = logging.getLogger(__name__)

PROVIDER = "yandex-stt"
_T = TypeVar("_T")
_BYTES_PER_MS = 16  # 8000 Hz x 2 B / 1000


def streaming_options(settings: YandexSettings) -> stt_pb2.StreamingOptions:
    """Session options: raw 8 kHz mono LINEAR16, ru-RU only, default EOU, normalization, REAL_TIME."""
    return stt_pb2.StreamingOptions(
        recognition_model=stt_pb2.RecognitionModelOptions(
            model=settings.stt_model,
            audio_format=stt_pb2.AudioFormatOptions(
                raw_audio=stt_pb2.RawAudio(
                    audio_encoding=stt_pb2.RawAudio.LINEAR16_PCM,
                    sample_rate_hertz=8000,
                    audio_channel_count=1,
                )
            ),
            text_normalization=stt_pb2.TextNormalizationOptions(
                text_normalization=stt_pb2.TextNormalizationOptions.TEXT_NORMALIZATION_ENABLED,
                profanity_filter=False,
                literature_text=False,
            ),
            language_restriction=stt_pb2.LanguageRestrictionOptions(
                restriction_type=stt_pb2.LanguageRestrictionOptions.WHITELIST,
                language_code=[settings.language],
            ),
            audio_processing_type=stt_pb2.RecognitionModelOptions.REAL_TIME,
        ),
        eou_classifier=stt_pb2.EouClassifierOptions(
            default_classifier=stt_pb2.DefaultEouClassifier(type=stt_pb2.DefaultEouClassifier.DEFAULT)
        ),
    )


class _Wait(enum.Enum):
    IDLE = "idle"  # no audio came within the keepalive interval
    DEAD = "dead"  # this stream's call is over: leave the queue to the next stream


class _Stream:
    """One RecognizeStreaming call: its request generator and its bookkeeping."""

    def __init__(self, owner: YandexSttStreamer, base_ms: int) -> None:
        self.owner = owner
        self.base_ms = base_ms  # audio sent on earlier streams: makes result times call-relative
        self.ms_sent = 0
        self.bytes_sent = 0
        self.started_at = owner._clock.now()
        self.in_utterance = False  # a partial came and its final has not
        self.quiet_ms = 0  # how long the audio sent last has been quiet (a pause to renew in)
        # Set by the request generator when it stops: "renew" or "eof".
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pending: tuple[int, SttResult] | None = None  # final waiting for its refinement
        self.pending_timer: asyncio.TimerHandle | None = None
        self.emitted_index = -1  # final_index already emitted (a late refinement is dropped)
        self.got_results = False
        self.call: grpc.aio.StreamStreamCall[Any, Any] | None = None
        self.failure: Exception | None = None  # what made the request generator raise

    def _due(self) -> bool:
        s = self.owner._settings
        # A backlog sent after an outage goes faster than real time: the service counts audio.
        age = max(self.owner._clock.now() - self.started_at, self.ms_sent / 1000)
        over = age >= s.renew_after_s or self.bytes_sent >= s.renew_after_bytes
        if not over:
            return False
        hard = age >= s.renew_after_s + s.renew_grace_s or (
            self.bytes_sent >= s.renew_after_bytes + int(s.renew_grace_s * 1000 * _BYTES_PER_MS)
        )
        # Partials alone come too late (the service needs some speech first), so the audio's own
        # level must show a pause too.
        return hard or (not self.in_utterance and self.quiet_ms >= s.renew_quiet_ms)

    def _end(self, why: str) -> None:
        if not self.ended.done():
            self.ended.set_result(why)

    def _dead(self) -> bool:
        return self.ended.done() or (self.call is not None and self.call.done())

    async def _next(self, timeout: float) -> bytes | None | _Wait:
        """The next chunk (None: input ended), without ever taking one once this stream is dead.

        No task per chunk: the pump wakes a shared future (`owner._data_waiter`) on each put,
        and the chunk is taken synchronously right after checking the call is still alive.
        """
        owner = self.owner
        chunks = owner._chunks
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._dead():
                return _Wait.DEAD
            if not chunks.empty():
                return chunks.get_nowait()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return _Wait.IDLE
            waiter = owner._data_waiter
            if waiter is None or waiter.done():
                waiter = owner._data_waiter = loop.create_future()
            await asyncio.wait((waiter, self.ended), timeout=remaining, return_when=asyncio.FIRST_COMPLETED)

    async def requests(self) -> AsyncIterator[stt_pb2.StreamingRequest]:
        s = self.owner._settings
        yield stt_pb2.StreamingRequest(session_options=streaming_options(s))
        keepalive_ms = max(1, int(s.keepalive_s * 1000))
        try:
            while True:
                if self._due():
                    self._end("renew")
                    return
                chunk = await self._next(s.keepalive_s)
                if chunk is _Wait.DEAD:
                    return
                if chunk is _Wait.IDLE:
                    self.quiet_ms += keepalive_ms
                    self.ms_sent += keepalive_ms
                    self.owner.silence_ms_sent += keepalive_ms
                    yield stt_pb2.StreamingRequest(
                        silence_chunk=stt_pb2.SilenceChunk(duration_ms=keepalive_ms)
                    )
                    continue
                if chunk is None:
                    self.owner._input_ended = True
                    self._end("eof")
                    return
                ms = len(chunk) // _BYTES_PER_MS
                self.quiet_ms = self.quiet_ms + ms if rms(chunk) < s.renew_quiet_rms else 0
                self.bytes_sent += len(chunk)
                self.ms_sent += ms
                self.owner.audio_bytes_sent += len(chunk)
                yield stt_pb2.StreamingRequest(chunk=stt_pb2.AudioChunk(data=chunk))
        except Exception as exc:
            # gRPC only logs it (at DEBUG) and cancels the call; keep it for the error message.
            self.failure = exc
            raise
        finally:
            # Closed by gRPC (the call failed): the supervisor decides what comes next.
            self._end("aborted")

    def abandon(self) -> None:
        """The call is over: mark the generator's end if gRPC never closed it."""
        self._end("aborted")

    # --- results ---
    def handle(self, resp: stt_pb2.StreamingResponse) -> None:
        event = resp.WhichOneof("Event")
        # Progress that resets the reconnect budget: not the WORKING status every stream starts with.
        self.got_results = self.got_results or event != "status_code"
        if event == "final_refinement":
            ref = resp.final_refinement
            # A refinement follows its final directly, so a held final takes it even if the
            # indexes disagree (they should not; the held final is the only candidate anyway).
            if self.pending is not None:
                alt = _best(ref.normalized_text)
                raw = self.pending[1]
                text = alt.text if alt is not None and alt.text.strip() else raw.text
                self._emit_pending(text)
            return  # late or unmatched refinement: its final went out already
        self.flush()  # any other event means the held final is complete
        if event == "partial":
            alt = _best(resp.partial)
            if alt is not None and alt.text.strip():
                self.in_utterance = True
                self.owner._put(self._result(alt, is_final=False, kind="partial"))
        elif event == "final":
            self.in_utterance = False
            alt = _best(resp.final)
            index = resp.audio_cursors.final_index
            if alt is None or not alt.text.strip() or index <= self.emitted_index:
                return
            self.pending = (index, self._result(alt, is_final=True, kind="final"))
            loop = asyncio.get_running_loop()
            self.pending_timer = loop.call_later(self.owner._settings.final_refinement_wait_s, self.flush)
        elif event == "status_code" and resp.status_code.code_type == stt_pb2.WARNING:
            log.warning("SpeechKit warning: %s", resp.status_code.message)

    def flush(self) -> None:
        """Emit the held final with its raw text (no refinement came in time)."""
        if self.pending is not None:
            self._emit_pending(self.pending[1].text)

    def _emit_pending(self, text: str) -> None:
        assert self.pending is not None
        index, res = self.pending
        self.pending = None
        if self.pending_timer is not None:
            self.pending_timer.cancel()
            self.pending_timer = None
        self.emitted_index = index
        self.owner._put(
            SttResult(
                text=text,
                is_final=True,
                confidence=res.confidence,
                kind="final",
                audio_start_ms=res.audio_start_ms,
                audio_end_ms=res.audio_end_ms,
                received_at=res.received_at,
            )
        )

    def _result(self, alt: stt_pb2.Alternative, *, is_final: bool, kind: str) -> SttResult:
        return SttResult(
            text=alt.text,
            is_final=is_final,
            confidence=alt.confidence,
            kind="final" if kind == "final" else "partial",
            audio_start_ms=self.base_ms + alt.start_time_ms,
            audio_end_ms=self.base_ms + alt.end_time_ms,
            received_at=self.owner._clock.now(),
        )


def _best(update: stt_pb2.AlternativeUpdate) -> stt_pb2.Alternative | None:
    return update.alternatives[0] if update.alternatives else None


def _crash(reader: asyncio.Task[STTError | None]) -> STTError | None:
    """A non-retryable STTError for a reader that raised or was cancelled, else None."""
    if reader.cancelled():
        # Only stop_recognition() cancels readers, and it cancels the supervisor too.
        return STTError("STT stream reader was cancelled", provider=PROVIDER, retryable=False)
    exc = reader.exception()
    if exc is None:
        return None
    log.error("STT stream reader failed", exc_info=exc)
    return STTError(
        f"STT stream reader failed: {type(exc).__name__}: {exc}", provider=PROVIDER, retryable=False
    )


class YandexSttStreamer:
    """`STTStreamer` for one call over SpeechKit v3 streaming recognition."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        settings: YandexSettings,
        *,
        clock: Clock,
        request_id: str | None = None,
        iam_token: str | None = None,
    ) -> None:
        self._channel = channel
        self._stub = stt_service_pb2_grpc.RecognizerStub(channel)
        self._settings = settings
        self._clock = clock
        self._metadata = settings.metadata(request_id, iam_token=iam_token)
        chunk_bytes = max(320, settings.chunk_ms * _BYTES_PER_MS)
        self._chunk_bytes = chunk_bytes - chunk_bytes % 2
        max_chunks = max(1, int(settings.max_buffered_s * 1000 / max(1, settings.chunk_ms)))
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=max_chunks)
        self._results: asyncio.Queue[SttEvent] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._data_waiter: asyncio.Future[None] | None = None  # set by the pump on each put
        self._input_ended = False
        self._stopped = False
        # Counters, for tests and metrics.
        self.streams_opened = 0
        self.reconnects = 0  # retryable failures recovered from by reconnecting
        self.last_error: STTError | None = None  # the latest of them
        self.audio_bytes_sent = 0
        self.silence_ms_sent = 0
        self.chunks_dropped = 0

    # --- STTStreamer ---
    def start_recognition(self, audio_queue: asyncio.Queue[bytes | None]) -> asyncio.Queue[SttEvent]:
        """Start recognising `audio_queue` (8 kHz slin, None ends it); results go to the queue returned."""
        if self._results is not None:
            raise RuntimeError("start_recognition() called twice on one YandexSttStreamer")
        self._results = asyncio.Queue()
        self._spawn(self._pump(audio_queue), "stt-pump")
        self._spawn(self._supervise(), "stt-supervisor")
        return self._results

    async def stop_recognition(self) -> None:
        """Cancel the streams and wait for every task to end. Idempotent."""
        self._stopped = True
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks)  # our caller's own cancellation still propagates
        self._tasks.clear()

    # --- internals ---
    def _spawn(self, coro: Coroutine[object, object, _T], name: str) -> asyncio.Task[_T]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _put(self, event: SttEvent) -> None:
        assert self._results is not None
        self._results.put_nowait(event)

    def _enqueue(self, chunk: bytes | None) -> None:
        q = self._chunks
        while q.full():
            # The stream has been down for `max_buffered_s`: keep the newest audio.
            q.get_nowait()
            self.chunks_dropped += 1
        q.put_nowait(chunk)
        waiter, self._data_waiter = self._data_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _pump(self, audio_queue: asyncio.Queue[bytes | None]) -> None:
        buf = bytearray()
        size = self._chunk_bytes
        while True:
            frame = await audio_queue.get()
            if frame is None:
                if buf:
                    self._enqueue(bytes(buf))
                self._enqueue(None)
                return
            buf += frame
            if len(buf) >= size:
                self._enqueue(bytes(buf))
                buf.clear()

    async def _supervise(self) -> None:
        s = self._settings
        failures = 0
        base_ms = 0
        while True:
            stream = _Stream(self, base_ms)
            reader = self._spawn(self._read(stream), f"stt-read-{self.streams_opened}")
            self.streams_opened += 1
            waits: set[asyncio.Future[Any]] = {reader, stream.ended}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            why = stream.ended.result() if stream.ended.done() else None
            if why == "renew":
                # The old reader drains on its own (bounded); the next stream starts now.
                base_ms += stream.ms_sent
                failures = 0
                continue
            await asyncio.wait({reader})  # our own cancellation still propagates
            base_ms += stream.ms_sent
            crash = _crash(reader)
            if crash is not None:
                self._put(crash)  # never a silent death: the Orchestrator hears of it
                return
            err = reader.result()
            if err is None:
                return  # input ended and the last results are in
            if stream.got_results:
                failures = 0
            failures += 1
            if not err.retryable:
                self._put(err)
                return
            if self._input_ended:
                # The end of input is spent: nothing left to reconnect for. Every in-band
                # STTError means recognition is over, so this one is not retryable either.
                self._put(STTError(f"failed after the input ended: {err}", provider=PROVIDER))
                return
            if failures > s.reconnect_attempts:
                self._put(
                    STTError(
                        f"giving up after {failures - 1} reconnects: {err}",
                        provider=PROVIDER,
                        retryable=False,
                    )
                )
                return
            # Recovered by reconnecting: not the Orchestrator's business (it would apologise).
            self.reconnects += 1
            self.last_error = err
            delay = min(s.reconnect_backoff_max_s, s.reconnect_backoff_s * 2 ** (failures - 1))
            log.warning("STT stream failed (%s); reconnecting in %.2fs", err, delay)
            await asyncio.sleep(delay)

    async def _read(self, stream: _Stream) -> STTError | None:
        """Run one stream to its end; returns the failure (None after a clean half-close)."""
        s = self._settings
        try:
            async with asyncio.timeout(s.connect_timeout_s):
                await self._channel.channel_ready()
        except TimeoutError:
            stream.abandon()
            return STTError(
                f"SpeechKit not reachable within {s.connect_timeout_s}s",
                provider=PROVIDER,
                retryable=True,
            )
        call = self._stub.RecognizeStreaming(stream.requests(), metadata=self._metadata)
        stream.call = call
        loop = asyncio.get_running_loop()
        # The stream lives at most until renewal plus grace, then drains for drain_timeout_s.
        limit = s.renew_after_s + s.renew_grace_s + s.drain_timeout_s + s.keepalive_s
        err: STTError | None = None
        active = True
        try:
            async with asyncio.timeout(limit) as cm:

                def _drain_deadline(_f: object) -> None:
                    if active:  # the callback may run after the timeout block has ended
                        cm.reschedule(min(cm.when() or math.inf, loop.time() + s.drain_timeout_s))

                stream.ended.add_done_callback(_drain_deadline)
                try:
                    async for resp in call:
                        stream.handle(resp)
                finally:
                    active = False
        except grpc.aio.AioRpcError as exc:
            err = cast(STTError, map_rpc_error(exc, STTError, "RecognizeStreaming", PROVIDER))
        except TimeoutError:
            err = STTError("RecognizeStreaming did not finish in time", provider=PROVIDER, retryable=True)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # stop_recognition(): ours
            # gRPC cancelled the call under us: our request generator raised (see `failure`).
            why = f": {type(stream.failure).__name__}: {stream.failure}" if stream.failure else ""
            err = STTError(
                f"RecognizeStreaming was cancelled locally{why}", provider=PROVIDER, retryable=True
            )
        finally:
            stream.flush()
            call.cancel()
            stream.abandon()
        if err is None and stream.ended.result() not in ("renew", "eof"):
            err = STTError("SpeechKit closed the stream", provider=PROVIDER, retryable=True)
        if err is not None:
            log.debug("STT stream %s ended: %s", stream.base_ms, err)
        return err
