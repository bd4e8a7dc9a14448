"""TelephonyGateway: one call's AudioSocket leg, seen by the Orchestrator as inbound and outbound audio.

Inbound (caller -> STT): each message from Asterisk is converted to 8 kHz if it came at another
rate (kinds 0x11-0x18), cut into 20 ms frames, run through the VAD and put in a bounded queue that
`read_frame()` drains. VAD and DTMF signals go to the `VoiceListener` synchronously, inside the
socket callback, so barge-in reacts within the frame that confirmed the speech.

When the queue is full the OLDEST frame is dropped (and counted): a reader that fell behind is
better served by recent audio, since STT results about what the caller said a while ago arrive too
late to steer the dialogue, and the stream stays continuous from the newest frames on.

Outbound (bot -> caller): `outbound` is a `Playout` registered with the shared `Pacer` at
construction, so paced silence starts the moment the UUID has arrived (keeps Asterisk's
read loop busy: mitigation for asterisk/asterisk#2089, and the dialplan app's 2 s idle hang-up).

Hangup (EOF, 0x00, error, or `close()`): `read_frame()` returns None at once (queued audio is
dropped: nobody is left to answer), the playout is closed and leaves the pacer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from bridge.audiosocket.server import AudioSocketConnection
from bridge.pacer import Pacer
from bridge.playout import Playout, PlayoutSettings
from bridge.vad import VadEvent, VadEventKind, VadSettings, VoiceActivityDetector
from orchestrator.audio import FRAME_BYTES, SAMPLE_RATE, Resampler
from orchestrator.contracts import Clock, VoiceListener

__all__ = ["TelephonyGateway"]

log = logging.getLogger(__name__)


class TelephonyGateway:
    """`InboundAudio` + `outbound: Playout` for one call; the connection's `AudioReceiver`."""

    def __init__(
        self,
        conn: AudioSocketConnection,
        pacer: Pacer,
        *,
        clock: Clock,
        vad_settings: VadSettings | None = None,
        inbound_queue_frames: int = 100,
        playout_settings: PlayoutSettings | None = None,
        close_wait_s: float = 1.0,
    ) -> None:
        if inbound_queue_frames < 1:
            raise ValueError(f"inbound_queue_frames={inbound_queue_frames}: must be >= 1")
        self._conn = conn
        self._close_wait_s = close_wait_s  # bound on the TCP teardown in close()
        self._pacer = pacer
        self._clock = clock
        self._vad = VoiceActivityDetector(vad_settings)
        self._resampler = Resampler()
        self._partial = bytearray()  # inbound audio short of a whole 20 ms frame
        self._queue: deque[bytes] = deque()
        self._queue_max = inbound_queue_frames
        self._waiter: asyncio.Future[None] | None = None
        self._listener: VoiceListener | None = None
        self._hung_up = False
        self._closed = False
        self.frames_in = 0
        self.frames_dropped = 0
        self.speech_starts = 0
        self.speech_ends = 0
        self.dtmf_in = 0
        self.outbound = Playout(conn, playout_settings)
        pacer.add(self.outbound)
        # Last: this may deliver buffered audio, and even the hangup, synchronously.
        conn.set_receiver(self)

    @property
    def uuid(self) -> str:
        """The call's AudioSocket UUID."""
        return str(self._conn.uuid)

    @property
    def hung_up(self) -> bool:
        """Whether the AudioSocket leg has ended."""
        return self._hung_up

    @property
    def queued_frames(self) -> int:
        """Inbound frames waiting for `read_frame()`."""
        return len(self._queue)

    # --- InboundAudio ---
    async def read_frame(self) -> bytes | None:
        """Next 20 ms frame of 8 kHz slin, or None once the caller has hung up. One reader only."""
        while True:
            if self._hung_up:
                return None
            if self._queue:
                return self._queue.popleft()
            if self._waiter is not None and not self._waiter.done():
                raise RuntimeError("TelephonyGateway.read_frame() is already being awaited")
            fut = asyncio.get_running_loop().create_future()
            self._waiter = fut
            await fut

    def set_voice_listener(self, listener: VoiceListener | None) -> None:
        """Route speech start/end and DTMF to `listener` (None: drop them)."""
        self._listener = listener

    # --- AudioReceiver (called from the socket callback) ---
    def on_audio(self, pcm: bytes, sample_rate: int) -> None:
        """Inbound audio at any AudioSocket rate."""
        if self._hung_up:
            return
        if sample_rate != SAMPLE_RATE:
            pcm = self._resampler.convert(pcm, sample_rate)
        partial = self._partial
        if not partial and len(pcm) == FRAME_BYTES:
            self._frame(pcm)  # the usual case: one whole 8 kHz frame, no copy
            return
        partial += pcm
        while len(partial) >= FRAME_BYTES:
            frame = bytes(partial[:FRAME_BYTES])
            del partial[:FRAME_BYTES]
            self._frame(frame)

    def _frame(self, frame: bytes) -> None:
        self.frames_in += 1
        queue = self._queue
        if len(queue) >= self._queue_max:
            queue.popleft()
            self.frames_dropped += 1
        queue.append(frame)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        event = self._vad.process(frame, self._clock.now())
        if event is not None:
            self._on_vad(event)

    def _on_vad(self, event: VadEvent) -> None:
        listener = self._listener
        if event.kind is VadEventKind.SPEECH_START:
            self.speech_starts += 1
        else:
            self.speech_ends += 1
        if listener is None:
            return
        try:
            if event.kind is VadEventKind.SPEECH_START:
                listener.on_speech_start(event.at)
            else:
                listener.on_speech_end(event.at)
        except Exception:
            # A broken listener must not kill the call's audio path.
            log.exception("call %s: voice listener failed on %s", self.uuid, event.kind.value)

    def on_dtmf(self, digit: str) -> None:
        """A DTMF digit from the caller."""
        self.dtmf_in += 1
        listener = self._listener
        if listener is None:
            return
        try:
            listener.on_dtmf(digit, self._clock.now())
        except Exception:
            log.exception("call %s: voice listener failed on DTMF %r", self.uuid, digit)

    def on_hangup(self) -> None:
        """The AudioSocket leg ended: stop reading, stop playing."""
        if self._hung_up:
            return
        self._hung_up = True
        self._queue.clear()
        self._partial.clear()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._pacer.remove(self.outbound)
        self.outbound.close()

    # --- lifecycle ---
    async def close(self, *, hang_up: bool = True) -> None:
        """Leave the pacer and hang up the AudioSocket leg if still open. Idempotent.

        `hang_up=False` leaves the leg to its owner (the ARI controller tears it down in order).
        """
        if self._closed:
            return
        self._closed = True
        self._pacer.remove(self.outbound)
        if not hang_up:
            self.on_hangup()
            return
        if not self._conn.closed:
            self._conn.hangup()  # sends 0x00; calls on_hangup() synchronously
        self.on_hangup()
        try:
            async with asyncio.timeout(self._close_wait_s):
                await self._conn.wait_closed()
        except TimeoutError:
            log.warning("call %s: AudioSocket connection slow to close", self.uuid)

    def stats(self) -> dict[str, int]:
        """Counters for metrics and tests."""
        return {
            "frames_in": self.frames_in,
            "frames_dropped": self.frames_dropped,
            "speech_starts": self.speech_starts,
            "speech_ends": self.speech_ends,
            "dtmf_in": self.dtmf_in,
            "frames_out": self.outbound.frames_sent,
            "silence_out": self.outbound.silence_sent,
        }
