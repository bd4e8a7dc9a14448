"""The per-TCP-connection protocol of the AudioSocket server: waits for a registered UUID, then
decodes inline in `data_received` and feeds the call's `AudioSocketConnection`; applies the
inbound rate cap and the media watchdog on the server's sweep (see `bridge.audiosocket.server`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
from typing import TYPE_CHECKING, cast

from bridge.audiosocket.connection import AudioSocketConnection, LegEnd
from bridge.audiosocket.protocol import (
    HEADER,
    SAMPLE_RATES,
    Audio,
    AudioSocketProtocolError,
    Decoder,
    Kind,
    Message,
    Uuid,
)
from bridge.audiosocket.settings import AudioSocketSettings
from bridge.logs import TRACE_ID

if TYPE_CHECKING:
    from bridge.audiosocket.server import AudioSocketServer

__all__ = ["ServerProtocol"]

log = logging.getLogger("bridge.audiosocket.server")
_SLIN_RATE = SAMPLE_RATES[Kind.SLIN]


def _set_keepalive(sock: socket.socket, settings: AudioSocketSettings) -> None:
    """TCP keepalive (tcp(7)): a peer gone without a FIN is found in idle + interval * count s."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; other systems keep their defaults
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, settings.keepalive_idle_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, settings.keepalive_interval_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, settings.keepalive_count)


class ServerProtocol(asyncio.Protocol):
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
        if conn is not None and not over_cap:
            # The hot path, 50 reads a second per call: one whole 8 kHz frame straight to the
            # call's receiver (what `feed` then `_on_messages` would do with it, minus the list,
            # the message and two calls).
            pcm = self._decoder.lone_frame(data)
            if pcm is not None:
                receiver = conn._receiver
                if receiver is not None:
                    receiver.on_audio(pcm, _SLIN_RATE)
                else:
                    conn._on_messages([Audio(Kind.SLIN, pcm)])
                return
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
        _drop_read_callback(self._transport)

    def abort(self) -> None:
        """Drop the connection (server shutdown)."""
        if self._conn is not None:
            self._conn._end(LegEnd.SERVER_CLOSING)
        elif self._transport is not None:
            self._rejected = True
            self._transport.close()


def _drop_read_callback(transport: asyncio.BaseTransport | None) -> None:
    """Drop a closed selector transport's `_read_ready_cb`: on CPython 3.11 it keeps that bound
    method of itself after closing (3.12 drops it in `close()`), a reference cycle that holds
    the transport and its socket until a full collection. Only ever called once the connection
    is lost (nothing reads any more); transports without it (uvloop's) are left alone."""
    if getattr(transport, "_read_ready_cb", None) is not None:
        setattr(transport, "_read_ready_cb", None)  # noqa: B010 - a private attribute of asyncio's
