"""Streaming recognition over SpeechKit v3 `Recognizer.RecognizeStreaming` (gRPC).

`YandexSttStreamer.open_stream()` returns a `YandexRecognitionStream` (the `RecognitionStream`
contract). Shape of one call's recognition:

- Input: the gateway calls `push_audio(frame)` in the socket callback for every 20 ms frame. The
  frame goes into the stream's one `AudioBuffer` (`max_buffered_s` of audio, drop-oldest,
  counted in `frames_dropped`): the only buffer and the only drop point between the socket and
  gRPC. It outlives any one gRPC call, so audio keeps accumulating while a call is being renewed
  or reconnected and none is lost (unless the outage outlasts the buffer).
- Task "<prefix>:supervisor" opens one gRPC call at a time (`yandex_call.RecognizeCall`: its
  request generator takes frames from the buffer, 100 ms per request in real time, a backlog up
  to 1 s per request, and sends keepalive silence; it renews before 5 min / 10 MB, preferably in
  a pause). On renewal the next call opens at once and takes the following audio while the old
  one drains its last results (its reader task, "<prefix>:read-<n>", `yandex_results.read_call`,
  is kept until it ends).
- One final per utterance (final + final_refinement merged; see `yandex_results`). The Orchestrator
  treats each final as one user turn.
- Retryable failures (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, a reset
  stream, the server ending the stream on its own, a local cancel) are logged, counted
  (`reconnects`, `last_error`) and followed by a reconnect with doubling backoff; they are NOT
  results (the Orchestrator plays an emergency phrase for every `STTError`). No audio is lost
  across them: what the failed call sent that no final covers (requests in flight when it died,
  an utterance the service had not finalized) is resent first by the next call, whose result
  times continue from there; at most the newest `max_buffered_s` of it, the rest is counted in
  `resend_dropped_ms` (so is all of it when a renewed call fails while draining: the next call
  is already past that audio, and resending it would reorder the caller's words). That holds after the input ended too (the failure raced the end
  of input): the next call resends and half-closes again; the end of input is the buffer's
  state, not something the failed call used up. An `STTError` goes in-band only when the
  streamer gives up: a non-retryable failure, `reconnect_attempts` failures in a row without
  progress (a final, or a partial beyond the resent audio), or an unexpected error in a reader;
  it is then always non-retryable, nothing follows it and iteration ends.
- Iteration ends after `end_input()` once the last call has half-closed and drained, after the
  give-up error, or at once after `aclose()`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from yandex.cloud.ai.stt.v3 import stt_pb2, stt_service_pb2_grpc

from orchestrator.adapters.speechkit import YandexSettings
from orchestrator.adapters.stt.yandex_call import (
    BYTES_PER_MS,
    RecognizeCall,
    Shared,
    max_buffered_ms,
    streaming_options,
)
from orchestrator.adapters.stt.yandex_results import PROVIDER, read_call, reader_crash
from orchestrator.audio import FRAME_BYTES, FRAME_MS, AudioBuffer
from orchestrator.contracts import Clock, SttEvent
from orchestrator.domain.errors import STTError
from orchestrator.tasks import TaskOwner, cancel_and_wait
from orchestrator.weak import weakly

__all__ = [
    "PROVIDER",
    "YandexRecognitionStream",
    "YandexSttStreamer",
    "probe_recognizer",
    "streaming_options",
]

log = logging.getLogger(__name__)


class _End:
    """The end-of-results marker on the internal result queue."""


_END = _End()


class YandexSttStreamer:
    """`STTStreamer` for one call over SpeechKit v3 streaming recognition (a factory of streams)."""

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
        self._settings = settings
        self._clock = clock
        self._request_id = request_id
        self._metadata = settings.metadata(request_id, iam_token=iam_token)

    def open_stream(self) -> YandexRecognitionStream:
        """Start recognising now (needs a running loop); failures come in-band as `STTError`."""
        return YandexRecognitionStream(
            self._channel,
            self._settings,
            clock=self._clock,
            metadata=self._metadata,
            name=f"stt-{self._request_id}" if self._request_id else "stt",
            call_id=self._request_id or "",
        )


class YandexRecognitionStream:
    """One call's recognition (`RecognitionStream`): audio pushed in, results by `async for`.

    Counters for tests and metrics: `frames_dropped`, `streams_opened`, `reconnects`,
    `last_error` (the latest retryable failure recovered from), `audio_bytes_sent`,
    `silence_ms_sent`, `resend_dropped_ms`.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        settings: YandexSettings,
        *,
        clock: Clock,
        metadata: tuple[tuple[str, str], ...] = (),
        name: str = "stt",
        call_id: str = "",
    ) -> None:
        """`call_id`: the call this recognition serves; every log line names it."""
        self._channel = channel
        self._call_id = call_id
        self._stub = stt_service_pb2_grpc.RecognizerStub(channel)
        self._metadata = metadata
        self._buffer = AudioBuffer(max(1, max_buffered_ms(settings) // FRAME_MS))
        self._shared = Shared(
            settings=settings,
            clock=clock,
            buffer=self._buffer,
            emit=weakly(self._put),  # self holds Shared: a bound method would be a cycle
            chunk_frames=max(1, settings.chunk_ms * BYTES_PER_MS // FRAME_BYTES),
            call_id=call_id,
        )
        self._results: asyncio.Queue[SttEvent | _End] = asyncio.Queue()
        self._finished = False  # the end marker is queued: nothing more goes in
        self._exhausted = False  # the consumer has seen the end marker
        self._tasks = TaskOwner(name)
        self.streams_opened = 0
        self.reconnects = 0  # retryable failures recovered from by reconnecting
        self.last_error: STTError | None = None  # the latest of them
        self._clock = clock
        # Results' audio times run on across renewals and reconnects (base_ms), so one origin
        # holds for the whole recognition: the first pushed frame's start on the call clock.
        self._origin: float | None = None
        self._tasks.spawn(self._run(), "supervisor")

    # --- RecognitionStream ---
    def push_audio(self, frame: bytes) -> None:
        """Queue 20 ms of 8 kHz slin; never blocks. Ignored after `end_input()` or `aclose()`."""
        if self._origin is None:  # the clock is read once, on the first frame
            self._origin = self._clock.now() - FRAME_MS / 1000
        self._buffer.push(frame)

    @property
    def audio_origin(self) -> float | None:
        """`AudioOrigin`: the call-clock time (s) of the results' 0 ms (the first pushed frame's
        start); None before any audio. Frames dropped by the buffer or keep-alive silence sent
        in a gap shift later audio against it (not corrected)."""
        return self._origin

    @property
    def frames_dropped(self) -> int:
        """Frames lost because SpeechKit fell behind (or was down longer than `max_buffered_s`)."""
        return self._buffer.dropped

    @property
    def answered_at(self) -> float | None:
        """When SpeechKit last answered, on `clock` (any response; None: not yet, a call failed
        since, or recognition ended)."""
        return self._shared.answered_at

    def end_input(self) -> None:
        """No more audio: what is queued is sent, then the last call half-closes."""
        self._buffer.end()

    async def aclose(self) -> None:
        """Cancel the calls and tasks (bounded) and end the iteration. Idempotent."""
        self._buffer.end()
        self._buffer.clear()
        await self._tasks.aclose()
        self._finish()

    def __aiter__(self) -> YandexRecognitionStream:
        return self

    async def __anext__(self) -> SttEvent:
        """The next result or in-band `STTError`; StopAsyncIteration at the end."""
        if self._exhausted:
            raise StopAsyncIteration
        item = await self._results.get()
        if isinstance(item, _End):
            self._exhausted = True
            raise StopAsyncIteration
        return item

    # --- counters ---
    @property
    def audio_bytes_sent(self) -> int:
        """Audio bytes sent to SpeechKit over all calls."""
        return self._shared.audio_bytes_sent

    @property
    def silence_ms_sent(self) -> int:
        """Keepalive `silence_chunk` milliseconds sent over all calls."""
        return self._shared.silence_ms_sent

    @property
    def resend_dropped_ms(self) -> int:
        """Audio ms sent that no final covered and no call resent, over all calls: beyond the
        newest `max_buffered_s` of a failed call (the rest is resent), and all of a renewed
        call that failed while draining."""
        return self._shared.resend_dropped_ms

    @property
    def results_queued(self) -> int:
        """Results (and the end marker) produced but not yet read."""
        return self._results.qsize()

    # --- internals ---
    def _put(self, event: SttEvent) -> None:
        if not self._finished:
            self._results.put_nowait(event)

    def _finish(self, error: STTError | None = None) -> None:
        """Queue the give-up error (if any) and the end marker; nothing goes in after them."""
        if self._finished:
            return
        if error is not None:
            self._results.put_nowait(error)
        self._finished = True
        self._shared.answered_at = None  # nothing answers this recognition any more
        self._results.put_nowait(_END)

    async def _run(self) -> None:
        try:
            error = await self._supervise()
        except asyncio.CancelledError:
            self._finish()
            raise
        except Exception as exc:  # a bug here must not leave the consumer waiting forever
            log.exception("call %s: STT supervisor failed", self._call_id)
            error = STTError(f"STT supervisor failed: {type(exc).__name__}: {exc}", provider=PROVIDER)
        self._finish(error)

    async def _supervise(self) -> STTError | None:
        """Run calls until the input is done (None) or recognition gives up (the error)."""
        s = self._shared.settings
        failures = 0
        base_ms = 0
        draining: set[asyncio.Task[STTError | None]] = set()  # renewed calls finishing
        replay: list[stt_pb2.StreamingRequest] = []  # a failed call's unconfirmed requests
        try:
            while True:
                call = RecognizeCall(self._shared, base_ms, replay)
                reader = self._tasks.spawn(
                    read_call(self._channel, self._stub, self._metadata, call), f"read-{self.streams_opened}"
                )
                self.streams_opened += 1
                waits: set[asyncio.Future[Any]] = {reader, call.ended}
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                why = call.ended.result() if call.ended.done() else None
                if why == "renew":
                    # The old reader drains on its own (bounded); the next call starts now.
                    base_ms += call.ms_sent
                    failures = 0
                    draining.add(reader)
                    reader.add_done_callback(draining.discard)
                    reader.add_done_callback(functools.partial(self._drained, call))
                    continue
                # Bounded by the reader's own deadlines (connect, stream cap, drain).
                await asyncio.wait({reader})
                crash = reader_crash(reader, self._call_id)
                if crash is not None:
                    return crash  # never a silent death: the Orchestrator hears of it
                err = reader.result()
                if err is None:
                    # Input ended and the last results are in; so must the renewed calls' be.
                    if draining:
                        await asyncio.wait(set(draining))
                    return None
                self._shared.answered_at = None  # not known to work until the next call answers
                if call.got_results:
                    failures = 0
                failures += 1
                if not err.retryable:
                    return err
                if failures > s.reconnect_attempts:
                    return STTError(
                        f"giving up after {failures - 1} reconnects: {err}",
                        provider=PROVIDER,
                        retryable=False,
                    )
                # Recovered by reconnecting: not the Orchestrator's business (it would apologise).
                self.reconnects += 1
                self.last_error = err
                # Whatever no final covers may never have been heard: the next call resends it.
                base_ms += call.confirmed_ms
                replay = call.unconfirmed_requests()
                self._count_dropped(call.dropped_ms, "are beyond max_buffered_s and are not resent")
                delay = min(s.reconnect_backoff_max_s, s.reconnect_backoff_s * 2 ** (failures - 1))
                log.warning(
                    "call %s: STT stream failed (%s); reconnecting in %.2fs (resending %d ms)",
                    self._call_id,
                    err,
                    delay,
                    call.unconfirmed_ms,
                )
                await asyncio.sleep(delay)
        finally:
            # Giving up: calls still draining have nothing more to say (nothing follows the error).
            await cancel_and_wait(*draining)

    def _drained(self, call: RecognizeCall, reader: asyncio.Task[STTError | None]) -> None:
        """A renewed call finished draining. If it failed, what it sent that no final covers may
        never have been heard, and the next call is past it (resending would reorder the audio):
        counted as lost with the resend losses."""
        if reader.cancelled():
            return  # the recognition itself is ending
        # A crash is logged as the supervisor's own readers' are (retrieving it here would
        # otherwise hide it: nothing else looks at a drained reader).
        failed = reader_crash(reader, self._call_id) is not None or reader.result() is not None
        if failed and (lost := call.dropped_ms + call.unconfirmed_ms):
            self._count_dropped(lost, "were sent on a renewed stream that failed while draining")

    def _count_dropped(self, ms: int, why: str) -> None:
        """Count audio sent that no final covers and no call will resend; warn the first time in
        a recognition (an outage with a long utterance would repeat it every reconnect: the
        counter has the sum)."""
        if not ms:
            return
        first = self._shared.resend_dropped_ms == 0
        self._shared.resend_dropped_ms += ms
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "call %s: STT audio not heard: %d ms that no final covered %s (max_buffered_s %d ms;"
            " counted in resend_dropped_ms; later ones at debug)",
            self._call_id,
            ms,
            why,
            max_buffered_ms(self._shared.settings),
        )


async def probe_recognizer(
    channel: grpc.aio.Channel, settings: YandexSettings, metadata: tuple[tuple[str, str], ...] = ()
) -> None:
    """Return once SpeechKit answers a recognition (the STT circuit breaker's probe).

    A real request, because a frozen server still accepts connections: the session options, no
    audio; the first response (or a clean end) is the answer. Raises `grpc.aio.AioRpcError` when
    the service fails it; never returns while it is frozen (the caller bounds it). Runs only while
    the circuit is open, so a healthy service sees at most one per outage.
    """
    stub = stt_service_pb2_grpc.RecognizerStub(channel)

    async def requests() -> AsyncIterator[stt_pb2.StreamingRequest]:
        yield stt_pb2.StreamingRequest(session_options=streaming_options(settings))

    rpc = stub.RecognizeStreaming(requests(), metadata=metadata)
    try:
        async for _ in rpc:
            return
    finally:
        rpc.cancel()
