"""`voicebridge serve`: the service lifecycle. Start the admin port (metrics, health), the shared
pacer, the AudioSocket server and the ARI controller; serve each call with a TelephonyGateway and
a fresh Orchestrator, under the call's trace id; log AMI events; drain (a deploy) and stop cleanly.

Drain (`begin_drain()`, on SIGTERM or `POST /drain` on the admin port): new calls are refused
with congestion (SIP 503, see `bridge.ari.controller`), `/readyz` answers 503, each call in
progress may finish its dialogue until `[call] drain_timeout_s` after the drain began and then
hears the map's drain goodbye and is hung up (`Orchestrator.drain_by`); `run_until()` returns
once no call is left.

What the calls use is built from `Settings` by the composition root (`bridge.composition`):
process-wide services once at start, the per-call providers by its factories.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import deque
from collections.abc import Callable

from bridge.admin import AdminServer
from bridge.ami import AmiError, AmiEventLogger
from bridge.ari import AriCall, AriController
from bridge.audiosocket.server import AudioSocketServer
from bridge.composition import Composition
from bridge.fd_limit import raise_fd_limit
from bridge.gateway import TelephonyGateway
from bridge.logs import TRACE_ID, public_url
from bridge.metrics import ServiceMetrics
from bridge.pacer import Pacer
from bridge.preflight import listen_error
from bridge.settings import Settings
from orchestrator.clock import LoopClock
from orchestrator.domain.errors import CallSetupError, VoicebridgeError
from orchestrator.metrics import MetricsRecord, MetricsSink, log_sink
from orchestrator.orchestrator import (
    CallEvent,
    CallServices,
    Orchestrator,
    create_orchestrator_instance,
)
from orchestrator.tasks import TaskOwner, cancel_and_wait

log = logging.getLogger(__name__)


class VoicebridgeApp:
    """The running service: `start()`, then calls until `run_until()` returns, then `close()`.

    `observer(call_id, event)` sees every call's events (tests and the demo).
    """

    def __init__(
        self, settings: Settings, *, observer: Callable[[str, CallEvent], None] | None = None
    ) -> None:
        self.settings = settings
        self.pacer = Pacer(settings.pacer)
        self.clock = LoopClock()
        self.composition = Composition(settings, clock=self.clock)
        self.services: CallServices | None = None
        self.audiosocket: AudioSocketServer | None = None
        self.ari: AriController | None = None
        self.calls_total = 0
        self.calls_active = 0
        # The last calls' (call id, end reason), for tests and status; bounded for months of uptime.
        self.outcomes: deque[tuple[str, str]] = deque(maxlen=1000)
        self._observer = observer
        self.metrics = ServiceMetrics(
            self.pacer,
            calls_active=lambda: self.calls_active,
            ari_connected=lambda: self.ari is not None and self.ari.connected.is_set(),
        )
        self.admin: AdminServer | None = None
        # The service's own tasks ("service:ari-controller", "service:ami-event-logger"): stopped
        # one by one in `close()`, in the order the shutdown needs, then the owner is closed.
        self.tasks = TaskOwner("service", cancel_bound_s=settings.call.cancel_bound_s)
        self._ari_task: asyncio.Task[None] | None = None
        self._ami_task: asyncio.Task[None] | None = None
        self._ami_logger: AmiEventLogger | None = None
        self._stopping = asyncio.Event()
        # Drain: `draining` is read by the admin endpoint (/readyz answers 503 while it is true).
        self.draining = False
        self._drain_deadline: float | None = None  # clock time the calls must end by
        self._drain_requested = asyncio.Event()
        self._orchestrators: set[Orchestrator] = set()  # calls in their dialogue, for the drain

    async def start(self) -> None:
        """Load the map, build the providers, warm the cache, start listening for calls."""
        s = self.settings
        if s.admin.enabled:
            # First, so that /healthz answers while the cache warms.
            admin = AdminServer(
                s.admin, exposition=self.metrics.exposition, readiness=self.readiness, drain=self.begin_drain
            )
            await admin.start()
            self.admin = admin
            log.info(
                "admin port on http://%s:%d (/metrics /healthz /readyz /drain)", s.admin.host, admin.port
            )
        try:
            await self._start_calls()
        except BaseException:
            if self.admin is not None:  # `close()` may never be called after a failed start
                await self.admin.close()
            raise

    async def _start_calls(self) -> None:
        s = self.settings
        raise_fd_limit()  # before anything opens sockets: the AudioSocket server budgets on it
        self.metrics.install_gc_hook()
        self.services = await self.composition.build_services()
        self.services.metrics_sink = self._metrics_sink(self.services.metrics_sink or log_sink)
        self.pacer.start()
        self.audiosocket = AudioSocketServer(s.audiosocket, pacer=self.pacer)
        try:
            await self.audiosocket.start()
        except OSError as exc:  # preflight listened there a moment ago; someone took it since
            raise listen_error(exc, s.audiosocket.bind_host, s.audiosocket.bind_port) from exc
        self.ari = AriController(s.ari, self.audiosocket, self.on_call, max_calls=s.call.max_calls)
        if self.draining:  # SIGTERM while starting
            self.ari.refuse_new_calls()
        self._ari_task = self.tasks.spawn(self.ari.run(), "ari-controller")
        if s.ami.log_events:
            self._ami_task = self.tasks.spawn(self._log_ami_events(), "ami-event-logger")
        # Everything built so far lives as long as the process: keep it out of the collector's
        # generations so a full collection does not stall the 20 ms tick (measured: 55 ms at 650 calls).
        gc.collect()
        gc.freeze()
        log.info(
            "voicebridge started: map %s, AudioSocket on %s:%d, ARI %s app %s",
            s.dialogue_map,
            s.audiosocket.bind_host,
            self.audiosocket.port,
            public_url(s.ari.url),
            s.ari.app,
        )

    async def readiness(self) -> dict[str, str]:
        """What keeps the service from taking calls, by name (empty: ready): ARI not connected,
        AMI not logged in (when `[ami] log_events`), Redis unreachable (when configured), draining."""
        problems: dict[str, str] = {}
        if self.draining:
            problems["draining"] = "the service is draining: no new calls"
        if self.ari is None or not self.ari.connected.is_set():
            problems["ari"] = "not connected"
        if self.settings.ami.log_events and (self._ami_logger is None or not self._ami_logger.connected):
            problems["ami"] = "not logged in"
        cache = self.services.audio_cache if self.services is not None else None
        ping = getattr(cache, "ping", None)
        if self.settings.redis.url and ping is not None:
            try:
                await ping()
            except VoicebridgeError as exc:
                problems["redis"] = f"unreachable ({type(exc.__cause__ or exc).__name__})"
        elif self.settings.redis.url:
            problems["redis"] = "not started"
        return problems

    def _metrics_sink(self, forward: MetricsSink) -> MetricsSink:
        observe = self.metrics.observe_record

        def sink(record: MetricsRecord) -> None:
            observe(record)
            forward(record)

        return sink

    async def on_call(self, call: AriCall) -> None:
        """One call: gateway + fresh Orchestrator; returning hangs the caller up.

        Runs with the call id as the log's trace id (the ARI controller already set it in the
        call's task; set here too for callers that run a call otherwise)."""
        token = TRACE_ID.set(call.call_id)
        try:
            await self._serve_call(call)
        finally:
            TRACE_ID.reset(token)

    async def _serve_call(self, call: AriCall) -> None:
        assert self.services is not None
        self.calls_total += 1
        self.calls_active += 1
        s = self.settings
        gateway = TelephonyGateway(
            call.conn,
            self.pacer,
            clock=self.clock,
            vad_settings=s.vad,
            echo_settings=s.echo,
            playout_settings=s.playout,
            close_wait_s=s.audiosocket.close_wait_s,
        )
        reason = "error"
        self.metrics.call_started(gateway)
        try:
            obs, cid, observe_event = self._observer, call.call_id, self.metrics.observe_event

            def observer(event: CallEvent) -> None:
                observe_event(event, gateway)
                if obs is not None:
                    obs(cid, event)

            orchestrator = await create_orchestrator_instance(call.call_id, self.services, observer=observer)
            if self._drain_deadline is not None:  # taken just before the drain began
                orchestrator.drain_by(self._drain_deadline)
            self._orchestrators.add(orchestrator)
            try:
                outcome = await orchestrator.run(gateway, gateway.outbound)
            finally:
                self._orchestrators.discard(orchestrator)
            reason = outcome.reason
        except asyncio.CancelledError:
            reason = "shutdown"  # the service stopped at once (close()): the call was hung up
            raise
        except CallSetupError as exc:
            log.error("%s", exc)  # names the call
            reason = "setup_failed"
            await self._apologise(gateway)
        except Exception:
            # A bug outside the dialogue (which apologises itself): logged once, with the call id;
            # the caller still hears the emergency phrase, and no other call is touched.
            log.exception("call %s failed", call.call_id)
            reason = "error"
            await self._apologise(gateway)
        finally:
            # The ARI controller hangs the AudioSocket leg up itself, in the order Asterisk copes
            # with (AriController._delete_media).
            await gateway.close(hang_up=False)
            self.metrics.call_ended(gateway, reason)
            self.calls_active -= 1
            self.outcomes.append((call.call_id, reason))
            log.info("call %s ended: %s", call.call_id, reason)

    async def _log_ami_events(self) -> None:
        """Hangup causes and call events into the log; AMI being down never stops the service.

        Not cancelled mid-login by `close()` (panoramisk logs a traceback then): `close()` sets
        `_stopping` and this returns after the current attempt, bounded by the login timeout.
        """
        ami = self.settings.ami
        delay = 1.0
        while not self._stopping.is_set():
            logger = AmiEventLogger(ami)
            try:
                await logger.start()  # reconnects by itself once logged in
            except AmiError as exc:
                await logger.close()
                log.warning("AMI event log unavailable (%s); retrying in %.0f s", exc, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
                delay = min(delay * 2, ami.log_retry_max_s)
                continue
            self._ami_logger = logger
            return

    async def _apologise(self, gateway: TelephonyGateway) -> None:
        """The call cannot be served: say the emergency phrase rather than hang up in silence."""
        assert self.services is not None
        key = self.services.dialogue_map.settings.emergency_filler_key
        try:
            async with asyncio.timeout(self.settings.call.apologise_timeout_s):
                clip = await self.services.audio_cache.get(key)
                if clip is not None:
                    await gateway.outbound.write(clip)
                    await gateway.outbound.drain()
        except Exception as exc:  # the caller is gone, the cache is down: nothing more to do
            log.warning("call: cannot play %s before hanging up: %r", key, exc)

    def begin_drain(self) -> None:
        """Stop taking calls and let the calls in progress end (see the module docstring).

        Synchronous (a signal handler or an HTTP handler calls it) and idempotent: the first call
        fixes the deadline. `run_until()` returns once the last call has ended.
        """
        if self.draining:
            return
        self.draining = True
        timeout = self.settings.call.drain_timeout_s
        self._drain_deadline = self.clock.now() + timeout
        if self.ari is not None:
            self.ari.refuse_new_calls()
        for orchestrator in self._orchestrators:
            orchestrator.drain_by(self._drain_deadline)
        active = self.ari.active_calls if self.ari is not None else 0
        log.info(
            "draining: new calls are refused (SIP 503); %d call(s) in progress may go on for up to %.0f s",
            active,
            timeout,
        )
        self._drain_requested.set()

    async def run_until(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, the ARI controller gives up, or a drain has ended the last call."""
        assert self._ari_task is not None
        stopper = self.tasks.spawn(stop.wait(), "stop-signal")
        drained = self.tasks.spawn(self._drained(), "drain")
        try:
            await asyncio.wait({stopper, drained, self._ari_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(stopper, drained, timeout=self.tasks.cancel_bound_s)

    async def _drained(self) -> None:
        """Returns when a drain has begun and no call is left (bounded: past the drain deadline
        plus the goodbye and teardown bounds, the rest is left to `close()`)."""
        await self._drain_requested.wait()
        assert self.ari is not None
        s = self.settings
        grace = s.call.apologise_timeout_s + s.call.cancel_bound_s + 3 * s.ari.timeout_s
        try:
            async with asyncio.timeout(s.call.drain_timeout_s + grace):
                await self.ari.idle.wait()
        except TimeoutError:
            log.warning(
                "drain: %d call(s) still up past the drain bound; hanging them up", self.ari.active_calls
            )
            return
        log.info("drain complete: no call left (%d refused meanwhile)", self.ari.refused)

    async def close(self) -> None:
        """Hang up every call, stop listening, release the providers."""
        if self.ari is not None:
            await self.ari.close()
        await cancel_and_wait(self._ari_task, timeout=self.tasks.cancel_bound_s)
        self._stopping.set()
        if self._ami_task is not None and not self._ami_task.done():
            # The current login attempt ends within its own timeout; cancelling it mid-login
            # makes panoramisk log a traceback, so it is only the fallback.
            await asyncio.wait({self._ami_task}, timeout=self.settings.ami.login_timeout_s)
            await cancel_and_wait(self._ami_task, timeout=self.tasks.cancel_bound_s)
        await self.tasks.aclose()
        if self._ami_logger is not None:
            await self._ami_logger.close()
        if self.audiosocket is not None:
            await self.audiosocket.close()
        self.pacer.stop()
        await self.composition.aclose()
        self.metrics.remove_gc_hook()
        if self.admin is not None:
            await self.admin.close()
