"""One call's AudioSocket leg after its UUID: outbound frames, inbound dispatch, why it ended.

`AudioSocketConnection` is what the ARI controller and the gateway hold; the per-TCP-connection
protocol (`bridge.audiosocket.stream`) feeds it decoded messages. See `bridge.audiosocket.server`
for the buffering before `set_receiver()` and the limits.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from enum import StrEnum
from typing import Protocol

from bridge.audiosocket.protocol import (
    HEADER,
    SAMPLE_RATES,
    Audio,
    Dtmf,
    Error,
    Hangup,
    Kind,
    Message,
    Unknown,
    encode_audio,
    encode_hangup,
)
from bridge.audiosocket.settings import PENDING_LIMIT
from orchestrator.audio import SILENCE_FRAME
from orchestrator.log_limits import RateLimitedLog

__all__ = ["AudioReceiver", "AudioSocketConnection", "LegEnd"]

log = logging.getLogger("bridge.audiosocket.server")  # the name operators already filter on

_SLIN_HEADER = HEADER.pack(Kind.SLIN, 320)
_SILENCE_MESSAGE = encode_audio(SILENCE_FRAME)  # preframed: send_silence allocates nothing
_HANGUP_MESSAGE = encode_hangup()
_ERROR_CALLER_HUNG_UP = 0x01  # ERROR code bit "calling party hung up" (CyCoreSystems/audiosocket spec)


class LegEnd(StrEnum):
    """Why an AudioSocket leg ended (`AudioSocketConnection.end_cause`)."""

    PEER_HANGUP = "peer_hangup"  # EOF or 0x00 (Asterisk hangs up by closing the socket)
    PEER_ERROR = "peer_error"  # the peer sent an ERROR message (0xFF)
    PROTOCOL_ERROR = "protocol_error"  # a malformed message: the stream cannot be trusted
    MEDIA_TIMEOUT = "media_timeout"  # nothing received for `media_timeout_s`
    LOCAL = "local"  # we hung up
    SERVER_CLOSING = "server_closing"  # the server is shutting down


class AudioReceiver(Protocol):
    """Gets a call's inbound audio, DTMF and the end of the call, synchronously."""

    def on_audio(self, pcm: bytes, sample_rate: int) -> None:
        """Audio from the caller (s16le mono at `sample_rate`)."""
        ...

    def on_dtmf(self, digit: str) -> None:
        """A DTMF digit from the caller."""
        ...

    def on_hangup(self) -> None:
        """The AudioSocket leg ended (EOF, 0x00, error, protocol error, local close): once."""
        ...


class AudioSocketConnection:
    """One call's AudioSocket leg; a `bridge.playout.FrameSink`.

    Sending never raises: once the leg is closed (or while the kernel buffer is full because the
    peer stopped reading), frames are dropped and counted in `frames_dropped`; real-time audio
    that cannot go out now is worthless later.
    """

    def __init__(
        self,
        call_uuid: uuid.UUID,
        transport: asyncio.Transport,
        peer: str,
        *,
        pending_limit: int = PENDING_LIMIT,
        limited: RateLimitedLog | None = None,
    ) -> None:
        self.uuid = call_uuid
        self._limited = limited or RateLimitedLog(log)
        self.peer = peer
        self._transport = transport
        self._pending_limit = pending_limit
        self._receiver: AudioReceiver | None = None
        self._pending: deque[Message] = deque()
        self._hangup_pending = False
        self._ended = False
        self._paused = False
        self._closed_fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.frames_dropped = 0
        self.dropped_before_receiver = 0
        self.unknown_skipped = 0  # well-framed messages of kinds we do not know
        self.end_cause: LegEnd | None = None  # why the leg ended; None while it is up

    # --- outbound (FrameSink) ---
    def send_audio(self, frame: bytearray) -> None:
        """Send one 320-byte frame as a 0x10 message in ONE transport.write (partial messages
        broke Asterisk before 22.5/22.9)."""
        if self._ended or self._paused:
            self.frames_dropped += 1
            return
        if len(frame) != 320:
            # Anything else would need its own header; the playout only ever sends 320.
            self._transport.write(encode_audio(frame))
            return
        # A fresh bytes object: on 3.12+ the transport may keep a view of what it could not send.
        self._transport.write(_SLIN_HEADER + frame)

    def send_silence(self) -> None:
        """Send one 20 ms frame of silence (a preframed constant)."""
        if self._ended or self._paused:
            self.frames_dropped += 1
            return
        self._transport.write(_SILENCE_MESSAGE)

    # --- inbound ---
    def set_receiver(self, receiver: AudioReceiver) -> None:
        """Route inbound audio, DTMF and hangup to `receiver`; flushes what was buffered."""
        self._receiver = receiver
        pending, self._pending = self._pending, deque()
        for msg in pending:
            self._dispatch(msg)
        if self._hangup_pending:
            self._hangup_pending = False
            self._receiver = None  # the leg is over: nothing more goes to it (see `_end`)
            receiver.on_hangup()

    def _dispatch(self, msg: Message) -> None:
        receiver = self._receiver
        if receiver is None:
            if self._ended:
                return  # after the leg ended nothing is delivered, nor buffered
            if len(self._pending) >= self._pending_limit:
                self._pending.popleft()
                self.dropped_before_receiver += 1
            self._pending.append(msg)
            return
        if type(msg) is Audio:
            receiver.on_audio(msg.pcm, msg.sample_rate)
        elif type(msg) is Dtmf:
            receiver.on_dtmf(msg.digit)

    def _on_messages(self, msgs: list[Message]) -> None:
        receiver = self._receiver
        for msg in msgs:
            if type(msg) is Audio and receiver is not None:
                # The hot path, 50 a second per call: straight to the receiver (no `_dispatch`
                # call, no `sample_rate` property call).
                kind, pcm = msg
                receiver.on_audio(pcm, SAMPLE_RATES[kind])
                if self._receiver is not receiver:
                    return  # that audio ended the leg: nothing more of this batch is delivered
            elif type(msg) is Audio or type(msg) is Dtmf:
                self._dispatch(msg)
                if self._receiver is not receiver:
                    return  # that digit ended the leg (a transfer, a hang-up key): as above
            elif type(msg) is Unknown:
                # Framed by its length, so skipping it is safe (Asterisk adds kinds now and then).
                self.unknown_skipped += 1
                self._limited.warning(
                    "unknown kind",
                    "AudioSocket %s from %s: skipped a message of unknown kind 0x%02x (%d bytes)",
                    self.uuid,
                    self.peer,
                    msg.kind,
                    msg.length,
                )
            elif type(msg) is Hangup:
                self._end(LegEnd.PEER_HANGUP)
                return
            elif type(msg) is Error:
                hung_up = msg.code is not None and msg.code & _ERROR_CALLER_HUNG_UP
                if not hung_up:
                    self._limited.warning(
                        "peer error",
                        "AudioSocket %s from %s: ERROR message, code %s",
                        self.uuid,
                        self.peer,
                        msg.code,
                    )
                self._end(LegEnd.PEER_HANGUP if hung_up else LegEnd.PEER_ERROR)
                return
            else:  # a second UUID
                self._protocol_error("a second UUID message")
                return

    def _protocol_error(self, what: str) -> None:
        self._limited.warning(
            "protocol error", "AudioSocket %s from %s: protocol error: %s", self.uuid, self.peer, what
        )
        self._end(LegEnd.PROTOCOL_ERROR)

    def hangup(self) -> None:
        """Send 0x00 and close. Ends only the AudioSocket leg; the caller's channel stays up."""
        if self._ended:
            return
        self._transport.write(_HANGUP_MESSAGE)
        self._end(LegEnd.LOCAL)

    def _end(self, cause: LegEnd) -> None:
        """Close the leg and tell the receiver, exactly once, whatever ended it."""
        if self._ended:
            return
        self._ended = True
        self.end_cause = cause
        log.debug("AudioSocket %s from %s ended: %s", self.uuid, self.peer, cause.value)
        if self._paused:
            # The peer stopped reading: a graceful close would wait on it forever.
            self._transport.abort()
        else:
            self._transport.close()  # flushes anything still buffered, then closes
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            # Dropped, not kept: the receiver (the gateway: VAD, echo gate, playout) points back
            # here, and that cycle kept a finished call's gateway until a full collection
            # (rare by design, bridge/gc_policy.py); now reference counting frees it.
            receiver.on_hangup()
        else:
            self._hangup_pending = True

    def _connection_lost(self) -> None:
        self._end(LegEnd.PEER_HANGUP)
        if not self._closed_fut.done():
            self._closed_fut.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is fully closed."""
        await asyncio.shield(self._closed_fut)

    @property
    def closed(self) -> bool:
        """Whether the leg has ended (sends are dropped from then on)."""
        return self._ended
