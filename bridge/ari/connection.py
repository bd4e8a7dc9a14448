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
import ipaddress
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

import aioari
import aioari.model
import aiohttp
from aiohttp import web_exceptions

from bridge.ari.http import AriHttpClient
from bridge.ari.settings import AriSettings
from bridge.asterisk_names import warn_if_default_credentials
from bridge.logs import public_url

__all__ = ["AriConnection", "ari_op"]

log = logging.getLogger(__name__)


def _describe(exc: BaseException) -> str:
    """An ARI failure for the log: its class and status or (bounded) message; no response body."""
    status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
    if status == 401:
        return f"{type(exc).__name__}: HTTP 401: ARI refused the credentials ([ari] username/password)"
    if status is not None:
        return f"{type(exc).__name__}: HTTP {status}"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


async def ari_op(client: Any, repo: str, op: str, **params: Any) -> Any:
    """`client.<repo>.<op>(**params)` of an `aioari.Client`, the same request and result.

    Not through `Repository.__getattr__`: that defines a class (`AttrOp`) on every access, and a
    class is a reference cycle, so each request left ~10 objects for the cycle collector (seven
    requests a call). Raises AttributeError for an operation the repository does not have, as
    aioari does.
    """
    repository = getattr(client, repo)
    oper = getattr(repository.api, op, None)
    if not (callable(oper) and hasattr(oper, "json")):
        raise AttributeError(f"{repository!r} object has no attribute {op!r}")
    resp = await client.run_operation(oper, **params)
    return await aioari.model.promote(client, resp, oper.json)


class AriConnection:
    """Connects to ARI, subscribes to the app's events and reconnects until `close()`.

    `on_text(data)` gets every TEXT message of the websocket (one ARI event as JSON) in order;
    it runs on the reader and must return without awaiting anything. `on_connected(n)` runs
    likewise each time the app is registered again (n = 1, 2, ...: the connection's number),
    before any event of that connection is read: events sent while the websocket was down are
    lost, so a reconnection is the moment to compare our state with Asterisk's.
    """

    def __init__(
        self,
        settings: AriSettings,
        on_text: Callable[[str], None],
        on_connected: Callable[[int], None] | None = None,
    ) -> None:
        self._settings = settings
        self._on_text = on_text
        self._on_connected = on_connected
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
        self._warn_insecure()
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
        http = AriHttpClient(s)
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
            log.info("ARI connected to %s, app %s", public_url(s.url), s.app)
            if self._on_connected is not None:
                self._on_connected(self.connects)
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

    def _warn_insecure(self) -> None:
        """Say at start what an attacker on the network or the host could exploit (WARNING)."""
        s = self._settings
        warn_if_default_credentials("ARI", "[ari] username/password", s.username, s.password)
        if s.url.startswith("https:") and not s.verify_tls:
            log.warning("ARI over TLS without certificate checks ([ari] verify_tls = false)")
        elif s.url.startswith("http:") and not _is_loopback(s.url):
            log.warning(
                "ARI at %s is plain HTTP to another host: its password and every call's events cross "
                "the network in the clear (use an https URL, Asterisk http.conf tlsenable)",
                public_url(s.url),
            )

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


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
