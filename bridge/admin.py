"""The admin HTTP port (aiohttp, in the service's own event loop): metrics, health, drain.

    GET  /metrics   Prometheus text format (`bridge.metrics.ServiceMetrics`)
    GET  /healthz   200 {"status": "alive"} while the process serves HTTP at all
    GET  /readyz    200 {"ready": true, "degraded": {what: why}}, or
                    503 {"ready": false, "not_ready": {what: why}, "degraded": {what: why}}
    POST /drain     202 {"draining": true}: stop taking new calls (`VoicebridgeApp.begin_drain`)
    /debug/...      with `debug = true` only: tasks, object counts, allocation diffs
                    (`bridge.admin_debug`)

aiohttp rather than prometheus-client's own server thread: readiness reads the app's state and
`/drain` calls into the app, both on the loop that owns them; a scrape
reads the calls' counters on that same loop, so it sees them between frames, never mid-update.
Loopback by default: the port can stop the service taking calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import pydantic.dataclasses
from aiohttp import web
from pydantic import ConfigDict, Field

from bridge.admin_debug import DebugEndpoints
from bridge.metrics import CONTENT_TYPE
from orchestrator.domain.errors import ConfigError

__all__ = ["AdminServer", "AdminSettings", "Readiness"]


@dataclass(frozen=True, slots=True)
class Readiness:
    """`/readyz`'s answer: what keeps the service from taking calls (name -> why; empty: ready),
    and what is degraded without stopping it (name -> why; e.g. a provider's circuit open)."""

    not_ready: dict[str, str] = field(default_factory=dict)
    degraded: dict[str, str] = field(default_factory=dict)


@pydantic.dataclasses.dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class AdminSettings:
    """The admin HTTP port (section `[admin]`)."""

    enabled: bool = True
    host: str = "127.0.0.1"  # loopback: anyone who reaches it can drain the service
    port: Annotated[int, Field(ge=0, le=65535)] = 9180  # 0: any free port (tests)
    # The /debug/ endpoints (a leak hunt, the soak): off, they cost CPU when used.
    debug: bool = False


class AdminServer:
    """Serves the endpoints above until `close()`."""

    def __init__(
        self,
        settings: AdminSettings,
        *,
        exposition: Callable[[], bytes],
        readiness: Callable[[], Readiness],
        drain: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._exposition = exposition
        self._readiness = readiness
        self._drain = drain
        self._runner: web.AppRunner | None = None
        self.port = 0  # the bound port once started

    async def start(self) -> None:
        """Bind and serve. Raises `ConfigError` naming `[admin] host/port` when they cannot be bound."""
        app = web.Application()
        app.add_routes(
            [
                web.get("/metrics", self._metrics),
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.post("/drain", self._post_drain),
            ]
        )
        if self._settings.debug:
            app.add_routes(DebugEndpoints().routes())
        runner = web.AppRunner(app, access_log=None)  # a scrape every few seconds is not news
        await runner.setup()
        site = web.TCPSite(runner, self._settings.host, self._settings.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{self._settings.host}:{self._settings.port}"
            raise ConfigError(f"admin.host/admin.port ({where}): cannot listen: {exc.strerror}") from exc
        self._runner = runner
        server = site._server  # aiohttp keeps the asyncio server here; its socket has the port
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else self._settings.port

    async def close(self) -> None:
        """Stop serving. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        r = self._readiness()  # no I/O: a probe never waits on a dependency
        if r.not_ready:
            body = {"ready": False, "not_ready": r.not_ready, "degraded": r.degraded}
            return web.json_response(body, status=503)
        return web.json_response({"ready": True, "degraded": r.degraded})

    async def _post_drain(self, _request: web.Request) -> web.Response:
        self._drain()
        return web.json_response({"draining": True}, status=202)
