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
import logging
import socket
import uuid
from collections import Counter

from bridge.audiosocket.admission import Admission, Refusal
from bridge.audiosocket.connection import AudioReceiver, AudioSocketConnection, LegEnd
from bridge.audiosocket.settings import PENDING_LIMIT, SWEEP_S, AudioSocketSettings
from bridge.audiosocket.stream import ServerProtocol
from bridge.fd_limit import fd_limit, open_fds
from bridge.pacer import Pacer
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

_FD_RECOUNT_SWEEPS = 4  # /proc/self/fd is listed every this many sweeps (once a second)


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
        self._protocols: set[ServerProtocol] = set()
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
            await loop.connect_accepted_socket(lambda: ServerProtocol(self, host), sock)
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
