"""The service's admin port (`bridge.admin.AdminServer`: /metrics /healthz /readyz /drain):
starting it, and its `/readyz` answer (`bridge.admin.Readiness`) from the running service's parts:
what keeps the service from taking calls, and what its calls do without."""

from __future__ import annotations

import logging
from collections.abc import Callable

from bridge.admin import AdminServer, AdminSettings, Readiness
from bridge.ami import AmiEventLogger
from bridge.ari import AriController
from bridge.settings import Settings
from orchestrator.breaker import CircuitBreaker
from orchestrator.cache.resilient import ResilientAudioCache
from orchestrator.clock import LoopClock
from orchestrator.factory import CallServices

__all__ = ["service_readiness", "start_admin_port"]

log = logging.getLogger(__name__)


async def start_admin_port(
    settings: AdminSettings,
    *,
    exposition: Callable[[], bytes],
    readiness: Callable[[], Readiness],
    drain: Callable[[], None],
) -> AdminServer:
    """The admin port, listening (`settings.port` 0: a free port, `AdminServer.port`)."""
    admin = AdminServer(settings, exposition=exposition, readiness=readiness, drain=drain)
    await admin.start()
    log.info("admin port on http://%s:%d (/metrics /healthz /readyz /drain)", settings.host, admin.port)
    if settings.debug:
        log.warning("[admin] debug is on: /debug/ endpoints (tasks, objects, tracemalloc) are served")
    return admin


def service_readiness(
    settings: Settings,
    clock: LoopClock,
    *,
    draining: bool,
    ari: AriController | None,
    ami_logger: AmiEventLogger | None,
    services: CallServices | None,
    tts_breaker: CircuitBreaker | None,
) -> Readiness:
    """`not_ready` (empty: ready): ARI not connected, AMI not logged in (when `[ami]
    log_events`), Redis down (when `[redis] url` is set), draining. `degraded`: the providers
    whose circuit is open (calls fail fast to cached audio and the emergency phrase). No I/O:
    Redis's state is the audio cache's own (a failed read marks it down, its watch task's ping
    brings it back), so a probe never waits on a frozen Redis.
    """
    not_ready: dict[str, str] = {}
    if draining:
        not_ready["draining"] = "the service is draining: no new calls"
    if ari is None or not ari.connected.is_set():
        not_ready["ari"] = "not connected"
    if settings.ami.log_events and (ami_logger is None or not ami_logger.connected):
        not_ready["ami"] = "not logged in"
    cache = services.audio_cache if services is not None else None
    if settings.redis.url:
        if not isinstance(cache, ResilientAudioCache):
            not_ready["redis"] = "not started"
        elif not cache.redis_up:
            down_s = clock.now() - cache.down_since
            not_ready["redis"] = f"unreachable for {down_s:.0f} s (calls use memory and live TTS)"
    degraded: dict[str, str] = {}
    breakers = [tts_breaker]
    if services is not None:
        breakers += [services.stt_breaker, services.llm_breaker]
    for breaker in breakers:
        if breaker is not None and breaker.is_open:
            degraded[breaker.name] = f"circuit open for {breaker.open_for_s:.0f} s"
    return Readiness(not_ready, degraded)
