"""FakeAri: TEST INFRASTRUCTURE, not part of the production bridge.

A real aiohttp HTTP server that answers the part of Asterisk 22's ARI the bridge uses, the way
Asterisk does (shared/docs/asterisk-observed.md, res/res_ari.c): the swagger resource listing
and declarations aioari loads (with `basePath` rewritten to `http://<Host>/ari`, as Asterisk does
even over TLS), Basic or `api_key` authentication on every request, the events websocket,
channels (list/get/answer/hangup/externalMedia) and bridges (create/addChannel/destroy).
`externalMedia` connects a `FakeAsterisk` AudioSocket leg to the bridge inside the request, as
Asterisk does, then sends the new channel's StasisStart.

What the bridge did is visible: every request (`requests`, with how it authenticated), whether
a channel was answered, and every channel it hung up (`deleted`, with the `reason` of its
`DELETE /channels/{id}`, e.g. `congestion` for a refused call); `leg_of(caller)` is the
AudioSocket leg bridged with a caller.

Transfers: `POST /channels` (originate into the app) dials an operator scripted per endpoint in
`operators` (`Operator`: answers after a delay, is busy, or never answers; unknown endpoints
answer 400 as Asterisk does for an unknown technology); `originated` keeps each request with its
channel variables; `hangup_channel` is the operator's (or anyone's) BYE after the call.

Faults a test can cause: `place_call`, `hangup_caller` (the caller's BYE: its events are lost if
the websocket is down, and its media leg stays up, as in Asterisk), `drop_websocket` (optionally
refusing reconnections until `allow_websocket`), `restart` (everything gone: legs hung up,
channels and bridges forgotten, websocket closed). Over TLS when given an `ssl.SSLContext`.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from testkit.fake_asterisk import FakeAsterisk, FakeCallerPool

__all__ = ["FakeAri", "FakeChannel", "Operator", "Originated", "RequestSeen"]

# The operations the bridge uses: resource -> [(path, method, nickname, responseClass, params)].
# A param is (name, paramType, required).
_P = tuple[str, str, bool]
_OPS: dict[str, list[tuple[str, str, str, str, list[_P]]]] = {
    "channels": [
        ("/channels", "GET", "list", "List[Channel]", []),
        (
            "/channels",
            "POST",
            "originate",
            "Channel",
            [
                ("endpoint", "query", True),
                ("app", "query", False),
                ("appArgs", "query", False),
                ("channelId", "query", False),
                ("timeout", "query", False),
                ("callerId", "query", False),
                ("variables", "body", False),
            ],
        ),
        ("/channels/{channelId}", "GET", "get", "Channel", [("channelId", "path", True)]),
        (
            "/channels/{channelId}",
            "DELETE",
            "hangup",
            "void",
            [("channelId", "path", True), ("reason_code", "query", False), ("reason", "query", False)],
        ),
        ("/channels/{channelId}/answer", "POST", "answer", "void", [("channelId", "path", True)]),
        (
            "/channels/externalMedia",
            "POST",
            "externalMedia",
            "Channel",
            [
                (name, "query", name in ("app", "external_host", "format"))
                for name in (
                    "channelId",
                    "app",
                    "external_host",
                    "encapsulation",
                    "transport",
                    "connection_type",
                    "format",
                    "direction",
                    "data",
                )
            ],
        ),
    ],
    "bridges": [
        ("/bridges", "POST", "create", "Bridge", [("type", "query", False), ("bridgeId", "query", False)]),
        ("/bridges/{bridgeId}", "DELETE", "destroy", "void", [("bridgeId", "path", True)]),
        (
            "/bridges/{bridgeId}/addChannel",
            "POST",
            "addChannel",
            "void",
            [("bridgeId", "path", True), ("channel", "query", True)],
        ),
    ],
    "applications": [
        (
            "/applications/{applicationName}",
            "GET",
            "get",
            "Application",
            [("applicationName", "path", True)],
        )
    ],
    "events": [
        (
            "/events",
            "GET",
            "eventWebsocket",
            "Message",
            [("app", "query", True), ("subscribeAll", "query", False)],
        )
    ],
}


def _declaration(resource: str, base_path: str) -> dict[str, Any]:
    apis = []
    for path, method, nickname, response, params in _OPS[resource]:
        op: dict[str, Any] = {
            "httpMethod": method,
            "nickname": nickname,
            "responseClass": response,
            "parameters": [
                {"name": n, "paramType": t, "required": r, "dataType": "string", "allowMultiple": False}
                for n, t, r in params
            ],
        }
        if nickname == "eventWebsocket":
            op["upgrade"] = "websocket"
            op["websocketProtocol"] = "ari"
        apis.append({"path": path, "description": nickname, "operations": [op]})
    return {
        "apiVersion": "2.0.0",
        "swaggerVersion": "1.1",
        "basePath": base_path,
        "resourcePath": f"/api-docs/{resource}.{{format}}",
        "apis": apis,
        "models": {},
    }


@dataclass(frozen=True, slots=True)
class RequestSeen:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    auth: str | None  # "basic", "api_key" or None


@dataclass
class FakeChannel:
    """One channel (a caller's, or an externalMedia one) and what the bridge did with it."""

    id: str
    name: str
    exten: str
    caller: str
    leg: FakeAsterisk | None = None  # the AudioSocket leg of an externalMedia channel
    answered: bool = False
    hangup_reason: str | None = None  # `reason` (or `reason_code`) of the bridge's DELETE, if any
    channelvars: dict[str, str] | None = None  # ari.conf `channelvars` as Asterisk sends them

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": "Up",
            "caller": {"name": "", "number": self.caller},
            "connected": {"name": "", "number": ""},
            "dialplan": {"context": "voicebridge-inbound", "exten": self.exten, "priority": 2},
            "language": "en",
            **({"channelvars": self.channelvars} if self.channelvars is not None else {}),
        }


@dataclass(frozen=True)
class Operator:
    """How a dialled endpoint behaves: answer after `answer_after_s`, or hang up at once with
    `busy` (cause 17), or ring until the originate `timeout` (then cause 19, no answer)."""

    answer_after_s: float | None = 0.05
    busy: bool = False


@dataclass
class Originated:
    """One `POST /channels` the bridge made."""

    endpoint: str
    channel_id: str
    app_args: str
    timeout: int
    variables: dict[str, str]
    caller_id: str = ""  # `callerId`, what the operator's phone shows


@dataclass
class _Waiter:
    predicate: Callable[[], bool]
    future: asyncio.Future[None] = field(repr=False)


class FakeAri:
    """An ARI server for one Stasis app on 127.0.0.1; `start()`, drive it, `close()`."""

    def __init__(
        self,
        *,
        username: str = "voicebridge",
        password: str = "voicebridge",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._credentials = f"{username}:{password}"
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.channels: dict[str, FakeChannel] = {}  # the channels that exist now
        self.deleted: dict[str, FakeChannel] = {}  # every channel the bridge hung up (DELETE)
        self.bridges: dict[str, set[str]] = {}
        self.requests: list[RequestSeen] = []
        self.ws_connects = 0
        self.ws_connected_at: float | None = None  # loop clock of the last websocket accepted
        self._ws: web.WebSocketResponse | None = None
        self._app_name: str | None = None
        self._refuse_ws = False
        self._pools: dict[tuple[str, int], FakeCallerPool] = {}
        self._numbers = itertools.count(1)
        self._waiters: list[_Waiter] = []
        self.operators: dict[str, Operator] = {}  # endpoint -> how it answers an originate
        self.external_media_status: int | None = None  # set: externalMedia fails with this status
        self.originated: list[Originated] = []
        self._dialling: set[asyncio.Task[None]] = set()

    # --- lifecycle ---
    @property
    def url(self) -> str:
        """The base URL to configure as `[ari] url`."""
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        """Listen on 127.0.0.1 (a free port)."""
        app = web.Application(middlewares=[self._auth])
        r = app.router
        r.add_get("/ari/api-docs/resources.json", self._resources)
        r.add_get("/ari/api-docs/{name}.json", self._api_docs)
        r.add_get("/ari/events", self._events)
        r.add_get("/ari/applications/{name}", self._application)
        r.add_get("/ari/channels", self._list_channels)
        r.add_post("/ari/channels", self._originate)
        r.add_post("/ari/channels/externalMedia", self._external_media)
        r.add_get("/ari/channels/{id}", self._get_channel)
        r.add_delete("/ari/channels/{id}", self._delete_channel)
        r.add_post("/ari/channels/{id}/answer", self._answer)
        r.add_post("/ari/bridges", self._create_bridge)
        r.add_delete("/ari/bridges/{id}", self._destroy_bridge)
        r.add_post("/ari/bridges/{id}/addChannel", self._add_channel)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._ssl)
        await site.start()
        server = site._server  # noqa: SLF001  # aiohttp exposes the bound port only here
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Hang up every leg, close the websocket and stop listening."""
        for task in self._dialling:
            task.cancel()
        await asyncio.gather(*self._dialling, return_exceptions=True)
        await self._forget_everything()
        if self._runner is not None:
            await self._runner.cleanup()
        for pool in self._pools.values():
            await pool.close()

    # --- what a test does ---
    @property
    def websocket_up(self) -> bool:
        """Whether the app's events websocket is connected."""
        return self._ws is not None and not self._ws.closed

    async def place_call(
        self,
        exten: str = "100",
        caller: str = "79990000001",
        *,
        channelvars: dict[str, str] | None = None,
        channel_id: str | None = None,
    ) -> str:
        """A caller enters the Stasis app: returns its channel id (StasisStart is sent, with
        `channelvars` in the channel's JSON when given, as ari.conf `channelvars` makes Asterisk do;
        `channel_id` as an originate with a chosen id gives it)."""
        n = next(self._numbers)
        channel = FakeChannel(
            channel_id or f"caller-{n}", f"PJSIP/trunk-{n:08x}", exten, caller, channelvars=channelvars
        )
        self.channels[channel.id] = channel
        await self._send({"type": "StasisStart", "args": [exten], "channel": channel.json()})
        self._changed()
        return channel.id

    async def hangup_caller(self, channel_id: str) -> None:
        """The caller hangs up (BYE): its channel goes; its events are lost if the websocket is down.

        The externalMedia channel stays up, alone in the bridge, as in Asterisk.
        """
        channel = self.channels.pop(channel_id)
        for members in self.bridges.values():
            members.discard(channel_id)
        for kind in ("ChannelHangupRequest", "StasisEnd", "ChannelDestroyed"):
            await self._send({"type": kind, "cause": 16, "channel": channel.json()})
        self._changed()

    async def drop_websocket(self, *, refuse: bool = False) -> None:
        """Close the events websocket; with `refuse`, reconnections get 503 until `allow_websocket`."""
        self._refuse_ws = refuse
        ws, self._ws = self._ws, None
        self._app_name = None
        if ws is not None:
            await ws.close()
        self._changed()

    def allow_websocket(self) -> None:
        """Accept websocket upgrades again."""
        self._refuse_ws = False

    async def restart(self) -> None:
        """Asterisk restarts: every leg hung up, channels and bridges gone, websocket dropped.

        Reconnections are refused until `allow_websocket()` (Asterisk coming back).
        """
        self._refuse_ws = True
        await self._forget_everything()
        self._changed()

    def leg_of(self, channel_id: str) -> FakeAsterisk | None:
        """The AudioSocket leg of the externalMedia channel bridged with `channel_id`, if any."""
        for members in self.bridges.values():
            if channel_id in members:
                for other in members:
                    channel = self.channels.get(other)
                    if channel is not None and channel.leg is not None:
                        return channel.leg
        return None

    def legs(self) -> list[FakeAsterisk]:
        """The AudioSocket legs of the externalMedia channels that exist."""
        return [c.leg for c in self.channels.values() if c.leg is not None]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until `predicate()` holds, rechecked on every change of the fake's state."""
        if predicate():
            return
        waiter = _Waiter(predicate, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter.future
        finally:
            self._waiters.remove(waiter)

    # --- internals ---
    def _changed(self) -> None:
        for w in self._waiters:
            if not w.future.done() and w.predicate():
                w.future.set_result(None)

    async def _forget_everything(self) -> None:
        ws, self._ws = self._ws, None
        self._app_name = None
        if ws is not None:
            await ws.close()
        for channel in list(self.channels.values()):
            if channel.leg is not None:
                channel.leg.hangup()
        self.channels.clear()
        self.bridges.clear()

    async def _send(self, event: dict[str, Any]) -> None:
        if self._ws is None or self._ws.closed:
            return  # lost, as Asterisk's events are while no websocket is connected
        event.setdefault("application", self._app_name)
        await self._ws.send_str(json.dumps(event))

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        auth: str | None = None
        ok = False
        if header.startswith("Basic "):
            auth = "basic"
            ok = base64.b64decode(header[6:]).decode() == self._credentials
        elif "api_key" in request.query:
            auth = "api_key"
            ok = request.query["api_key"] == self._credentials
        self.requests.append(RequestSeen(request.method, request.path, dict(request.query), auth))
        if not ok:
            return web.json_response(
                {"message": "Authentication required"},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="Asterisk REST Interface"'},
            )
        response: web.StreamResponse = await handler(request)
        return response

    def _base_path(self, request: web.Request) -> str:
        return f"http://{request.host}/ari"  # http even over TLS: what Asterisk 22 does

    async def _resources(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "apiVersion": "2.0.0",
                "swaggerVersion": "1.1",
                "basePath": self._base_path(request),
                "apis": [{"path": f"/api-docs/{name}.{{format}}", "description": name} for name in _OPS],
            }
        )

    async def _api_docs(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _OPS:
            raise web.HTTPNotFound()
        return web.json_response(_declaration(name, self._base_path(request)))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if self._refuse_ws:
            raise web.HTTPServiceUnavailable()
        ws = web.WebSocketResponse(protocols=("ari",))
        await ws.prepare(request)
        if self._ws is not None:
            await self._ws.close()
        self._ws, self._app_name = ws, request.query.get("app")
        self.ws_connects += 1
        self.ws_connected_at = asyncio.get_running_loop().time()
        self._changed()
        async for _ in ws:  # the bridge sends nothing; read until either side closes
            pass
        if self._ws is ws:
            self._ws, self._app_name = None, None
            self._changed()
        return ws

    async def _application(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name != self._app_name:
            raise web.HTTPNotFound()
        return web.json_response({"name": name, "channel_ids": list(self.channels)})

    def _channel(self, request: web.Request) -> FakeChannel:
        channel = self.channels.get(request.match_info["id"])
        if channel is None:
            raise web.HTTPNotFound(text='{"message": "Channel not found"}')
        return channel

    async def _list_channels(self, request: web.Request) -> web.Response:
        return web.json_response([c.json() for c in self.channels.values()])

    async def _get_channel(self, request: web.Request) -> web.Response:
        return web.json_response(self._channel(request).json())

    async def _answer(self, request: web.Request) -> web.Response:
        self._channel(request).answered = True
        self._changed()
        return web.Response(status=204)

    async def _delete_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        channel.hangup_reason = request.query.get("reason") or request.query.get("reason_code")
        del self.channels[channel.id]
        self.deleted[channel.id] = channel
        for members in self.bridges.values():
            members.discard(channel.id)
        if channel.leg is not None:
            channel.leg.hangup()  # EOF on the AudioSocket stream, as Asterisk does
        for kind in ("StasisEnd", "ChannelDestroyed"):
            await self._send({"type": kind, "cause": 16, "channel": channel.json()})
        self._changed()
        return web.Response(status=204)

    async def hangup_channel(self, channel_id: str, cause: int = 16) -> None:
        """A channel hangs up by itself (e.g. the operator after a transfer): StasisEnd and
        ChannelDestroyed are sent, it leaves its bridge."""
        channel = self.channels.pop(channel_id)
        for members in self.bridges.values():
            members.discard(channel_id)
        for kind in ("StasisEnd", "ChannelDestroyed"):
            await self._send({"type": kind, "cause": cause, "channel": channel.json()})
        self._changed()

    async def _originate(self, request: web.Request) -> web.Response:
        q = request.query
        endpoint = q["endpoint"]
        operator = self.operators.get(endpoint)
        if operator is None:
            raise web.HTTPBadRequest(text='{"message": "Invalid endpoint"}')
        body = await request.json() if request.can_read_body else {}
        n = next(self._numbers)
        channel = FakeChannel(q.get("channelId") or f"op-{n}", f"{endpoint}-{n:08x}", "", "")
        timeout = int(q.get("timeout", "30"))
        self.originated.append(
            Originated(
                endpoint,
                channel.id,
                q.get("appArgs", ""),
                timeout,
                dict(body.get("variables") or {}),
                q.get("callerId", ""),
            )
        )
        self.channels[channel.id] = channel
        task = asyncio.get_running_loop().create_task(
            self._dial(channel, operator, timeout, q.get("appArgs", "")), name=f"fake-ari-dial-{channel.id}"
        )
        self._dialling.add(task)
        task.add_done_callback(self._dialling.discard)
        self._changed()
        return web.json_response(channel.json())

    async def _dial(self, channel: FakeChannel, operator: Operator, timeout: int, app_args: str) -> None:
        if operator.busy or operator.answer_after_s is None:
            await asyncio.sleep(0.02 if operator.busy else timeout)
            if self.channels.pop(channel.id, None) is not None:  # not hung up by the bridge meanwhile
                await self._send(
                    {
                        "type": "ChannelDestroyed",
                        "cause": 17 if operator.busy else 19,
                        "channel": channel.json(),
                    }
                )
                self._changed()
            return
        await asyncio.sleep(operator.answer_after_s)
        if channel.id in self.channels:
            channel.answered = True
            await self._send(
                {"type": "StasisStart", "args": [app_args] if app_args else [], "channel": channel.json()}
            )
            self._changed()

    async def _external_media(self, request: web.Request) -> web.Response:
        if self.external_media_status is not None:  # as Asterisk does when it cannot make the leg
            return web.json_response({"message": "fake failure"}, status=self.external_media_status)
        q = request.query
        host, _, port = q["external_host"].rpartition(":")
        n = next(self._numbers)
        channel = FakeChannel(q.get("channelId") or f"em-{n}", f"AudioSocket/{host}:{port}-{n:08x}", "", "")
        pool = self._pools.get((host, int(port)))
        if pool is None:
            pool = self._pools[(host, int(port))] = FakeCallerPool(host, int(port))
        # Asterisk connects to the AudioSocket server inside this request.
        channel.leg = await pool.connect(uuid.UUID(q["data"]))
        self.channels[channel.id] = channel
        await self._send({"type": "StasisStart", "args": [], "channel": channel.json()})
        self._changed()
        return web.json_response(channel.json())

    async def _create_bridge(self, request: web.Request) -> web.Response:
        bridge_id = request.query.get("bridgeId") or f"bridge-{next(self._numbers)}"
        self.bridges[bridge_id] = set()
        return web.json_response({"id": bridge_id, "bridge_type": "mixing", "channels": []})

    async def _destroy_bridge(self, request: web.Request) -> web.Response:
        if self.bridges.pop(request.match_info["id"], None) is None:
            raise web.HTTPNotFound()
        self._changed()
        return web.Response(status=204)

    async def _add_channel(self, request: web.Request) -> web.Response:
        members = self.bridges.get(request.match_info["id"])
        if members is None:
            raise web.HTTPNotFound()
        channel_id = request.query["channel"]
        if channel_id not in self.channels:
            raise web.HTTPUnprocessableEntity(text='{"message": "Channel not found"}')
        members.add(channel_id)
        self._changed()
        return web.Response(status=204)
