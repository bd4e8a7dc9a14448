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

Limits (all in `AudioSocketSettings`, checked without a task or a per-frame allocation):

- admission on accept (`bridge.audiosocket.admission`): descriptor headroom, total and per-peer
  connection caps, accept rate; a refused connection is closed at once and counted in `refused`.
- `uuid_timeout_s`: a connection that has not sent its UUID is closed.
- one sweep timer per server, every `SWEEP_S`, for every connection:
  - the inbound rate cap, a token bucket per connection (one second of `max_inbound_bytes_per_s`
    as burst, refilled every sweep): a connection that runs out stops being read (`pause_reading`:
    TCP pushes back on the peer, our CPU stays free) until a sweep refills it; counted in
    `throttled`. The audio of the read that ran out is delivered up to the allowance and the rest
    dropped (`inbound_dropped_bytes`), so no more than the cap reaches the call, whatever the
    size of a read.
  - the media watchdog: a leg with a UUID that has sent nothing for `media_timeout_s` is ended
    (`LegEnd.MEDIA_TIMEOUT`), detected within `media_timeout_s + SWEEP_S`.
- TCP keepalive on every accepted socket, so a peer that vanished without a FIN is noticed.

Why a leg ended is kept in `AudioSocketConnection.end_cause` (a `LegEnd`): a malformed message is
`PROTOCOL_ERROR`, never a hang-up. Repeated warnings go through one `RateLimitedLog`, and no log
line quotes a payload.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import uuid
from collections import Counter, deque
from enum import StrEnum
from typing import Annotated, Protocol, cast

import pydantic.dataclasses
from pydantic import ConfigDict, Field

from bridge.audiosocket.admission import Admission, Refusal
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
    Unknown,
    Uuid,
    encode_audio,
    encode_hangup,
)
from bridge.fd_limit import fd_limit, open_fds
from bridge.logs import TRACE_ID
from bridge.pacer import Pacer
from orchestrator.audio import SILENCE_FRAME
from orchestrator.log_limits import RateLimitedLog
from orchestrator.tasks import TaskOwner

__all__ = [
    "PENDING_LIMIT",
    "SWEEP_S",
    "AudioReceiver",
    "AudioSocketConnection",
    "AudioSocketServer",
    "AudioSocketSettings",
    "LegEnd",
]

log = logging.getLogger(__name__)

PENDING_LIMIT = 50  # default of AudioSocketSettings.pending_limit: 1 s of 20 ms frames
_SLIN_HEADER = HEADER.pack(Kind.SLIN, 320)
_SILENCE_MESSAGE = encode_audio(SILENCE_FRAME)  # preframed: send_silence allocates nothing
_HANGUP_MESSAGE = encode_hangup()
SWEEP_S = 0.25  # the rate-cap window and the media watchdog's resolution, s
_FD_RECOUNT_SWEEPS = 4  # /proc/self/fd is listed every this many sweeps (once a second)
_ERROR_CALLER_HUNG_UP = 0x01  # ERROR code bit "calling party hung up" (CyCoreSystems/audiosocket spec)


class LegEnd(StrEnum):
    """Why an AudioSocket leg ended (`AudioSocketConnection.end_cause`)."""

    PEER_HANGUP = "peer_hangup"  # EOF or 0x00 (Asterisk hangs up by closing the socket)
    PEER_ERROR = "peer_error"  # the peer sent an ERROR message (0xFF)
    PROTOCOL_ERROR = "protocol_error"  # a malformed message: the stream cannot be trusted
    MEDIA_TIMEOUT = "media_timeout"  # nothing received for `media_timeout_s`
    LOCAL = "local"  # we hung up
    SERVER_CLOSING = "server_closing"  # the server is shutting down


@pydantic.dataclasses.dataclass(
    frozen=True, slots=True, config=ConfigDict(extra="forbid", allow_inf_nan=False)
)
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
    # A leg that has sent its UUID and then nothing for this long is ended (`media_timeout`), s.
    # Asterisk sends a frame every 20 ms while the call's media flows.
    media_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    # Inbound bytes per second one connection may send (headers included); beyond it the
    # connection is not read until the next sweep. 8 kHz slin at 20 ms is 16,150 B/s: the default
    # allows 4x that in bursts; raise it for wideband formats (16 kHz is twice as much).
    max_inbound_bytes_per_s: Annotated[int, Field(ge=1)] = 64_000
    # Open AudioSocket connections (with or without a UUID yet), in all and from one peer address.
    max_connections: Annotated[int, Field(ge=1)] = 1000
    max_connections_per_peer: Annotated[int, Field(ge=1)] = 600
    # New connections accepted per second (token bucket with one second of burst).
    max_accepts_per_s: Annotated[float, Field(gt=0)] = 100.0
    # Descriptors kept free for everything else (live calls' provider and cache sockets, files):
    # new connections are refused once fewer than this many remain under the open-file limit.
    # Half of it (at most 100) is also the listen backlog, the most accepted in one go.
    fd_headroom: Annotated[int, Field(ge=1)] = 100
    # TCP keepalive: first probe after this many idle seconds, then every interval, dead after count.
    keepalive_idle_s: Annotated[int, Field(ge=1)] = 10
    keepalive_interval_s: Annotated[int, Field(ge=1)] = 5
    keepalive_count: Annotated[int, Field(ge=1)] = 3


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
        if self._receiver is not None:
            self._receiver.on_hangup()
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


def _set_keepalive(sock: socket.socket, settings: AudioSocketSettings) -> None:
    """TCP keepalive (tcp(7)): a peer gone without a FIN is found in idle + interval * count s."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; other systems keep their defaults
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, settings.keepalive_idle_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, settings.keepalive_interval_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, settings.keepalive_count)


_REFUSAL_DETAIL: dict[Refusal, str] = {
    "fd": "%d descriptors in use, %d kept free",
    "total": "%d connections open",
    "peer": "%d connections open from this peer",
    "rate": "over %g accepts per second",
}
# (rate-limiter key, format) per refusal: built once, so a refusal in a flood formats nothing.
_REFUSAL_LOG: dict[Refusal, tuple[str, str]] = {
    why: (
        f"refused {why}",
        f"AudioSocket connection from %s refused ({detail}); live calls go on; refused so far: %d",
    )
    for why, detail in _REFUSAL_DETAIL.items()
}


class _ServerProtocol(asyncio.Protocol):
    """Per-TCP-connection protocol: waits for a registered UUID, then feeds the connection."""

    def __init__(self, server: AudioSocketServer, host: str) -> None:
        self._server = server
        self._decoder = Decoder()
        self._transport: asyncio.Transport | None = None
        self._conn: AudioSocketConnection | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._peer = "?"
        self._host = host  # admitted under this peer address; released in connection_lost
        self._rejected = False
        # Inbound bytes it may still send (a token bucket refilled by the sweep; the rate cap),
        # and whether anything came since the last sweep (media watchdog).
        self._allowance = server._rate_burst
        self._rx_seen = False
        self._idle_s = 0.0
        self._throttled = False
        self._ctx = contextvars.copy_context()  # the connection's, once its UUID set the trace id

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        server = self._server
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # 20 ms frames must not wait for Nagle to coalesce them.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _set_keepalive(sock, server.settings)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(server.settings.uuid_timeout_s, self._on_uuid_timeout)
        server._protocols.add(self)

    def _reject(self, reason: str) -> None:
        if self._rejected:
            return
        self._rejected = True
        self._server.rejected += 1
        self._server.limited.warning(
            "rejected", "AudioSocket connection from %s rejected: %s", self._peer, reason
        )
        if self._timer is not None:
            self._timer.cancel()
        assert self._transport is not None
        self._transport.close()

    def _on_uuid_timeout(self) -> None:
        self._reject(f"no UUID within {self._server.settings.uuid_timeout_s} s")

    def data_received(self, data: bytes) -> None:
        if self._rejected and self._conn is None:
            return  # rejected: whatever it still sends is not read
        self._rx_seen = True
        before = self._allowance
        self._allowance = before - len(data)
        over_cap = self._allowance < 0
        if over_cap and not self._throttled:
            self._throttle()
        conn = self._conn
        try:
            msgs = self._decoder.feed(data)
        except AudioSocketProtocolError as exc:
            if conn is None:
                self._reject(f"protocol error: {exc}")
                return
            conn._on_messages(list(exc.messages))
            conn._protocol_error(str(exc))
            return
        if over_cap:
            msgs = self._within_cap(msgs, before)
            self._allowance = 0  # what went over was dropped, not owed
        if conn is not None:
            conn._on_messages(msgs)
        elif msgs and not self._rejected:
            self._first_messages(msgs)

    def _throttle(self) -> None:
        """Over the inbound rate cap: stop reading until the next sweep (TCP pushes back)."""
        assert self._transport is not None
        self._throttled = True
        self._transport.pause_reading()
        self._server.throttled += 1
        self._server.limited.warning(
            "inbound rate",
            "AudioSocket %s from %s: over the inbound cap of %d B/s; reading paused",
            self._conn.uuid if self._conn is not None else "(no UUID yet)",
            self._peer,
            self._server.settings.max_inbound_bytes_per_s,
        )

    def _within_cap(self, msgs: list[Message], budget: int) -> list[Message]:
        """The messages of a read that crossed the cap: audio beyond `budget` bytes is dropped
        (counted in the server's `inbound_dropped_bytes`); DTMF, hang-ups and the rest pass."""
        kept: list[Message] = []
        for msg in msgs:
            if type(msg) is Audio:
                size = len(msg.pcm) + HEADER.size
                if size > budget:
                    self._server.inbound_dropped_bytes += size
                    continue
                budget -= size
            kept.append(msg)
        return kept

    def _on_sweep(self, sweep_s: float) -> None:
        """Once per sweep: refill the rate allowance; end a leg silent for `media_timeout_s`."""
        server = self._server
        self._allowance = min(server._rate_burst, self._allowance + server._rate_refill)
        if self._throttled:
            if self._allowance > 0:
                self._throttled = False
                assert self._transport is not None
                if not self._transport.is_closing():
                    # In the connection's context: the reader resume_reading() installs runs
                    # every later read in the context current here (else the sweep's, no trace id).
                    self._ctx.run(self._transport.resume_reading)
        elif self._rx_seen:
            self._idle_s = 0.0
        elif self._conn is not None and not self._conn.closed:
            self._idle_s += sweep_s
            timeout = self._server.settings.media_timeout_s
            if self._idle_s >= timeout:
                self._server.media_timeouts += 1
                self._server.limited.warning(
                    "media timeout",
                    "AudioSocket %s from %s: nothing received for %.1f s; ending the leg",
                    self._conn.uuid,
                    self._peer,
                    self._idle_s,
                )
                self._conn._end(LegEnd.MEDIA_TIMEOUT)
        self._rx_seen = False

    def _first_messages(self, msgs: list[Message]) -> None:
        first = msgs[0]
        if type(first) is not Uuid:
            self._reject(f"first message is {type(first).__name__}, not a UUID")
            return
        fut = self._server._expected.pop(first.uuid, None)
        if fut is None or fut.done():
            self._reject(f"UUID {first.uuid} was not expected")
            return
        if self._timer is not None:
            self._timer.cancel()
        assert self._transport is not None
        conn = AudioSocketConnection(
            first.uuid,
            self._transport,
            self._peer,
            pending_limit=self._server.settings.pending_limit,
            limited=self._server.limited,
        )
        self._conn = conn
        # The call's trace id for every line logged in this connection's callbacks (the VAD, the
        # barge-in, the hang-up): asyncio runs each read of a transport in the one context it
        # copied for the transport's reader, so setting it here, once, holds for the connection.
        TRACE_ID.set(str(first.uuid))
        self._ctx = contextvars.copy_context()  # for resume_reading() after a throttle
        fut.set_result(conn)
        conn._on_messages(msgs[1:])

    def eof_received(self) -> bool | None:
        # EOF is how Asterisk hangs up. Returning None lets the transport close itself.
        try:
            self._decoder.feed_eof()
        except AudioSocketProtocolError as exc:
            self._server.limited.warning("eof inside message", "AudioSocket from %s: %s", self._peer, exc)
        if self._conn is not None:
            self._conn._end(LegEnd.PEER_HANGUP)
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
        if self in self._server._protocols:
            self._server._protocols.discard(self)
            self._server._admission.release(self._host)
        if self._conn is not None:
            self._conn._connection_lost()

    def abort(self) -> None:
        """Drop the connection (server shutdown)."""
        if self._conn is not None:
            self._conn._end(LegEnd.SERVER_CLOSING)
        elif self._transport is not None:
            self._rejected = True
            self._transport.close()


class AudioSocketServer:
    """Accepts Asterisk's AudioSocket connections for UUIDs registered with `expect()`.

    Counters: `refused` (by `Refusal`: fd, total, peer, rate), `rejected` (no or wrong UUID, bad
    first message), `throttled` (times a connection went over the inbound rate cap),
    `inbound_dropped_bytes` (audio beyond the cap in the read that crossed it),
    `media_timeouts` (legs ended by the media watchdog).
    """

    def __init__(self, settings: AudioSocketSettings | None = None, *, pacer: Pacer) -> None:
        self.settings = settings or AudioSocketSettings()
        self.pacer = pacer  # the shared outbound tick; started by start() if not running
        self._listener: socket.socket | None = None
        self._accept_batch = 1
        self._accepts = TaskOwner("audiosocket-accept", cancel_bound_s=self.settings.close_wait_s)
        self._expected: dict[uuid.UUID, asyncio.Future[AudioSocketConnection]] = {}
        self._protocols: set[_ServerProtocol] = set()
        self._started_pacer = False
        self._admission: Admission
        # The inbound token bucket: one second of the cap as burst, refilled every sweep.
        self._rate_burst = self.settings.max_inbound_bytes_per_s
        self._rate_refill = int(self.settings.max_inbound_bytes_per_s * SWEEP_S)
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweeps = 0
        # One line per kind of trouble per 10 s, whatever the peers do (never a line per packet).
        self.limited = RateLimitedLog(log)
        self.refused: Counter[Refusal] = Counter()
        self.rejected = 0
        self.throttled = 0
        self.inbound_dropped_bytes = 0
        self.media_timeouts = 0

    async def start(self) -> None:
        """Listen; start the pacer if nobody has yet.

        The descriptor budget is read here: raise the open-file limit before (`bridge.fd_limit`).
        """
        loop = asyncio.get_running_loop()
        s = self.settings
        self._admission = Admission(s, clock=loop.time, fd_limit=fd_limit(), open_fds=open_fds)
        # Our own accept loop rather than loop.create_server(): a refused connection's socket is
        # closed right here, before any transport exists. asyncio's server keeps a refused
        # socket open for two more loop iterations while it accepts further batches, and
        # 1,100 idle connections under 256 descriptors ran it into EMFILE (a traceback per try).
        family = socket.AF_INET6 if ":" in s.bind_host else socket.AF_INET
        backlog = max(1, min(100, s.fd_headroom // 2))
        listener = socket.create_server((s.bind_host, s.bind_port), family=family, backlog=backlog)
        listener.setblocking(False)
        self._listener = listener
        self._accept_batch = backlog  # accepted per wake-up: at most half the headroom
        loop.add_reader(listener.fileno(), self._on_acceptable)
        self._sweeper = loop.call_later(SWEEP_S, self._sweep)
        if not self.pacer.running:
            self.pacer.start()
            self._started_pacer = True

    def _refuse(self, why: Refusal, peer: str) -> None:
        # In a flood this runs per connection: constant keys and formats, the numbers passed as
        # arguments, so a suppressed line formats nothing.
        self.refused[why] += 1
        s = self.settings
        args: tuple[object, ...]
        if why == "fd":
            args = (self._admission.fd_ceiling, s.fd_headroom)
        elif why == "total":
            args = (s.max_connections,)
        elif why == "peer":
            args = (s.max_connections_per_peer,)
        else:
            args = (s.max_accepts_per_s,)
        key, message = _REFUSAL_LOG[why]
        self.limited.warning(key, message, peer, *args, self.refused[why])

    def _on_acceptable(self) -> None:
        """The listening socket is readable: accept a batch, admit or refuse each at once."""
        listener = self._listener
        if listener is None:
            return
        for _ in range(self._accept_batch):
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ENOMEM, ECONNABORTED
                self._out_of_resources(exc)
                return
            host = str(addr[0])
            refusal = self._admission.admit(host, sock.fileno())
            if refusal is not None:
                sock.close()  # the descriptor is free again now
                self._refuse(refusal, f"{addr[0]}:{addr[1]}")
                continue
            sock.setblocking(False)
            self._accepts.spawn(self._attach(sock, host), f"{addr[0]}:{addr[1]}")

    async def _attach(self, sock: socket.socket, host: str) -> None:
        """Give an admitted socket its transport and protocol (which registers itself in
        `connection_made` and releases its admission in `connection_lost`)."""
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: _ServerProtocol(self, host), sock)
        except Exception as exc:  # the peer vanished between accept and transport
            sock.close()
            self._admission.release(host)
            log.debug("AudioSocket connection from %s lost before it started: %r", host, exc)

    def _out_of_resources(self, exc: OSError) -> None:
        """accept() failed (EMFILE and the like): stop accepting for a sweep, warn (rate-limited)."""
        self.refused["fd"] += 1
        self.limited.warning(
            "accept failed",
            "AudioSocket accept failed (%s); pausing accepts for %.2f s",
            exc.strerror,
            SWEEP_S,
        )
        listener = self._listener
        if listener is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(listener.fileno())

        def resume() -> None:
            if self._listener is listener:
                loop.add_reader(listener.fileno(), self._on_acceptable)

        loop.call_later(SWEEP_S, resume)

    def _sweep(self) -> None:
        """The rate-cap window and the media watchdog for every connection (see module doc)."""
        if self._listener is None:
            return
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)
        for proto in tuple(self._protocols):
            proto._on_sweep(SWEEP_S)
        self._sweeps += 1
        if self._sweeps % _FD_RECOUNT_SWEEPS == 0:
            self._admission.recount_fds()

    @property
    def port(self) -> int:
        """The bound port (useful with port=0)."""
        if self._listener is None:
            raise RuntimeError("AudioSocket server is not started")
        port: int = self._listener.getsockname()[1]
        return port

    def can_admit(self) -> Refusal | None:
        """Whether a call announced now would get its connection past the descriptor headroom
        and `max_connections` (None), or which refuses it; the connections already expected
        count as open. For the ARI controller, to refuse a call before answering it."""
        return self._admission.can_admit(len(self._expected))

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
        listener, self._listener = self._listener, None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if listener is not None:
            asyncio.get_running_loop().remove_reader(listener.fileno())
            listener.close()
        await self._accepts.aclose()
        self._accepts = TaskOwner("audiosocket-accept", cancel_bound_s=self.settings.close_wait_s)
        for proto in list(self._protocols):
            proto.abort()
        for call_uuid in list(self._expected):
            self.forget(call_uuid)
        if self._started_pacer:
            self.pacer.stop()
            self._started_pacer = False
