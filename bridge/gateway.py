"""TelephonyGateway: one call's AudioSocket leg, seen by the Orchestrator as inbound and outbound audio.

Inbound (caller -> STT, the `InboundAudio` contract): each message from Asterisk is converted to
8 kHz if it came at another rate (kinds 0x11-0x18) and cut into 20 ms frames; each frame goes,
synchronously inside the socket callback, to the attached `AudioSink` (the call's recognizer:
`RecognitionStream.push_audio`), then through the VAD. VAD and DTMF signals go to the attached
`VoiceListener` the same way, so barge-in reacts within the frame that confirmed the speech
(with `[vad] batch_across_calls`, a frame that completes a Silero window is judged, and its event
delivered, from the batch's flush at the end of the loop iteration: same decisions, same times).
The gateway keeps no queue of its own: the recognizer's one bounded buffer is the only one
between the socket and the provider, and its drop counter the only one (`frames_dropped` there).

Outbound (bot -> caller): `outbound` is a `Playout` registered with the shared `Pacer` at
construction, so paced silence goes on from the gateway's start (keeps Asterisk's read loop
busy: mitigation for asterisk/asterisk#2089, and the dialplan app's 2 s idle hang-up); before
that, through the ARI setup, `bridge.ari.legs` sends it.

Recording (`recorder`, a `bridge.recording.CallRecorder` built on the connection): each inbound
frame and each frame the playout sends is also kept for the call's WAV; its owner opens and closes it.

Echo: every outbound frame's level goes to the call's `EchoGate`, which the VAD consults, so the
bot's own voice returning on the line is not taken for the caller (bridge/echo_gate.py).

Hangup (EOF, 0x00, error, or `close()`): nothing more is delivered to the listener or the sink,
`wait_hangup()` returns, the playout is closed and leaves the pacer. `hangup_reason` tells the
Orchestrator why, from the connection's `LegEnd`: a malformed message or a silent leg is a
"protocol_error" or "media_timeout" on the call's record, not a "caller_hangup". Ending the recognizer's
input is its owner's business (the Orchestrator calls `end_input()` after `wait_hangup()`).
"""

from __future__ import annotations

import asyncio
import logging

from bridge.audiosocket.server import AudioSocketConnection, LegEnd
from bridge.echo_gate import EchoGate, EchoSettings
from bridge.pacer import Pacer
from bridge.playout import FrameSink, Playout, PlayoutSettings
from bridge.recording import CallRecorder
from bridge.vad import VadEvent, VadEventKind, VadSettings, VoiceActivityDetector
from orchestrator.audio import FRAME_BYTES, SAMPLE_RATE, Resampler
from orchestrator.clock import LoopClock
from orchestrator.contracts import AudioSink, Clock, VoiceListener
from orchestrator.events import EndReason

__all__ = ["TelephonyGateway"]

log = logging.getLogger(__name__)

# The call's end reason for each way the leg can end.
_END_REASONS: dict[LegEnd, EndReason] = {
    LegEnd.PEER_HANGUP: "caller_hangup",
    LegEnd.PEER_ERROR: "protocol_error",
    LegEnd.PROTOCOL_ERROR: "protocol_error",
    LegEnd.MEDIA_TIMEOUT: "media_timeout",
    LegEnd.LOCAL: "shutdown",
    LegEnd.SERVER_CLOSING: "shutdown",
}


class TelephonyGateway:
    """`InboundAudio` + `outbound: Playout` for one call; the connection's `AudioReceiver`."""

    def __init__(
        self,
        conn: AudioSocketConnection,
        pacer: Pacer,
        *,
        clock: Clock,
        vad_settings: VadSettings | None = None,
        echo_settings: EchoSettings | None = None,
        playout_settings: PlayoutSettings | None = None,
        close_wait_s: float = 1.0,
        recorder: CallRecorder | None = None,
    ) -> None:
        self._conn = conn
        self._close_wait_s = close_wait_s  # bound on the TCP teardown in close()
        self._pacer = pacer
        self._clock = clock
        # Read per inbound frame: the loop clock's time source bound once (same values).
        self._now = clock.reader() if isinstance(clock, LoopClock) else clock.now
        self.echo = EchoGate(echo_settings)
        # With `[vad] batch_across_calls`, a frame's VAD events may come later, from the Silero
        # batch's flush (the frame's arrival times kept): they go to `_on_vad` from there.
        self._vad = VoiceActivityDetector(vad_settings, self.echo, self._on_vad)
        self._resampler = Resampler()
        self._partial = bytearray()  # inbound audio short of a whole 20 ms frame
        self._listener: VoiceListener | None = None
        self._audio: AudioSink | None = None
        self._hung_up = False
        self._hangup = asyncio.Event()
        self._closed = False
        self.frames_in = 0
        self.speech_starts = 0
        self.speech_onsets = 0
        self.speech_ends = 0
        self.dtmf_in = 0
        # With a recorder, the playout sends through it (it keeps each frame, then sends it on);
        # either way the echo gate hears every frame that goes out.
        self.recorder = recorder
        sink: FrameSink = conn if recorder is None else recorder
        self.outbound = Playout(sink, playout_settings, monitor=self.echo)
        pacer.add(self.outbound)
        # Last: this may deliver buffered audio, and even the hangup, synchronously.
        conn.set_receiver(self)

    @property
    def uuid(self) -> str:
        """The call's AudioSocket UUID."""
        return str(self._conn.uuid)

    # --- InboundAudio ---
    def attach(self, listener: VoiceListener | None, audio: AudioSink | None) -> None:
        """Route voice activity and DTMF to `listener`, every inbound 20 ms frame to `audio`.

        Both are called synchronously in the socket callback; None detaches. After the hang-up
        nothing more is delivered (and nothing is kept: an attach then is ignored).
        """
        if self._hung_up:
            return
        self._listener = listener
        self._audio = audio

    @property
    def hung_up(self) -> bool:
        """Whether the AudioSocket leg has ended."""
        return self._hung_up

    async def wait_hangup(self) -> None:
        """Return once the AudioSocket leg has ended (at once if it already has)."""
        await self._hangup.wait()

    @property
    def hangup_reason(self) -> EndReason:
        """Why the leg ended, as a call end reason ("caller_hangup" while it is up)."""
        cause = self._conn.end_cause
        return "caller_hangup" if cause is None else _END_REASONS[cause]

    # --- AudioReceiver (called from the socket callback) ---
    def on_audio(self, pcm: bytes, sample_rate: int) -> None:
        """Inbound audio at any AudioSocket rate."""
        if self._hung_up:
            return
        if sample_rate != SAMPLE_RATE or len(pcm) != FRAME_BYTES or self._partial:
            self._reframe(pcm, sample_rate)
            return
        # The usual case, inline (it runs per frame): one whole 8 kHz frame, no copy.
        self.frames_in += 1
        recorder = self.recorder
        if recorder is not None:
            recorder.caller_frame(pcm)
        audio = self._audio
        if audio is not None:
            try:
                audio.push_audio(pcm)
            except Exception:
                # Detached so a sink that fails on every frame logs once, and the VAD (barge-in,
                # DTMF) keeps working: the call goes on without recognition rather than not at all.
                self._audio = None
                log.exception("call %s: audio sink failed; detached", self.uuid)
        event = self._vad.process(pcm, self._now())
        if event is not None:
            self._on_vad(event)

    def _reframe(self, pcm: bytes, sample_rate: int) -> None:
        """Audio that is not one whole 8 kHz frame (another rate, another length, or a part
        frame held): converted, cut into whole frames, each through `on_audio`; the rest held."""
        if sample_rate != SAMPLE_RATE:
            pcm = self._resampler.convert(pcm, sample_rate)
        partial = self._partial
        partial += pcm
        whole = len(partial) // FRAME_BYTES * FRAME_BYTES
        if not whole:
            return
        frames = bytes(partial[:whole])
        tail = bytes(partial[whole:])
        partial.clear()  # so each frame takes the whole-frame path
        for start in range(0, whole, FRAME_BYTES):
            self.on_audio(frames[start : start + FRAME_BYTES], SAMPLE_RATE)  # nothing after a hang-up
        if not self._hung_up:
            partial += tail

    def _on_vad(self, event: VadEvent) -> None:
        listener = self._listener
        kind = event.kind
        if kind is VadEventKind.SPEECH_START:
            self.speech_starts += 1
        elif kind is VadEventKind.SPEECH_END:
            self.speech_ends += 1
        elif kind is VadEventKind.SPEECH_ONSET:
            self.speech_onsets += 1
        if listener is None:
            return
        try:
            if kind is VadEventKind.SPEECH_START:
                listener.on_speech_start(event.at)
            elif kind is VadEventKind.SPEECH_END:
                listener.on_speech_end(event.at)
            elif kind is VadEventKind.SPEECH_ONSET:
                listener.on_speech_onset(event.at)
            else:
                listener.on_speech_rejected(event.at)
        except Exception:
            # A broken listener must not kill the call's audio path.
            log.exception("call %s: voice listener failed on %s", self.uuid, kind.value)

    def on_dtmf(self, digit: str) -> None:
        """A DTMF digit from the caller."""
        if self._hung_up:
            return
        self.dtmf_in += 1
        listener = self._listener
        if listener is None:
            return
        try:
            listener.on_dtmf(digit, self._clock.now())
        except Exception:
            log.exception("call %s: voice listener failed on DTMF %r", self.uuid, digit)

    def on_hangup(self) -> None:
        """The AudioSocket leg ended: stop delivering, stop playing; `wait_hangup()` returns."""
        if self._hung_up:
            return
        self._hung_up = True
        self._listener = self._audio = None  # nothing more is delivered
        self._partial.clear()
        self._hangup.set()
        self._pacer.remove(self.outbound)
        self.outbound.close()
        self._vad.close()

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
            "speech_starts": self.speech_starts,
            "speech_onsets": self.speech_onsets,
            "speech_ends": self.speech_ends,
            "dtmf_in": self.dtmf_in,
            "frames_out": self.outbound.frames_sent,
            "silence_out": self.outbound.silence_sent,
            "ring_out": self.outbound.ring_sent,
            "underflows": self.outbound.underflows,
            "dropped_in": self._conn.dropped_before_receiver,
            "dropped_out": self._conn.frames_dropped,
            "vad_dropped": self._vad.frames_dropped,
        }
