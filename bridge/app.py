"""`voicebridge serve`: the service lifecycle. Start the admin port (metrics, health), the shared
pacer, the AudioSocket server and the ARI controller; serve each call with a TelephonyGateway and
a fresh Orchestrator, under the call's trace id; log AMI events; drain (a deploy) and stop cleanly.

Drain (`begin_drain()`, on SIGTERM or `POST /drain` on the admin port): `bridge.drain.CallDrain`;
`run_until()` returns once no call is left. The admin port and `/readyz`: `bridge.admin_port`. Outbound calls
announced by a campaign: `bridge.expected_calls.ExpectedCalls`.

What the calls use is built from `Settings` by the composition root (`bridge.composition`):
process-wide services once at start, the per-call providers by its factories.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import deque
from collections.abc import Callable

from bridge.admin import AdminServer, Readiness
from bridge.admin_port import service_readiness, start_admin_port
from bridge.ami import AmiEventLogger
from bridge.ami_events import log_in_event_logger
from bridge.ari import AriCall, AriController
from bridge.audiosocket.server import AudioSocketServer
from bridge.composition import Composition
from bridge.drain import CallDrain
from bridge.expected_calls import CallEnd, ExpectedCalls
from bridge.fd_limit import raise_fd_limit
from bridge.gateway import TelephonyGateway
from bridge.gc_policy import apply_gc_settings, freeze_call_objects
from bridge.logs import TRACE_ID, public_url
from bridge.media_warmup import warm_media_path
from bridge.metrics import ServiceMetrics
from bridge.metrics_sinks import service_metrics_sink
from bridge.pacer import Pacer
from bridge.preflight import listen_error
from bridge.recording import CallRecorder, Recordings
from bridge.registry import NodeRegistry
from bridge.ringback import RingbackControl, ringback_frames
from bridge.settings import Settings
from orchestrator.clock import LoopClock
from orchestrator.domain.errors import CallSetupError, ConfigError
from orchestrator.factory import CallServices, create_orchestrator_instance
from orchestrator.orchestrator import CallEvent
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
        self.drain = CallDrain(settings, self.clock)  # calls in their dialogue, for the drain
        self._expected = ExpectedCalls()  # outbound campaigns' calls, by channel id
        # Which calls are recorded, and their WAVs (named in each call's `call_end` record).
        self.recordings = Recordings(settings.recording, self.tasks)

    async def start(self) -> None:
        """Load the map, build the providers, warm the cache, start listening for calls."""
        s = self.settings
        if s.admin.enabled:  # first, so that /healthz answers while the cache warms
            self.admin = await start_admin_port(
                s.admin, exposition=self.metrics.exposition, readiness=self.readiness, drain=self.begin_drain
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
        forward = self.services.metrics_sink
        assert forward is not None, "the composition always builds the metrics sink"
        sink = service_metrics_sink(forward, self.metrics.observe_record, self.recordings.path_of)
        self.services_by_number = self.composition.by_number
        for services in (self.services, *self.services_by_number.values()):
            services.metrics_sink = sink
        # Before the first call and before the freeze below: what the first call's media would
        # make on the loop (ONNX Runtime, the Silero session, numpy's FFT) is made here instead.
        try:
            took = await warm_media_path(s.vad, s.echo)
        except Exception as exc:  # preflight loaded the engine; a failure here is still named
            raise ConfigError(
                f'[vad] engine = "{s.vad.engine}" / [echo]: a test call\'s media fails ({exc!r})'
            ) from exc
        log.info("media path warmed in %.0f ms (VAD %s)", took * 1000, s.vad.engine)
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
        # In the background: a provider slow to answer must not hold up taking calls.
        self.tasks.spawn(self.composition.warm_connections(), "provider-connections")
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

    @property
    def draining(self) -> bool:
        """Whether a drain has begun (`begin_drain()`): no new calls."""
        return self.drain.draining

    def readiness(self) -> Readiness:
        """What keeps the service from taking calls, and what calls do without, by name
        (`bridge.admin_port.service_readiness`)."""
        return service_readiness(
            self.settings,
            self.clock,
            draining=self.draining,
            ari=self.ari,
            ami_logger=self._ami_logger,
            services=self.services,
            tts_breaker=self.composition.tts_breaker,
        )

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
            self._expected.end(call.channel_id, call.call_id, "error", 0.0)

    def on_unserved(self, channel_id: str, reason: str) -> None:
        """A caller channel the ARI controller never handed to `on_call` (refused, hung up or
        failed during setup, `AriController`'s `on_unserved`): an outbound call expected on it is
        over, with `reason` as its end reason and no call id."""
        self._expected.end(channel_id, "", reason, 0.0)

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
            orchestrator.session_state.variables.update(self._expected.session_variables(call))
            machine_check = s.campaign.machine_check()
            if machine_check is not None and call.channel_id in self._expected:  # outbound only
                orchestrator.screen_for_machine(machine_check)
            self.drain.admit(orchestrator)  # drained at once if taken just before the drain began
            freeze_call_objects(s.gc)  # [gc] freeze_calls: the set-up's objects out of full collections
            try:
                control = RingbackControl(call, gateway.outbound, _RINGBACK) if s.playout.ringback else call
                outcome = await orchestrator.run(gateway, gateway.outbound, control)
            finally:
                self.drain.discard(orchestrator)
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
            self._expected.end(call.channel_id, call.call_id, reason, self.clock.now() - started)
            self.calls_active -= 1
            self.outcomes.append((call.call_id, reason))
            log.info("call %s ended: %s", call.call_id, reason)

    def expect_call(self, channel_id: str, variables: dict[str, str]) -> asyncio.Future[CallEnd]:
        """Announce a call about to be originated on `channel_id`: its dialogue starts with
        `variables` among the session variables; the future gets (call id, end reason, duration
        s) when it is over. `forget_call()` if it never comes (not answered)."""
        return self._expected.expect(channel_id, variables)

    def forget_call(self, channel_id: str) -> None:
        """Stop expecting the call on `channel_id`."""
        self._expected.forget(channel_id)

    def services_for(self, number: str | None) -> CallServices:
        """The services of the map serving calls to `number` (`[numbers]`, else `dialogue_map`)."""
        assert self.services is not None
        services = self.services_by_number.get(number or "", self.services)
        if self.services_by_number:
            log.info("call to %s: map %s", number, services.dialogue_map.name)
        return services

    async def _log_ami_events(self) -> None:
        """Hangup causes and call events into the log (`bridge.ami_events`); AMI being down never
        stops the service. `close()` sets `_stopping`: this returns after the current attempt."""
        self._ami_logger = await log_in_event_logger(self.settings.ami, self._stopping)

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
        """Stop taking calls and let the calls in progress end (`CallDrain.begin`).

        Synchronous (a signal handler or an HTTP handler calls it) and idempotent: the first call
        fixes the deadline. `run_until()` returns once the last call has ended.
        """
        self.drain.begin(self.ari)

    async def run_until(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, the ARI controller gives up, or a drain has ended the last call."""
        assert self._ari_task is not None
        stopper = self.tasks.spawn(stop.wait(), "stop-signal")
        assert self.ari is not None  # set with `_ari_task`
        drained = self.tasks.spawn(self.drain.drained(self.ari), "drain")
        try:
            await asyncio.wait({stopper, drained, self._ari_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(stopper, drained, timeout=self.tasks.cancel_bound_s)

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
