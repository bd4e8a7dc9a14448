"""ARI controller: turns each call entering our Stasis app into an AudioSocket stream and a handler.

Per call, exactly the sequence that worked against Asterisk 22.10.1 (asterisk-observed.md):
StasisStart -> answer -> mixing bridge -> addChannel(caller) -> `audiosocket.expect(uuid)` ->
POST externalMedia (audiosocket/tcp/slin, data=uuid, a channelId we chose) -> wait for the
externalMedia channel's own StasisStart -> addChannel(em) -> await the AudioSocket connection ->
`on_call(AriCall)`. The UUID is registered before the POST because Asterisk connects to the
AudioSocket server inside that HTTP request; addChannel(em) waits for the em channel's StasisStart
because without it Asterisk intermittently answers 422 "Channel not in Stasis application".

Events are read from the websocket here (not through `aioari.Client.run`) and dispatched
synchronously without awaiting anything, so one slow call never delays another call's events:
every call runs in its own named task owned by the controller. `run()` reconnects with capped
exponential backoff, because a websocket that closes (Asterisk restart) never reopens by itself.

Teardown: when the handler returns (END_CALL), the caller channel is DELETEd (that is the hang-up),
then the em channel and the bridge; when the caller hangs up first (ChannelHangupRequest,
StasisEnd or ChannelDestroyed), the em channel and the bridge are DELETEd at once, so the
AudioSocket connection sees EOF and the handler can finish. 404 on any DELETE means "already gone".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import aioari
import aiohttp
import pydantic.dataclasses
from aiohttp import web_exceptions
from aioswagger11.http_client import (  # type: ignore[import-untyped]
    ApiKeyAuthenticator,
    AsynchronousHttpClient,
)
from pydantic import ConfigDict, Field, field_validator

from bridge.asterisk_names import AsteriskName
from bridge.audiosocket.server import AudioSocketConnection, AudioSocketServer
from orchestrator.domain.errors import VoicebridgeError

__all__ = [
    "AriCall",
    "AriController",
    "AriError",
    "AriSettings",
    "CallHandler",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_GONE_EVENTS = frozenset({"ChannelHangupRequest", "StasisEnd", "ChannelDestroyed"})


class AriError(VoicebridgeError):
    """An ARI request failed or Asterisk did not do what a call's setup needed."""


class _CallerGone(VoicebridgeError):
    """The caller hung up while the call was being set up."""


@pydantic.dataclasses.dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class AriSettings:
    """Where ARI is and how the controller talks to it (section `[ari]`).

    `username`, `password` and `app` follow `bridge.asterisk_names` (the one rule, shared with AMI).
    Invalid values raise `pydantic.ValidationError` (a `ValueError`) naming the field.
    """

    url: str = "http://127.0.0.1:8088/"
    username: AsteriskName = "voicebridge"
    password: AsteriskName = "voicebridge"
    app: AsteriskName = "voicebridge"
    # host:port where Asterisk connects for AudioSocket (our `[audiosocket]` bind, as Asterisk sees it).
    audiosocket_host: str = "127.0.0.1:9092"
    # Bound on every ARI request and every call-setup wait, s.
    timeout_s: Annotated[float, Field(gt=0)] = 5.0
    # Reconnect backoff after the websocket closed: starts here, doubles per failure ...
    reconnect_min_s: Annotated[float, Field(gt=0)] = 0.5
    # ... up to this, s.
    reconnect_max_s: Annotated[float, Field(gt=0)] = 10.0
    # After the caller hung up, how long the call handler gets to notice EOF and return before
    # it is cancelled, s (it should return within a frame or two).
    handler_grace_s: Annotated[float, Field(gt=0)] = 5.0

    @field_validator("audiosocket_host")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected host:port (the address Asterisk connects to for AudioSocket)")
        return value


@dataclass(eq=False)
class AriCall:
    """One answered call whose audio flows through `conn`."""

    call_id: str  # = str(audiosocket uuid)
    channel_id: str
    caller_number: str | None
    exten: str | None
    conn: AudioSocketConnection
    caller_gone: asyncio.Event  # set when the caller hung up
    setup_s: float = 0.0  # StasisStart -> handler called (loop clock)
    _hangup: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)

    async def hangup(self) -> None:
        """Hang up the caller (DELETE the caller channel); idempotent."""
        if self._hangup is not None:
            await self._hangup()


CallHandler = Callable[[AriCall], Awaitable[None]]


class _Session:
    """Controller-side state of one call."""

    __slots__ = (
        "bridge_id",
        "caller_deleted",
        "caller_gone",
        "channel_id",
        "em_ended",
        "em_id",
        "em_started",
        "gone",
        "media_deleted",
        "started_at",
        "task",
        "uuid",
    )

    def __init__(self, channel_id: str, started_at: float) -> None:
        loop = asyncio.get_running_loop()
        self.channel_id = channel_id
        self.uuid = str(uuid.uuid4())
        self.bridge_id = f"vb-{self.uuid}"
        self.em_id = f"vb-em-{self.uuid}"
        self.em_started: asyncio.Future[None] = loop.create_future()
        self.em_ended = asyncio.Event()  # the externalMedia channel left Stasis / was destroyed
        self.gone: asyncio.Future[None] = loop.create_future()  # resolved when the caller hangs up
        self.caller_gone = asyncio.Event()
        self.caller_deleted = False
        self.media_deleted = False
        self.started_at = started_at
        self.task: asyncio.Task[None] | None = None

    def mark_gone(self) -> None:
        self.caller_gone.set()
        if not self.gone.done():
            self.gone.set_result(None)


class AriController:
    """Serves every call of one Stasis app; see the module docstring for the sequence."""

    def __init__(self, settings: AriSettings, audiosocket: AudioSocketServer, on_call: CallHandler) -> None:
        self._settings = settings
        self._audiosocket = audiosocket
        self._on_call = on_call
        self._client: Any = None  # aioari.Client of the current connection
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._calls: dict[str, _Session] = {}  # by caller channel id
        self._by_em: dict[str, _Session] = {}  # by externalMedia channel id
        # Creating one AudioSocket channel while another is being hung up stalled Asterisk 22.10.1's
        # ARI for ~10 s in our e2e runs (1 in ~10; cf. asterisk/asterisk#2078): never overlap them.
        self._media_lock = asyncio.Lock()
        self._closing = False
        self._stop = asyncio.Event()
        self._run_done = asyncio.Event()
        self._run_done.set()
        self.connected = asyncio.Event()
        self.connects = 0  # successful (re)connections, for tests and logs

    @property
    def active_calls(self) -> int:
        """Calls whose task has not finished cleaning up yet."""
        return len(self._calls)

    # --- connection ---
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
                    log.warning("ARI at %s unavailable: %r", self._settings.url, exc)
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
        host = urllib.parse.urlparse(s.url).hostname or ""
        http = AsynchronousHttpClient(auth=ApiKeyAuthenticator(host, f"{s.username}:{s.password}"))
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
                    self._dispatch_text(msg.data)
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
            with _suppress_errors("closing ARI HTTP client"):
                await http.close()  # closes the websocket too

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

    async def close(self) -> None:
        """Stop serving: tear down every active call, await its task, close the connection."""
        self._closing = True
        self._stop.set()
        tasks = [s.task for s in self._calls.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                await self._run_done.wait()
        except TimeoutError:
            log.warning("ARI controller: run() did not stop within %s s", self._settings.timeout_s)

    # --- events (synchronous: never blocks the websocket reader) ---
    def _dispatch_text(self, data: str) -> None:
        try:
            event = json.loads(data)
            kind = event["type"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring malformed ARI event: %.200s", data)
            return
        if kind == "StasisStart":
            self._on_stasis_start(event)
        elif kind in _GONE_EVENTS:
            channel_id = (event.get("channel") or {}).get("id")
            em_session = self._by_em.get(channel_id or "")
            if em_session is not None and kind != "ChannelHangupRequest":
                em_session.em_ended.set()
            session = self._calls.get(channel_id or "")
            if session is not None and not session.caller_gone.is_set():
                log.log(
                    logging.DEBUG if session.caller_deleted else logging.INFO,
                    "call %s: caller gone (%s, cause %s)",
                    session.uuid,
                    kind,
                    event.get("cause_txt") or event.get("cause"),
                )
                session.mark_gone()

    def _on_stasis_start(self, event: dict[str, Any]) -> None:
        channel = event.get("channel") or {}
        channel_id = channel.get("id")
        if not channel_id:
            return
        em_session = self._by_em.get(channel_id)
        if em_session is not None:
            if not em_session.em_started.done():
                em_session.em_started.set_result(None)
            return
        if str(channel.get("name", "")).startswith("AudioSocket/") or channel_id in self._calls:
            return  # an externalMedia channel that is not ours (any more), or a duplicate
        if self._closing:
            return
        loop = asyncio.get_running_loop()
        session = _Session(channel_id, loop.time())
        args = event.get("args") or []
        exten = str(args[0]) if args else (channel.get("dialplan") or {}).get("exten")
        caller_number = (channel.get("caller") or {}).get("number") or None
        self._calls[channel_id] = session
        self._by_em[session.em_id] = session
        session.task = loop.create_task(
            self._run_call(session, caller_number, exten), name=f"ari-call-{channel_id}"
        )

    # --- one call ---
    async def _run_call(self, session: _Session, caller_number: str | None, exten: str | None) -> None:
        loop = asyncio.get_running_loop()
        conn: AudioSocketConnection | None = None
        try:
            conn = await self._set_up(session)
            call = AriCall(
                call_id=session.uuid,
                channel_id=session.channel_id,
                caller_number=caller_number,
                exten=exten,
                conn=conn,
                caller_gone=session.caller_gone,
                setup_s=loop.time() - session.started_at,
                _hangup=lambda: self._delete_caller(session),
            )
            log.info(
                "call %s: channel %s from %s to %s set up in %.0f ms",
                session.uuid,
                session.channel_id,
                caller_number,
                exten,
                call.setup_s * 1000,
            )
            await self._run_handler(session, call)
        except _CallerGone as exc:
            log.info("call %s: caller hung up during setup (%s)", session.uuid, exc)
        except AriError as exc:  # expected kind of failure: no traceback needed
            log.error("call %s (channel %s) failed: %s", session.uuid, session.channel_id, exc)
        except Exception:
            log.exception("call %s (channel %s) failed", session.uuid, session.channel_id)
        finally:
            await self._tear_down(session, conn)

    async def _set_up(self, session: _Session) -> AudioSocketConnection:
        s = self._settings
        client = self._client
        if client is None:
            raise AriError(f"call {session.uuid}: ARI connection lost before setup")
        cid, bid, em = session.channel_id, session.bridge_id, session.em_id
        await self._step(session, "answer", client.channels.answer(channelId=cid))
        await self._step(session, "create bridge", client.bridges.create(type="mixing", bridgeId=bid))
        await self._step(session, "add caller", client.bridges.addChannel(bridgeId=bid, channel=cid))
        # Register before the POST: Asterisk connects inside the externalMedia request.
        conn_future = self._audiosocket.expect(uuid.UUID(session.uuid))
        try:
            async with self._media_lock:
                await self._step(
                    session,
                    "externalMedia",
                    client.channels.externalMedia(
                        app=s.app,
                        channelId=em,
                        external_host=s.audiosocket_host,
                        encapsulation="audiosocket",
                        transport="tcp",
                        format="slin",
                        data=session.uuid,
                    ),
                )
            await self._step(session, "externalMedia StasisStart", session.em_started)
            await self._step(
                session, "add externalMedia", client.bridges.addChannel(bridgeId=bid, channel=em)
            )
            return await self._step(session, "AudioSocket connection", conn_future)
        except BaseException:
            if not conn_future.done() or conn_future.cancelled():
                self._audiosocket.forget(uuid.UUID(session.uuid))
            elif conn_future.exception() is None:
                conn_future.result().hangup()  # connected, but a later step failed
            raise

    async def _step(self, session: _Session, what: str, aw: Coroutine[Any, Any, T] | asyncio.Future[T]) -> T:
        """Await one setup step, bounded by timeout_s, abandoned if the caller hangs up."""
        fut: asyncio.Future[T] = (
            aw
            if isinstance(aw, asyncio.Future)
            else asyncio.create_task(aw, name=f"ari-setup-{session.uuid}-{what.replace(' ', '-')}")
        )
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                await asyncio.wait((fut, session.gone), return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            fut.cancel()
            raise AriError(
                f"call {session.uuid}: {what}: no result within {self._settings.timeout_s} s"
            ) from None
        except BaseException:  # cancelled from outside (close()): abandon the request too
            _abandon(fut)
            raise
        if not fut.done():  # the caller hung up first
            fut.cancel()
            raise _CallerGone(what)
        try:
            return fut.result()
        except web_exceptions.HTTPException as exc:
            raise AriError(f"call {session.uuid}: {what}: HTTP {exc.status} {exc.text}") from exc

    async def _run_handler(self, session: _Session, call: AriCall) -> None:
        handler: asyncio.Task[None] = asyncio.create_task(
            self._call_handler(call), name=f"call-handler-{session.uuid}"
        )
        try:
            await asyncio.wait((handler, session.gone), return_when=asyncio.FIRST_COMPLETED)
            if not handler.done():
                # Caller hung up: drop the media leg so the handler sees EOF and returns.
                await self._delete_media(session)
                await asyncio.wait((handler,), timeout=self._settings.handler_grace_s)
                if not handler.done():
                    log.warning("call %s: handler ignored the hangup; cancelling", session.uuid)
        finally:
            if not handler.done():
                handler.cancel()
            await asyncio.wait((handler,))
        if not handler.cancelled() and handler.exception() is not None:
            log.error("call %s: handler failed", session.uuid, exc_info=handler.exception())

    async def _call_handler(self, call: AriCall) -> None:
        await self._on_call(call)

    # --- teardown ---
    async def _tear_down(self, session: _Session, conn: AudioSocketConnection | None) -> None:
        try:
            if not session.caller_gone.is_set():
                await self._delete_caller(session)
            await self._delete_media(session)
            if conn is not None:
                conn.hangup()
                with _suppress_errors(f"call {session.uuid}: waiting for AudioSocket close"):
                    async with asyncio.timeout(self._settings.timeout_s):
                        await conn.wait_closed()
        finally:
            self._by_em.pop(session.em_id, None)
            self._calls.pop(session.channel_id, None)
            log.info("call %s: cleaned up", session.uuid)

    async def _delete_caller(self, session: _Session) -> None:
        if session.caller_deleted:
            return
        session.caller_deleted = True
        await self._delete(session, "caller channel", "channels", "hangup", channelId=session.channel_id)

    async def _delete_media(self, session: _Session) -> None:
        if session.media_deleted:
            return
        session.media_deleted = True
        async with self._media_lock:
            await self._delete(
                session, "externalMedia channel", "channels", "hangup", channelId=session.em_id
            )
            if session.em_started.done():
                # The DELETE returns before Asterisk has torn the channel down: hold the lock
                # until it has, so no other AudioSocket channel is created meanwhile (bounded).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._settings.timeout_s):
                        await session.em_ended.wait()
        await self._delete(session, "bridge", "bridges", "destroy", bridgeId=session.bridge_id)

    async def _delete(self, session: _Session, what: str, repo: str, op: str, **params: str) -> None:
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                # ARI may be reconnecting (websocket blip): wait for it, bounded, rather than
                # leave the caller on a silent line.
                await self.connected.wait()
                client = self._client
                if client is None:
                    raise TimeoutError("ARI not connected")
                await getattr(getattr(client, repo), op)(**params)
        except web_exceptions.HTTPNotFound:
            pass  # already gone
        except (web_exceptions.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("call %s: deleting %s failed: %r", session.uuid, what, exc)


def _abandon(fut: asyncio.Future[Any]) -> None:
    """Cancel `fut`, or if it already finished, mark its exception as seen (no asyncio warning)."""
    if not fut.done():
        fut.cancel()
    elif not fut.cancelled():
        fut.exception()


class _suppress_errors:
    """Log and drop ordinary exceptions (never CancelledError) during best-effort cleanup."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc is not None and isinstance(exc, Exception):
            log.warning("%s failed: %r", self._what, exc)
            return True
        return False
