"""`AriConnection`: the ARI websocket of one Stasis app, reconnected until closed.

Events are read from the websocket here (not through `aioari.Client.run`) and handed, as the raw
JSON text, to a synchronous callback that must not block: the reader never awaits a call's work,
so one slow call never delays another call's events. `run()` reconnects with capped exponential
backoff, because a websocket that closes (Asterisk restart) never reopens by itself.

The REST side is `aioari.Client` (swagger-generated from Asterisk's own resource listing); it is
replaced on every reconnection, so users read `client` each time and wait on `connected`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from typing import Any

import aioari
import aiohttp
from aiohttp import web_exceptions
from aioswagger11.http_client import AsynchronousHttpClient  # type: ignore[import-untyped]

from bridge.ari.settings import AriSettings
from bridge.logs import public_url

__all__ = ["AriConnection"]

log = logging.getLogger(__name__)


def _describe(exc: BaseException) -> str:
    """An ARI failure for the log: its class and status or (bounded) message; no response body."""
    status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
    if status == 401:
        return f"{type(exc).__name__}: HTTP 401: ARI refused the credentials ([ari] username/password)"
    if status is not None:
        return f"{type(exc).__name__}: HTTP {status}"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


class _BasicAuthHttpClient(AsynchronousHttpClient):  # type: ignore[misc]  # aioswagger11 is untyped
    """aioswagger11's client with HTTP Basic auth on every request, the websocket upgrade included.

    Its own authenticators put the credentials in the query string for the websocket (and its
    `ApiKeyAuthenticator` for every request), where they end up in DEBUG request logs and in the
    URL of any error; a session-wide Basic `Authorization` header keeps them out of URLs.
    """

    def __init__(self, username: str, password: str) -> None:
        # Not super().__init__(): that builds a session without auth.
        self.authenticator = None
        self.websockets: set[aiohttp.ClientWebSocketResponse] = set()
        basic = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self.session = aiohttp.ClientSession(headers={"Authorization": f"Basic {basic}"})


class AriConnection:
    """Connects to ARI, subscribes to the app's events and reconnects until `close()`.

    `on_text(data)` gets every TEXT message of the websocket (one ARI event as JSON) in order;
    it runs on the reader and must return without awaiting anything.
    """

    def __init__(self, settings: AriSettings, on_text: Callable[[str], None]) -> None:
        self._settings = settings
        self._on_text = on_text
        self._client: Any = None  # aioari.Client of the current connection
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._closing = False
        self._stop = asyncio.Event()  # cuts a reconnect backoff short
        self._run_done = asyncio.Event()
        self._run_done.set()
        self.connected = asyncio.Event()  # set while the app is registered and events flow
        self.connects = 0  # successful (re)connections, for tests and logs

    @property
    def client(self) -> Any:
        """The current connection's `aioari.Client`, or None while disconnected."""
        return self._client

    async def run(self) -> None:
        """Connect, serve events, and reconnect with capped backoff until `close()`."""
        self._run_done.clear()
        delay = self._settings.reconnect_min_s
        try:
            while not self._closing:
                try:
                    await self._serve_once()
                    delay = self._settings.reconnect_min_s  # it was up: retry quickly after a restart
                except Exception as exc:  # any failure of one connection: retry (never CancelledError)
                    log.warning("ARI at %s unavailable: %s", public_url(self._settings.url), _describe(exc))
                if self._closing:
                    break
                log.info("ARI reconnect in %.1f s", delay)
                try:
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
                except TimeoutError:
                    pass
                delay = min(delay * 2, self._settings.reconnect_max_s)
        finally:
            self._run_done.set()

    async def _serve_once(self) -> None:
        s = self._settings
        http = _BasicAuthHttpClient(s.username, s.password)
        client: Any = aioari.Client(s.url, http)
        try:
            async with asyncio.timeout(s.timeout_s):
                await client.init()  # loads the swagger resources over HTTP
                ws = await client.swagger.events.eventWebsocket(app=s.app, subscribeAll="false")
                client.websockets.add(ws)  # so client.close() closes it
            self._client, self._ws = client, ws
            if self._closing:
                return  # close() ran while we were connecting (no await since it checked _ws)
            await self._wait_app_registered(client)
            self.connects += 1
            self.connected.set()
            log.info("ARI connected to %s, app %s", s.url, s.app)
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._on_text(msg.data)
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    log.warning("ARI websocket error: %s", ws.exception())
                    break
            if not self._closing:
                log.warning("ARI websocket closed")
        finally:
            self.connected.clear()
            self._ws = None
            if self._client is client:
                self._client = None  # live calls' cleanup waits for the next connection's client
            # Not client.close(): on a client whose init() failed it recurses in __getattr__.
            try:
                await http.close()  # closes the websocket too
            except Exception as exc:  # best effort: log and go on (never CancelledError)
                log.warning("closing ARI HTTP client failed: %r", exc)

    async def _wait_app_registered(self, client: Any) -> None:
        # Asterisk registers the app just after the websocket upgrade; a call placed before that
        # fails with "Stasis app does not exist". Poll until it is listed (bounded).
        async with asyncio.timeout(self._settings.timeout_s):
            while True:
                try:
                    await client.applications.get(applicationName=self._settings.app)
                    return
                except web_exceptions.HTTPNotFound:
                    await asyncio.sleep(0.05)

    def stop_reconnecting(self) -> None:
        """Serve the current websocket to its end, but never reconnect (first half of `close()`).

        The websocket stays open so that calls being torn down can still send their DELETEs.
        """
        self._closing = True
        self._stop.set()

    async def close(self) -> None:
        """Stop reconnecting, close the websocket, and wait (at most `timeout_s`) for `run()` to end."""
        self.stop_reconnecting()
        if self._ws is not None:
            await self._ws.close()
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                await self._run_done.wait()
        except TimeoutError:
            log.warning("ARI controller: run() did not stop within %s s", self._settings.timeout_s)
