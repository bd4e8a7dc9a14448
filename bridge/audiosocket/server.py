"""AudioSocket TCP server: a thin asyncio shell around the sans-I/O codec.

Asterisk is the TCP client; it connects once per call and sends the call's UUID first. The ARI
controller registers the UUID with `expect()` BEFORE its externalMedia POST (Asterisk may connect
before the POST returns) and awaits the future for the `AudioSocketConnection`.

Built on `asyncio.Protocol` rather than streams: `data_received` decodes and dispatches inline,
with no reader task per call and no per-frame awaits (the hot path runs 50 frames/s per call).

Inbound messages that arrive before `set_receiver()` (between the UUID and the gateway being
built) are buffered, up to `AudioSocketSettings.pending_limit` messages (default 1 s of 20 ms
audio); beyond that the oldest is dropped and counted in `dropped_before_receiver`. A hangup in that window is remembered and
delivered after the buffered messages.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections import deque
from typing import Annotated, Protocol

import pydantic.dataclasses
from pydantic import ConfigDict, Field

from bridge.audiosocket.protocol import (
    HEADER,
    Audio,
    AudioSocketProtocolError,
    Decoder,
    Dtmf,
    Error,
    Hangup,
    Kind,
    Message,
    Uuid,
    encode_audio,
    encode_hangup,
)
from bridge.logs import TRACE_ID
from bridge.pacer import Pacer
from orchestrator.audio import SILENCE_FRAME

__all__ = [
    "PENDING_LIMIT",
    "AudioReceiver",
    "AudioSocketConnection",
    "AudioSocketServer",
    "AudioSocketSettings",
]

log = logging.getLogger(__name__)

PENDING_LIMIT = 50  # default of AudioSocketSettings.pending_limit: 1 s of 20 ms frames
_SLIN_HEADER = HEADER.pack(Kind.SLIN, 320)
_SILENCE_MESSAGE = encode_audio(SILENCE_FRAME)  # preframed: send_silence allocates nothing
_HANGUP_MESSAGE = encode_hangup()


@pydantic.dataclasses.dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class AudioSocketSettings:
    """The AudioSocket TCP server (section `[audiosocket]`).

    Where Asterisk connects to is `AriSettings.audiosocket_host` (the address as Asterisk sees us).
    """

    bind_host: str = "127.0.0.1"
    bind_port: Annotated[int, Field(ge=0, le=65535)] = 9092  # 0: any free port (tests)
    # A connection that has not sent its UUID within this many seconds is closed.
    uuid_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    # Inbound messages held for a call whose gateway is not attached yet; the oldest are dropped.
    pending_limit: Annotated[int, Field(ge=1)] = PENDING_LIMIT
    # Bound on waiting for the TCP teardown when the bridge hangs a leg up, s.
    close_wait_s: Annotated[float, Field(gt=0)] = 1.0


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
    ) -> None:
        self.uuid = call_uuid
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
            receiver.on_hangup()

    def _dispatch(self, msg: Message) -> None:
        receiver = self._receiver
        if receiver is None:
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
        for msg in msgs:
            if type(msg) is Audio or type(msg) is Dtmf:
                self._dispatch(msg)
            elif type(msg) is Hangup:
                self._end("peer sent HANGUP")
                return
            elif type(msg) is Error:
                log.warning("AudioSocket %s from %s: ERROR message, code %s", self.uuid, self.peer, msg.code)
                self._end("peer sent ERROR")
                return
            else:  # a second UUID
                log.warning("AudioSocket %s from %s: unexpected %r", self.uuid, self.peer, msg)
                self._end("protocol error")
                return

    def hangup(self) -> None:
        """Send 0x00 and close. Ends only the AudioSocket leg; the caller's channel stays up."""
        if self._ended:
            return
        self._transport.write(_HANGUP_MESSAGE)
        self._end("local hangup")

    def _end(self, reason: str) -> None:
        """Close the leg and tell the receiver, exactly once, whatever ended it."""
        if self._ended:
            return
        self._ended = True
        log.debug("AudioSocket %s from %s ended: %s", self.uuid, self.peer, reason)
        if self._paused:
            # The peer stopped reading: a graceful close would wait on it forever.
            self._transport.abort()
        else:
            self._transport.close()  # flushes anything still buffered, then closes
        if self._receiver is not None:
            self._receiver.on_hangup()
        else:
            self._hangup_pending = True

    def _connection_lost(self) -> None:
        self._end("connection lost")
        if not self._closed_fut.done():
            self._closed_fut.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is fully closed."""
        await asyncio.shield(self._closed_fut)

    @property
    def closed(self) -> bool:
        """Whether the leg has ended (sends are dropped from then on)."""
        return self._ended


class _ServerProtocol(asyncio.Protocol):
    """Per-TCP-connection protocol: waits for a registered UUID, then feeds the connection."""

    def __init__(self, server: AudioSocketServer) -> None:
        self._server = server
        self._decoder = Decoder()
        self._transport: asyncio.Transport | None = None
        self._conn: AudioSocketConnection | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._peer = "?"
        self._rejected = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # 20 ms frames must not wait for Nagle to coalesce them.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._server.settings.uuid_timeout_s, self._on_uuid_timeout)
        self._server._protocols.add(self)

    def _reject(self, reason: str) -> None:
        if self._rejected:
            return
        self._rejected = True
        log.warning("AudioSocket connection from %s rejected: %s", self._peer, reason)
        if self._timer is not None:
            self._timer.cancel()
        assert self._transport is not None
        self._transport.close()

    def _on_uuid_timeout(self) -> None:
        self._reject(f"no UUID within {self._server.settings.uuid_timeout_s} s")

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        try:
            msgs = self._decoder.feed(data)
        except AudioSocketProtocolError as exc:
            if conn is None:
                self._reject(f"protocol error: {exc}")
                return
            log.warning("AudioSocket %s from %s: protocol error: %s", conn.uuid, self._peer, exc)
            conn._on_messages(list(exc.messages))
            conn._end("protocol error")
            return
        if conn is not None:
            conn._on_messages(msgs)
        elif msgs and not self._rejected:
            self._first_messages(msgs)

    def _first_messages(self, msgs: list[Message]) -> None:
        first = msgs[0]
        if type(first) is not Uuid:
            self._reject(f"first message is {first!r}, not a UUID")
            return
        fut = self._server._expected.pop(first.uuid, None)
        if fut is None or fut.done():
            self._reject(f"UUID {first.uuid} was not expected")
            return
        if self._timer is not None:
            self._timer.cancel()
        assert self._transport is not None
        conn = AudioSocketConnection(
            first.uuid, self._transport, self._peer, pending_limit=self._server.settings.pending_limit
        )
        self._conn = conn
        # The call's trace id for every line logged in this connection's callbacks (the VAD, the
        # barge-in, the hang-up): asyncio runs each read of a transport in the one context it
        # copied for the transport's reader, so setting it here, once, holds for the connection.
        TRACE_ID.set(str(first.uuid))
        fut.set_result(conn)
        conn._on_messages(msgs[1:])

    def eof_received(self) -> bool | None:
        # EOF is how Asterisk hangs up. Returning None lets the transport close itself.
        try:
            self._decoder.feed_eof()
        except AudioSocketProtocolError as exc:
            log.warning("AudioSocket from %s: %s", self._peer, exc)
        if self._conn is not None:
            self._conn._end("EOF")
        elif not self._rejected:
            self._reject("EOF before a UUID")
        return None

    def pause_writing(self) -> None:
        if self._conn is not None:
            self._conn._paused = True

    def resume_writing(self) -> None:
        if self._conn is not None:
            self._conn._paused = False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._server._protocols.discard(self)
        if self._conn is not None:
            self._conn._connection_lost()

    def abort(self) -> None:
        """Drop the connection (server shutdown)."""
        if self._conn is not None:
            self._conn._end("server closing")
        elif self._transport is not None:
            self._rejected = True
            self._transport.close()


class AudioSocketServer:
    """Accepts Asterisk's AudioSocket connections for UUIDs registered with `expect()`."""

    def __init__(self, settings: AudioSocketSettings | None = None, *, pacer: Pacer) -> None:
        self.settings = settings or AudioSocketSettings()
        self.pacer = pacer  # the shared outbound tick; started by start() if not running
        self._server: asyncio.Server | None = None
        self._expected: dict[uuid.UUID, asyncio.Future[AudioSocketConnection]] = {}
        self._protocols: set[_ServerProtocol] = set()
        self._started_pacer = False

    async def start(self) -> None:
        """Listen; start the pacer if nobody has yet."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerProtocol(self), self.settings.bind_host, self.settings.bind_port
        )
        if not self.pacer.running:
            self.pacer.start()
            self._started_pacer = True

    @property
    def port(self) -> int:
        """The bound port (useful with port=0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("AudioSocket server is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def expect(self, call_uuid: uuid.UUID) -> asyncio.Future[AudioSocketConnection]:
        """Accept one connection for `call_uuid`; the future resolves when it sends that UUID.

        Register before the ARI externalMedia POST. Raises ValueError if already registered.
        """
        if call_uuid in self._expected:
            raise ValueError(f"AudioSocket UUID {call_uuid} is already expected")
        fut: asyncio.Future[AudioSocketConnection] = asyncio.get_running_loop().create_future()
        self._expected[call_uuid] = fut
        return fut

    def forget(self, call_uuid: uuid.UUID) -> None:
        """Stop expecting `call_uuid`; cancels its future if still pending."""
        fut = self._expected.pop(call_uuid, None)
        if fut is not None and not fut.done():
            fut.cancel()

    @property
    def connections(self) -> int:
        """Open TCP connections (accepted or still waiting for their UUID)."""
        return len(self._protocols)

    async def close(self) -> None:
        """Stop listening, drop every connection, cancel pending expectations. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for proto in list(self._protocols):
            proto.abort()
        for call_uuid in list(self._expected):
            self.forget(call_uuid)
        if server is not None:
            await server.wait_closed()
        if self._started_pacer:
            self.pacer.stop()
            self._started_pacer = False
