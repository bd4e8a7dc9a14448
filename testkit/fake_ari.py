"""FakeAri: TEST INFRASTRUCTURE, not part of the production bridge.

A small stand-in for Asterisk's ARI on a real HTTP server and websocket (aiohttp), enough for
`AriController`'s call sequence (bridge/ari/legs.py), so `voicebridge serve` can take calls
without an Asterisk: `place_call()` sends a caller's StasisStart; the bridge's
`POST /channels/externalMedia` makes a `FakeAsterisk` connect to its AudioSocket server with the
UUID from `data` (as Asterisk does inside that request), followed by that channel's StasisStart;
every request is recorded, and `DELETE /channels/{id}` hangs the fake channel up and sends its
ChannelDestroyed. The swagger resource listing it serves is its own minimal one (only the
operations the controller uses), not Asterisk's.

What a real Asterisk then does on the SIP side (a congestion hang-up of an unanswered channel is
SIP 503) is checked on the real one in tests/e2e/test_drain.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from testkit.fake_asterisk import FakeAsterisk, FakeCallerPool

__all__ = ["FakeAri", "FakeChannel"]


def _param(name: str, kind: str = "query", required: bool = False) -> dict[str, Any]:
    return {"name": name, "paramType": kind, "required": required or kind == "path", "dataType": "string"}


def _op(method: str, nickname: str, *params: dict[str, Any], **extra: str) -> dict[str, Any]:
    return {
        "httpMethod": method,
        "nickname": nickname,
        "responseClass": "object",
        "parameters": list(params),
        **extra,
    }


# resource -> [(path, [operations])]: the operations AriController uses, with their ARI parameters.
_APIS: dict[str, list[tuple[str, list[dict[str, Any]]]]] = {
    "channels": [
        ("/channels/externalMedia", [_op("POST", "externalMedia", *(
            _param(n) for n in ("app", "channelId", "external_host", "encapsulation", "transport", "format", "data")
        ))]),
        ("/channels/{channelId}", [_op("DELETE", "hangup", _param("channelId", "path"), _param("reason_code"), _param("reason"))]),
        ("/channels/{channelId}/answer", [_op("POST", "answer", _param("channelId", "path"))]),
    ],
    "bridges": [
        ("/bridges", [_op("POST", "create", _param("type"), _param("bridgeId"))]),
        ("/bridges/{bridgeId}", [_op("DELETE", "destroy", _param("bridgeId", "path"))]),
        ("/bridges/{bridgeId}/addChannel", [_op("POST", "addChannel", _param("bridgeId", "path"), _param("channel"))]),
    ],
    "applications": [
        ("/applications/{applicationName}", [_op("GET", "get", _param("applicationName", "path"))]),
    ],
    "events": [
        ("/events", [_op("GET", "eventWebsocket", _param("app"), _param("subscribeAll"), upgrade="websocket")]),
    ],
}  # fmt: skip


@dataclass
class FakeChannel:
    """One fake caller channel and what the bridge did with it."""

    id: str
    answered: bool = False
    hangup_reason: str | None = None  # `reason` (or `reason_code`) of the bridge's DELETE
    deleted: asyncio.Event = field(default_factory=asyncio.Event)
    caller: FakeAsterisk | None = None  # its AudioSocket leg, once externalMedia connected it
    connected: asyncio.Event = field(default_factory=asyncio.Event)


class FakeAri:
    """ARI over HTTP + websocket on 127.0.0.1; `url` is what `[ari] url` should be."""

    def __init__(self, app_name: str = "voicebridge") -> None:
        self.app_name = app_name
        self.channels: dict[str, FakeChannel] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, query)
        self._em: dict[str, FakeChannel] = {}  # externalMedia channel id -> the caller's channel
        self._pools: dict[tuple[str, int], FakeCallerPool] = {}
        self._sockets: set[web.WebSocketResponse] = set()
        self.connected = asyncio.Event()  # the bridge's event websocket is open
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ari/api-docs/resources.json", self._resources)
        app.router.add_get("/ari/api-docs/{name}.json", self._declaration)
        app.router.add_get("/ari/events", self._events)
        app.router.add_get("/ari/applications/{name}", self._application)
        app.router.add_post("/ari/channels/externalMedia", self._external_media)
        app.router.add_post("/ari/channels/{id}/answer", self._answer)
        app.router.add_delete("/ari/channels/{id}", self._hangup)
        app.router.add_post("/ari/bridges", self._bridge_create)
        app.router.add_post("/ari/bridges/{id}/addChannel", self._no_content)
        app.router.add_delete("/ari/bridges/{id}", self._no_content)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        for pool in self._pools.values():
            await pool.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- driving calls ---
    async def place_call(self, exten: str = "100", caller: str = "79990001122") -> FakeChannel:
        """A new caller enters the Stasis app (its StasisStart is sent)."""
        channel = FakeChannel(f"fake-{uuid.uuid4().hex[:12]}")
        self.channels[channel.id] = channel
        await self._send(
            {
                "type": "StasisStart",
                "args": [exten],
                "channel": {
                    "id": channel.id,
                    "name": f"PJSIP/trunk-{channel.id}",
                    "caller": {"number": caller},
                },
            }
        )
        return channel

    async def _send(self, event: dict[str, Any]) -> None:
        event.setdefault("application", self.app_name)
        for ws in list(self._sockets):
            await ws.send_str(json.dumps(event))

    # --- HTTP handlers ---
    def _record(self, request: web.Request) -> None:
        self.requests.append((request.method, request.path, dict(request.query)))

    async def _application(self, request: web.Request) -> web.Response:
        return web.json_response({"name": self.app_name})

    async def _bridge_create(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response({"id": request.query.get("bridgeId", "")})

    async def _no_content(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.Response(status=204)

    async def _resources(self, request: web.Request) -> web.Response:
        base = f"http://127.0.0.1:{self.port}/ari"
        apis = [{"path": f"/api-docs/{name}.{{format}}", "description": name} for name in _APIS]
        return web.json_response(
            {"apiVersion": "fake", "swaggerVersion": "1.1", "basePath": base, "apis": apis}
        )

    async def _declaration(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _APIS:
            raise web.HTTPNotFound()
        apis = [{"path": path, "description": path, "operations": ops} for path, ops in _APIS[name]]
        base = f"http://127.0.0.1:{self.port}/ari"
        return web.json_response(
            {
                "swaggerVersion": "1.1",
                "basePath": base,
                "resourcePath": f"/api-docs/{name}.{{format}}",
                "apis": apis,
                "models": {},
            }
        )

    async def _events(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        self.connected.set()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._sockets.discard(ws)
            if not self._sockets:
                self.connected.clear()
        return ws

    async def _answer(self, request: web.Request) -> web.Response:
        self._record(request)
        channel = self.channels.get(request.match_info["id"])
        if channel is None:
            raise web.HTTPNotFound()
        channel.answered = True
        return web.Response(status=204)

    async def _external_media(self, request: web.Request) -> web.Response:
        self._record(request)
        q = request.query
        em_id, call_uuid = q["channelId"], uuid.UUID(q["data"])
        host, _, port = q["external_host"].rpartition(":")
        # The caller whose bridge this externalMedia channel joins: the one answered last
        # without a leg (the controller sets calls up one media leg at a time).
        channel = next(c for c in reversed(self.channels.values()) if c.answered and c.caller is None)
        pool = self._pools.get((host, int(port)))
        if pool is None:
            pool = self._pools[(host, int(port))] = FakeCallerPool(host, int(port))
        channel.caller = await pool.connect(call_uuid)  # inside the request, as Asterisk does
        channel.connected.set()
        self._em[em_id] = channel
        asyncio.get_running_loop().call_soon(
            lambda: asyncio.ensure_future(
                self._send(
                    {
                        "type": "StasisStart",
                        "args": [],
                        "channel": {"id": em_id, "name": f"AudioSocket/{em_id}"},
                    }
                )
            )
        )
        return web.json_response({"id": em_id, "name": f"AudioSocket/{em_id}"})

    async def _hangup(self, request: web.Request) -> web.Response:
        self._record(request)
        cid = request.match_info["id"]
        channel = self.channels.get(cid)
        leg = self._em.pop(cid, None)
        if channel is None and leg is None:
            raise web.HTTPNotFound()
        if leg is not None and leg.caller is not None:
            leg.caller.hangup()  # the AudioSocket connection closes with its channel
        if channel is not None:
            channel.hangup_reason = request.query.get("reason") or request.query.get("reason_code")
            channel.deleted.set()
            del self.channels[cid]
        await self._send({"type": "ChannelDestroyed", "cause": 16, "channel": {"id": cid}})
        return web.Response(status=204)
