"""One SpeechKit v3 `RecognizeStreaming` gRPC call of a recognition: its requests.

A recognition (`YandexRecognitionStream`, in `yandex.py`) runs one call after another (renewal,
reconnect); they share the one `AudioBuffer` the gateway pushes into, and the counters in
`Shared`. This module is the request side of the wire protocol (protocols.md, section 5; the
responses, and reading a call to its end, are `yandex_results.py`):

- `RecognizeCall.requests()` is the call's request generator: the session options, then audio
  taken from the buffer, `chunk_frames` 20 ms frames (100 ms by default) per `chunk` as it comes
  in real time, a backlog as whole chunks of it together (up to `MAX_BATCH_MS` per request), and
  a `silence_chunk` whenever no audio has come for `keepalive_s` (the service cuts a stream
  after 5 s without data). It never takes audio once its call is over: it waits for
  data and for its own end together, and takes frames synchronously right after checking the
  call is still alive (gRPC keeps pulling a finished call's generator; `call.cancel()` is then a
  no-op), so the next call gets every frame.
- Audio on the wire is not delivered audio: when a call fails, what its generator sent may never
  have reached the service (requests in flight when it aborted), and an utterance the service
  had not finalized is gone with the session. So a call keeps every request it sent until a
  final covers it (`unconfirmed`: the service's `final_time_ms`, or the final's end), bounded
  by `max_buffered_s` (the newest that much, to the ms: the request straddling the cap keeps
  its tail); after a retryable failure the next call resends those first (`replay`), then takes
  from the buffer. What the cap trimmed and no final covers cannot be resent (`dropped_ms`).
  The end of input is the buffer's state, never a token a call takes: the next call
  half-closes again after the replay.
- It half-closes its call for renewal before 5 min / 10 MB (`renew_after_s`,
  `renew_after_bytes`), preferably in a pause (no partial pending and the audio sent last quiet
  for `renew_quiet_ms`), at the latest `renew_grace_s` later. A backlog request stops at the
  first bound; while renewal waits for a pause, audio goes 100 ms per request again, so a
  pause inside a backlog is found where it is.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from yandex.cloud.ai.stt.v3 import stt_pb2

from orchestrator.adapters.speechkit import YandexSettings
from orchestrator.adapters.stt.yandex_results import CallResults
from orchestrator.audio import FRAME_BYTES, FRAME_MS, AudioBuffer, rms
from orchestrator.contracts import Clock, SttEvent

__all__ = ["BYTES_PER_MS", "MAX_BATCH_MS", "RecognizeCall", "Shared", "max_buffered_ms", "streaming_options"]

BYTES_PER_MS = FRAME_BYTES // FRAME_MS  # 8000 Hz x 2 B / 1000 = 16

# A backlog (the loop fell behind, or audio queued during a reconnect) goes out up to this much
# audio per request, not 100 ms per request: every request is one grpc.aio write, which the
# next waits for (a round trip through gRPC's completion queue and our loop), so a call whose
# writes took longer than 100 ms on a busy loop fell behind for good (200 calls on the
# stand-ins: frames waited 1.5-2.6 s in the buffer). 1 s is 16,000 B: far under the 4 MiB a
# gRPC server takes per message by default (GRPC_DEFAULT_MAX_RECV_MESSAGE_LENGTH, grpc's
# include/grpc/impl/grpc_types.h); SpeechKit documents no per-message limit, only per stream
# (5 min, 10 MB: yandex.cloud/en/docs/speechkit/concepts/limits), which renewal keeps to.
MAX_BATCH_MS = 1000


def max_buffered_ms(settings: YandexSettings) -> int:
    """`max_buffered_s` in whole ms, rounded: truncating the float product (2.01 s is
    2009.999... ms) would cap one ms short."""
    return round(settings.max_buffered_s * 1000)


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


@dataclass(slots=True)
class Shared:
    """What the consecutive calls of one recognition share: input, output, settings, counters."""

    settings: YandexSettings
    clock: Clock
    buffer: AudioBuffer  # the one inbound buffer, filled by the gateway
    emit: Callable[[SttEvent], None]  # results out, in order
    chunk_frames: int  # 20 ms frames per audio request (5: 100 ms)
    call_id: str = ""  # the call this recognition serves, for log lines
    audio_bytes_sent: int = 0  # resent (replayed) audio counts again
    silence_ms_sent: int = 0
    # Audio (and keepalive silence) ms that failed calls sent, no final covered and no call
    # resends: trimmed at `max_buffered_s` (`RecognizeCall.dropped_ms`, summed), and all of it
    # when a renewed call fails while draining (the next call is already past it).
    resend_dropped_ms: int = 0
    answered_at: float | None = None  # the service's last response, on `clock` (None: failed since)


class _Wait(enum.Enum):
    IDLE = "idle"  # no audio came within the keepalive interval
    DEAD = "dead"  # this call is over: leave the buffer to the next one
    EOF = "eof"  # the input ended and everything was sent


@dataclass(frozen=True, slots=True)
class _Sent:
    """A request of this call that no final covers yet, and where it ends in the call's audio."""

    end_ms: int
    ms: int
    request: stt_pb2.StreamingRequest


def _request_ms(req: stt_pb2.StreamingRequest) -> int:
    if req.WhichOneof("Event") == "chunk":
        return len(req.chunk.data) // BYTES_PER_MS
    return int(req.silence_chunk.duration_ms)


def _tail(sent: _Sent, from_ms: int) -> stt_pb2.StreamingRequest:
    """The part of a request after `from_ms` (call-relative; it lies inside the request)."""
    skip = from_ms - (sent.end_ms - sent.ms)
    req = sent.request
    if req.WhichOneof("Event") == "chunk":
        return stt_pb2.StreamingRequest(chunk=stt_pb2.AudioChunk(data=req.chunk.data[skip * BYTES_PER_MS :]))
    return stt_pb2.StreamingRequest(silence_chunk=stt_pb2.SilenceChunk(duration_ms=sent.ms - skip))


class RecognizeCall(CallResults):
    """One RecognizeStreaming call: its request generator and bookkeeping (results: the base).

    `replay`: what the failed call before it had sent without a final covering it (its
    `unconfirmed_requests()`); sent first, so `base_ms` is where that audio starts.
    """

    def __init__(self, shared: Shared, base_ms: int, replay: Sequence[stt_pb2.StreamingRequest] = ()) -> None:
        super().__init__(shared, base_ms)
        # Sent (or to be resent first) and not yet covered by a final, oldest first.
        self.unconfirmed: deque[_Sent] = deque()
        self._unconfirmed_ms = 0
        self._finalized_ms = 0  # how far finals cover this call's audio (call-relative ms)
        self._replay = tuple(replay)
        for req in self._replay:
            self._keep(req, self._unconfirmed_ms + _request_ms(req))
        self.replay_ms = self._unconfirmed_ms
        self.ms_sent = 0
        self.bytes_sent = 0
        self.started_at = shared.clock.now()
        self.quiet_ms = 0  # how long the audio sent last has been quiet (a pause to renew in)
        # Set when the request generator stops: "renew", "eof" or "aborted".
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.call: grpc.aio.StreamStreamCall[Any, Any] | None = None
        self.failure: Exception | None = None  # what made the request generator raise
        # The generator's wait for audio (`_next`): the buffer's future, the deadline, its timer.
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # --- requests ---
    def _age_s(self) -> float:
        # A backlog sent after an outage goes faster than real time: the service counts audio.
        return max(self.shared.clock.now() - self.started_at, self.ms_sent / 1000)

    def _over(self, age: float) -> bool:
        """Past renewal's soft bound: the call renews in the next pause (or at the hard bound)."""
        s = self.shared.settings
        return age >= s.renew_after_s or self.bytes_sent >= s.renew_after_bytes

    def _due(self) -> bool:
        s = self.shared.settings
        age = self._age_s()
        if not self._over(age):
            return False
        hard = age >= s.renew_after_s + s.renew_grace_s or (
            self.bytes_sent >= s.renew_after_bytes + int(s.renew_grace_s * 1000 * BYTES_PER_MS)
        )
        # Partials alone come too late (the service needs some speech first), so the audio's own
        # level must show a pause too.
        return hard or (not self.in_utterance and self.quiet_ms >= s.renew_quiet_ms)

    def _end(self, why: str) -> None:
        if not self.ended.done():
            self.ended.set_result(why)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiter = self._waiter  # a generator waiting for audio returns at once (DEAD)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _dead(self) -> bool:
        return self.ended.done() or (self.call is not None and self.call.done())

    async def _next(self, timeout: float) -> list[bytes] | _Wait:
        """The next batch of frames, without ever taking one once this call is dead.

        A whole batch (`chunk_frames`) is waited for, so real-time audio goes out 100 ms per
        request; a backlog goes as several batches at once (`_batch_frames`); what is queued goes
        out anyway when the keepalive interval ends, and at the end of input.

        Per request of every call: it awaits the buffer's future alone (`_end` and the one timer
        per call, `_keepalive`, complete it too), not `asyncio.wait` (bench/stt_grpc_cost.py).
        """
        buffer = self.shared.buffer
        want = self.shared.chunk_frames
        loop = asyncio.get_running_loop()
        deadline = self._deadline = loop.time() + timeout
        while True:
            if self._dead():
                return _Wait.DEAD
            waiter = buffer.waiter(want)
            if waiter is None:  # a whole batch, or the input ended
                return buffer.take(self._batch_frames()) or _Wait.EOF
            if deadline <= loop.time():
                return buffer.take(want) or _Wait.IDLE
            if self._timer is None:
                self._timer = loop.call_at(deadline, self._keepalive)
            self._waiter = waiter
            try:
                await waiter
            except asyncio.CancelledError:
                # The buffer's future is shared with a failed call's generator that may still
                # wait on it: cancelled with that one's task, it is only a wake-up here.
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise
            finally:
                self._waiter = None

    def _keepalive(self) -> None:
        """Wake the waiting generator at its deadline (a later wait moved it on: come back then)."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or self.ended.done():
            return  # not waiting: the next wait arms it again
        loop = asyncio.get_running_loop()
        if loop.time() >= self._deadline:
            if not waiter.done():
                waiter.set_result(None)
        else:
            self._timer = loop.call_at(self._deadline, self._keepalive)

    def _batch_frames(self) -> int:
        """Frames for the next audio request: one batch, or as many whole batches as are queued.

        At most `MAX_BATCH_MS`, and never more than one batch past renewal's soft bound (audio
        counted, as the service counts it); past it, one batch per request, as in real time, so
        a pause inside a backlog is seen where it is long enough to renew in (`_due` looks only
        between requests), and the hard bound is kept as with one batch per request. Whole
        batches, so real-time audio that was woken for a little late still goes 100 ms per
        request; at the end of input the rest goes too.
        """
        shared = self.shared
        s = shared.settings
        want = shared.chunk_frames
        queued = len(shared.buffer)
        if queued <= want or self._over(self._age_s()):
            return want
        room_ms = min(
            s.renew_after_s * 1000 - self.ms_sent,
            (s.renew_after_bytes - self.bytes_sent) / BYTES_PER_MS,
        )
        n = min(queued, MAX_BATCH_MS // FRAME_MS, int(room_ms) // FRAME_MS)
        if not shared.buffer.ended:
            n -= n % want
        return max(want, n)

    async def requests(self) -> AsyncIterator[stt_pb2.StreamingRequest]:
        """The call's requests: options, then audio and keepalive silence until renewal or EOF."""
        shared = self.shared
        s = shared.settings
        yield stt_pb2.StreamingRequest(session_options=streaming_options(s))
        keepalive_ms = max(1, int(s.keepalive_s * 1000))
        try:
            for req in self._replay:  # already in `unconfirmed`, at these positions
                if self._dead():
                    return  # the rest stays unconfirmed: the next call resends it
                self._count(req)
                yield req
            while True:
                if self._due():
                    self._end("renew")
                    return
                frames = await self._next(s.keepalive_s)
                if frames is _Wait.DEAD:
                    return
                if frames is _Wait.EOF:
                    self._end("eof")
                    return
                if frames is _Wait.IDLE:
                    req = stt_pb2.StreamingRequest(
                        silence_chunk=stt_pb2.SilenceChunk(duration_ms=keepalive_ms)
                    )
                else:
                    chunk = frames[0] if len(frames) == 1 else b"".join(frames)
                    req = stt_pb2.StreamingRequest(chunk=stt_pb2.AudioChunk(data=chunk))
                self._count(req)
                self._keep(req, self.ms_sent)
                yield req
        except Exception as exc:
            # gRPC only logs it (at DEBUG) and cancels the call; keep it for the error message.
            self.failure = exc
            raise
        finally:
            # Closed by gRPC (the call failed): the recognition decides what comes next.
            self._end("aborted")

    def _count(self, req: stt_pb2.StreamingRequest) -> None:
        """Bookkeeping for one audio or silence request about to be sent."""
        s = self.shared.settings
        ms = _request_ms(req)
        self.ms_sent += ms
        if req.WhichOneof("Event") == "chunk":
            chunk = req.chunk.data
            # Measured a batch at a time (100 ms), as it would have gone in real time: a pause at
            # the end of a backlog counts, speech before it does not hide it.
            step = self.shared.chunk_frames * FRAME_BYTES
            for at in range(0, len(chunk), step):
                piece = chunk[at : at + step] if len(chunk) > step else chunk
                quiet = rms(piece) < s.renew_quiet_rms
                self.quiet_ms = self.quiet_ms + len(piece) // BYTES_PER_MS if quiet else 0
            self.bytes_sent += len(chunk)
            self.shared.audio_bytes_sent += len(chunk)
        else:
            self.quiet_ms += ms
            self.shared.silence_ms_sent += ms

    def _keep(self, req: stt_pb2.StreamingRequest, end_ms: int) -> None:
        """Hold a request until a final covers it: at most `max_buffered_s` of the newest audio,
        exactly (a request straddling the cap keeps its tail; a backlog request is up to 1 s)."""
        ms = _request_ms(req)
        self.unconfirmed.append(_Sent(end_ms, ms, req))
        self._unconfirmed_ms += ms
        cap = max_buffered_ms(self.shared.settings)
        if self._unconfirmed_ms > cap:
            self._forget_before(end_ms - cap)

    def _confirm(self, upto_ms: int) -> None:
        """The service finalized the call's audio up to `upto_ms`: no need to resend it."""
        self._finalized_ms = max(self._finalized_ms, upto_ms)
        self._forget_before(upto_ms)

    def _forget_before(self, from_ms: int) -> None:
        """Stop holding the audio before `from_ms` (call-relative): a request straddling it keeps
        its tail."""
        held = self.unconfirmed
        while held and held[0].end_ms <= from_ms:
            self._unconfirmed_ms -= held.popleft().ms
        if held and held[0].end_ms - held[0].ms < from_ms:
            first = held[0]
            tail = _Sent(first.end_ms, first.end_ms - from_ms, _tail(first, from_ms))
            held[0] = tail
            self._unconfirmed_ms -= first.ms - tail.ms

    @property
    def unconfirmed_ms(self) -> int:
        """Audio (and keepalive silence) ms the next call would resend."""
        return self._unconfirmed_ms

    @property
    def confirmed_ms(self) -> int:
        """Where the unconfirmed audio starts in this call (all of it sent: `ms_sent`)."""
        if not self.unconfirmed:
            return self.ms_sent
        first = self.unconfirmed[0]
        return first.end_ms - first.ms

    @property
    def dropped_ms(self) -> int:
        """Audio (and keepalive silence) ms sent that no final covers and the cap trimmed: what
        the next call cannot resend (between the finals' end and `confirmed_ms`)."""
        return max(0, self.confirmed_ms - self._finalized_ms)

    def unconfirmed_requests(self) -> list[stt_pb2.StreamingRequest]:
        """What the next call must resend (after this one failed), oldest first."""
        return [sent.request for sent in self.unconfirmed]

    def abandon(self) -> None:
        """The call is over: mark the generator's end if gRPC never closed it."""
        self._end("aborted")
