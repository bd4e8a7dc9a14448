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

from bridge.admin import AdminServer, Readiness
from bridge.ami import AmiError, AmiEventLogger
from bridge.ari import AriCall, AriController
from bridge.audiosocket.server import AudioSocketServer
from bridge.composition import Composition
from bridge.fd_limit import raise_fd_limit
from bridge.gateway import TelephonyGateway
from bridge.gc_policy import apply_gc_settings, freeze_call_objects
from bridge.logs import TRACE_ID, public_url
from bridge.metrics import ServiceMetrics
from bridge.pacer import Pacer
from bridge.preflight import listen_error
from bridge.recording import CallRecorder, Recordings
from bridge.registry import NodeRegistry
from bridge.ringback import RingbackControl, ringback_frames
from bridge.settings import Settings
from orchestrator.cache.resilient import ResilientAudioCache
from orchestrator.clock import LoopClock
from orchestrator.domain.errors import CallSetupError
from orchestrator.factory import CallServices, create_orchestrator_instance
from orchestrator.metrics import MetricsRecord, MetricsSink
from orchestrator.orchestrator import (
    CallEvent,
    Orchestrator,
)
from orchestrator.responses import play_emergency
from orchestrator.tasks import TaskOwner, cancel_and_wait

log = logging.getLogger(__name__)
_RINGBACK = ringback_frames()  # built once, shared read-only by every call


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
        self.services: CallServices | None = None  # the default map's (`dialogue_map`)
        self.services_by_number: dict[str, CallServices] = {}  # `[numbers]`: dialled number -> its map's
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
        self.registry: NodeRegistry | None = None  # the node's entry in Redis (clusters)
        self._registry_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # Drain: `draining` is read by the admin endpoint (/readyz answers 503 while it is true).
        self.draining = False
        self._drain_deadline: float | None = None  # clock time the calls must end by
        self._drain_requested = asyncio.Event()
        self._orchestrators: set[Orchestrator] = set()  # calls in their dialogue, for the drain
        # Calls expected by channel id (outbound campaigns): their session variables, and the
        # future that gets (call id, end reason, duration s) when the call is over.
        self._expected: dict[str, tuple[dict[str, str], asyncio.Future[tuple[str, str, float]]]] = {}
        # Which calls are recorded, and their WAVs (named in each call's `call_end` record).
        self.recordings = Recordings(settings.recording, self.tasks)

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
            if s.admin.debug:
                log.warning("[admin] debug is on: /debug/ endpoints (tasks, objects, tracemalloc) are served")
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
        forward = self.services.metrics_sink
        assert forward is not None, "the composition always builds the metrics sink"
        sink = self._metrics_sink(forward)
        self.services_by_number = self.composition.by_number
        for services in (self.services, *self.services_by_number.values()):
            services.metrics_sink = sink
        self.pacer.start()
        self.audiosocket = AudioSocketServer(s.audiosocket, pacer=self.pacer)
        try:
            await self.audiosocket.start()
        except OSError as exc:  # preflight listened there a moment ago; someone took it since
            raise listen_error(exc, s.audiosocket.bind_host, s.audiosocket.bind_port) from exc
        self.ari = AriController(
            s.ari, self.audiosocket, self.on_call, max_calls=s.call.max_calls, on_unserved=self.on_unserved
        )
        if self.draining:  # SIGTERM while starting
            self.ari.refuse_new_calls()
        self._ari_task = self.tasks.spawn(self.ari.run(), "ari-controller")
        if s.ami.log_events:
            self._ami_task = self.tasks.spawn(self._log_ami_events(), "ami-event-logger")
        if s.redis.url and s.registry.enabled:
            self.registry = NodeRegistry(
                s.registry,
                s.redis.url,
                lambda: (self.calls_active, self.draining),
                ari=public_url(s.ari.url),
            )
            self._registry_task = self.tasks.spawn(self.registry.run(), "node-registry")
        maps = [self.services, *self.services_by_number.values()]
        if s.recording.enabled or any(m is not None and m.dialogue_map.recording for m in maps):
            self.recordings.sweep()
        # Everything built so far lives as long as the process: keep it out of the collector's
        # generations so a full collection does not stall the 20 ms tick (measured: 55 ms at 650 calls).
        gc.collect()
        gc.freeze()
        apply_gc_settings(s.gc)
        log.info(
            "voicebridge started: map %s, AudioSocket on %s:%d, ARI %s app %s",
            s.dialogue_map,
            s.audiosocket.bind_host,
            self.audiosocket.port,
            public_url(s.ari.url),
            s.ari.app,
        )

    def readiness(self) -> Readiness:
        """What keeps the service from taking calls, and what calls do without, by name.

        `not_ready` (empty: ready): ARI not connected, AMI not logged in (when `[ami]
        log_events`), Redis down (when `[redis] url` is set), draining. `degraded`: the
        providers whose circuit is open (calls fail fast to cached audio and the emergency
        phrase). No I/O: Redis's state is the audio cache's own (a failed read marks it down,
        its watch task's ping brings it back), so a probe never waits on a frozen Redis.
        """
        not_ready: dict[str, str] = {}
        if self.draining:
            not_ready["draining"] = "the service is draining: no new calls"
        if self.ari is None or not self.ari.connected.is_set():
            not_ready["ari"] = "not connected"
        if self.settings.ami.log_events and (self._ami_logger is None or not self._ami_logger.connected):
            not_ready["ami"] = "not logged in"
        cache = self.services.audio_cache if self.services is not None else None
        if self.settings.redis.url:
            if not isinstance(cache, ResilientAudioCache):
                not_ready["redis"] = "not started"
            elif not cache.redis_up:
                down_s = self.clock.now() - cache.down_since
                not_ready["redis"] = f"unreachable for {down_s:.0f} s (calls use memory and live TTS)"
        degraded: dict[str, str] = {}
        breakers = [self.composition.tts_breaker]
        if self.services is not None:
            breakers += [self.services.stt_breaker, self.services.llm_breaker]
        for breaker in breakers:
            if breaker is not None and breaker.is_open:
                degraded[breaker.name] = f"circuit open for {breaker.open_for_s:.0f} s"
        return Readiness(not_ready, degraded)

    def _metrics_sink(self, forward: MetricsSink) -> MetricsSink:
        observe = self.metrics.observe_record
        path_of = self.recordings.path_of

        def sink(record: MetricsRecord) -> None:
            if record.get("event") == "call_end":
                wav = path_of(str(record.get("trace_id")))
                if wav is not None:
                    record["recording"] = wav
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
            # Only when the call failed before its gateway existed (`_serve_call` pops it itself):
            # an outbound campaign waiting for this call must still hear that it is over.
            self._end_expected(call.channel_id, call.call_id, "error", 0.0)

    def _end_expected(self, channel_id: str, call_id: str, reason: str, duration_s: float) -> None:
        expected = self._expected.pop(channel_id, None)
        if expected is not None and not expected[1].done():
            expected[1].set_result((call_id, reason, duration_s))

    def on_unserved(self, channel_id: str, reason: str) -> None:
        """A caller channel the ARI controller never handed to `on_call` (refused, hung up or
        failed during setup, `AriController`'s `on_unserved`): an outbound call expected on it is
        over, with `reason` as its end reason and no call id."""
        self._end_expected(channel_id, "", reason, 0.0)

    async def _serve_call(self, call: AriCall) -> None:
        assert self.services is not None
        self.calls_total += 1
        s = self.settings
        started = self.clock.now()
        services = self.services_for(call.exten)
        recorder: CallRecorder | None = None
        try:
            if self.recordings.wanted(call.call_id, call.channel_vars, services.dialogue_map.recording):
                recorder = await self.recordings.start(call.call_id, call.conn)
        except Exception:  # recording never fails a call (e.g. the sweep cannot start)
            log.exception("call %s: recording not started", call.call_id)
        self.calls_active += 1
        gateway = TelephonyGateway(
            call.conn,
            self.pacer,
            clock=self.clock,
            vad_settings=s.vad,
            echo_settings=s.echo,
            playout_settings=s.playout,
            close_wait_s=s.audiosocket.close_wait_s,
            recorder=recorder,
        )
        reason = "error"
        self.metrics.call_started(gateway)
        try:
            obs, cid, observe_event = self._observer, call.call_id, self.metrics.observe_event

            def observer(event: CallEvent) -> None:
                observe_event(event, gateway)
                if obs is not None:
                    obs(cid, event)

            orchestrator = await create_orchestrator_instance(call.call_id, services, observer=observer)
            orchestrator.session_state.variables.update(self._session_variables(call))
            machine_check = s.campaign.machine_check()
            if machine_check is not None and call.channel_id in self._expected:  # outbound only
                orchestrator.screen_for_machine(machine_check)
            if self._drain_deadline is not None:  # taken just before the drain began
                orchestrator.drain_by(self._drain_deadline)
            self._orchestrators.add(orchestrator)
            freeze_call_objects(s.gc)  # [gc] freeze_calls: the set-up's objects out of full collections
            try:
                control = RingbackControl(call, gateway.outbound, _RINGBACK) if s.playout.ringback else call
                outcome = await orchestrator.run(gateway, gateway.outbound, control)
            finally:
                self._orchestrators.discard(orchestrator)
            reason = outcome.reason
        except asyncio.CancelledError:
            reason = "shutdown"  # the service stopped at once (close()): the call was hung up
            raise
        except CallSetupError as exc:
            log.error("%s", exc)  # names the call
            reason = "setup_failed"
            await self._apologise(call.call_id, gateway)
        except Exception:
            # A bug outside the dialogue (which apologises itself): logged once, with the call id;
            # the caller still hears the emergency phrase, and no other call is touched.
            log.exception("call %s failed", call.call_id)
            reason = "error"
            await self._apologise(call.call_id, gateway)
        finally:
            # The ARI controller hangs the AudioSocket leg up itself, in the order Asterisk copes
            # with (AriController._delete_media).
            await gateway.close(hang_up=False)
            if recorder is not None:
                await recorder.close()
                self.recordings.forget(call.call_id)
            self.metrics.call_ended(gateway, reason)
            self._end_expected(call.channel_id, call.call_id, reason, self.clock.now() - started)
            self.calls_active -= 1
            self.outcomes.append((call.call_id, reason))
            log.info("call %s ended: %s", call.call_id, reason)

    def expect_call(
        self, channel_id: str, variables: dict[str, str]
    ) -> asyncio.Future[tuple[str, str, float]]:
        """Announce a call about to be originated on `channel_id`: its dialogue starts with
        `variables` among the session variables; the future gets (call id, end reason, duration
        s) when it is over. `forget_call()` if it never comes (not answered)."""
        future: asyncio.Future[tuple[str, str, float]] = asyncio.get_running_loop().create_future()
        self._expected[channel_id] = (variables, future)
        return future

    def forget_call(self, channel_id: str) -> None:
        """Stop expecting the call on `channel_id`."""
        expected = self._expected.pop(channel_id, None)
        if expected is not None:
            expected[1].cancel()

    def _session_variables(self, call: AriCall) -> dict[str, str]:
        """What a call's session starts with: `caller_id` and `dnis` (the dialled number) when
        known, and an outbound call's own variables (`expect_call`)."""
        variables: dict[str, str] = {}
        if call.caller_number:
            variables["caller_id"] = call.caller_number
        if call.exten:
            variables["dnis"] = call.exten
        expected = self._expected.get(call.channel_id)
        if expected is not None:
            variables.update(expected[0])
        return variables

    def services_for(self, number: str | None) -> CallServices:
        """The services of the map serving calls to `number` (`[numbers]`, else `dialogue_map`)."""
        assert self.services is not None
        services = self.services_by_number.get(number or "", self.services)
        if self.services_by_number:
            log.info("call to %s: map %s", number, services.dialogue_map.name)
        return services

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

    async def _apologise(self, call_id: str, gateway: TelephonyGateway) -> None:
        """The call cannot be served: say the emergency phrase rather than hang up in silence."""
        assert self.services is not None
        c = self.settings.call
        await play_emergency(
            self.services.audio_cache,
            gateway.outbound,
            self.services.dialogue_map.settings.emergency_filler_key,
            call_id=call_id,
            bound_s=c.apologise_timeout_s,
            cache_timeout_s=c.cache_timeout_s,
        )

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
        await cancel_and_wait(self._registry_task, timeout=self.tasks.cancel_bound_s)
        if self.registry is not None:
            await self.registry.aclose()  # the node leaves the registry at once, not at its TTL
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
