"""`AriController`: serves every call entering our Stasis app, one task per call.

Events arrive from `AriConnection` and are dispatched synchronously, without awaiting anything
(so one slow call never delays another call's events): a caller's StasisStart starts the call's
named task, which sets the call up (`CallLegs.set_up`), runs the handler with an `AriCall`, and
always tears the call down (`CallLegs.tear_down`). Hang-up events (ChannelHangupRequest, StasisEnd,
ChannelDestroyed; Asterisk's ARI event reference) mark the caller gone, which abandons a setup in
progress or, once the handler runs, drops the media leg so that the handler sees EOF and returns.

Draining (`refuse_new_calls()`, a deploy): a new caller's StasisStart is answered by hanging the
still unanswered channel up with cause congestion (`DELETE /channels/{id}?reason=congestion`),
which PJSIP sends as SIP 503 Service Unavailable, so a proxy in front (Kamailio's dispatcher)
retries the call on another node. Calls already taken go on.

A caller's StasisStart beyond `max_calls` calls in progress, or when the AudioSocket server could
not take the call's connection (`AudioSocketServer.can_admit`: descriptor headroom, its
`max_connections`), is refused the same way, before it is answered, by a short task of its own,
and nothing else is set up for it.

Transfer (`AriCall.transfer`) is `bridge.ari.transfer.Transfers`; the reconciliation of live calls
after every reconnection is `bridge.ari.reconcile.Reconciler`.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import Callable
from typing import Any

from bridge.ari.call import AriCall, AriError, CallHandler
from bridge.ari.connection import AriConnection
from bridge.ari.legs import CallLegs
from bridge.ari.reconcile import Reconciler
from bridge.ari.session import CallerGone, CallSession
from bridge.ari.settings import AriSettings
from bridge.ari.transfer import Transfers
from bridge.audiosocket.server import AudioSocketConnection, AudioSocketServer
from bridge.logs import TRACE_ID
from orchestrator.log_limits import RateLimitedLog
from orchestrator.tasks import CANCEL_BOUND_S, TaskOwner, cancel_and_wait

__all__ = ["AriController"]

log = logging.getLogger(__name__)
limited = RateLimitedLog(log)

_GONE_EVENTS = frozenset({"ChannelHangupRequest", "StasisEnd", "ChannelDestroyed"})


class AriController:
    """Serves every call of one Stasis app; see `bridge.ari.legs` for the per-call sequence."""

    def __init__(
        self,
        settings: AriSettings,
        audiosocket: AudioSocketServer,
        on_call: CallHandler,
        *,
        max_calls: int | None = None,
        on_unserved: Callable[[str, str], None] | None = None,
    ) -> None:
        """`on_call` serves each call that was set up; `on_unserved(channel id, reason)` hears of
        each caller channel that entered the app and never reached `on_call`: reason "refused"
        (draining, `max_calls`, AudioSocket full), "caller_hangup" (gone during setup) or
        "setup_failed" (ARI or the media leg failed), so whoever waits for that call (an outbound
        campaign) is not left waiting."""
        self._settings = settings
        self._on_unserved = on_unserved
        self._max_calls = max_calls
        self._refusals = TaskOwner("ari-refuse", cancel_bound_s=settings.timeout_s)
        self._on_call = on_call
        self._connection = AriConnection(settings, self._dispatch_text, self._on_connected)
        self._audiosocket = audiosocket
        self._legs = CallLegs(settings, self._connection, audiosocket)
        self._calls: dict[str, CallSession] = {}  # by caller channel id
        self._by_em: dict[str, CallSession] = {}  # by externalMedia channel id
        self._transfers = Transfers(settings, self._connection, self._legs)
        self._closing = False
        self._refusing = False
        self.refused = 0  # calls refused (draining, max_calls, AudioSocket full), for tests and logs
        # Set while no call is being set up, served or torn down (a drain waits for it).
        self.idle = asyncio.Event()
        self.idle.set()
        self._reconciler = Reconciler(settings, self._connection, self._calls)
        self.connected = self._connection.connected  # set while connected and the app is registered

    @property
    def connects(self) -> int:
        """Successful (re)connections to ARI so far, for tests and logs."""
        return self._connection.connects

    @property
    def reconciled_gone(self) -> int:
        """Calls found gone by reconciliation, for tests and logs."""
        return self._reconciler.gone

    @property
    def transferred_ended(self) -> int:
        """Transferred calls whose bridge we took down, for tests."""
        return self._transfers.transferred_ended

    @property
    def active_calls(self) -> int:
        """Calls whose task has not finished cleaning up yet."""
        return len(self._calls)

    async def run(self) -> None:
        """Connect, serve events, and reconnect with capped backoff until `close()`."""
        await self._connection.run()

    def refuse_new_calls(self) -> None:
        """From now on, hang every new caller up with congestion (SIP 503); idempotent."""
        self._refusing = True

    async def close(self) -> None:
        """Stop serving: tear down every active call, await its task, close the connection.

        No new call is accepted from here on. The websocket stays open while the calls are torn
        down (their DELETEs need it); waiting for them is bounded by `_teardown_bound_s`.
        """
        self._closing = True
        self._connection.stop_reconnecting()
        await self._reconciler.aclose()
        calls = [s for s in self._calls.values() if s.task is not None]
        bound = self._teardown_bound_s(len(calls))
        # A call already tearing down is waited for, not cancelled: a cancel there skips what is
        # left of it, the caller's DELETE too, and the caller stays connected (a campaign that
        # ended as its last call's handler returned cut its trailing silence and its DELETE).
        ending = [s.task for s in calls if s.tearing_down and s.task is not None]
        running = [s.task for s in calls if not s.tearing_down]
        await asyncio.gather(cancel_and_wait(*running, timeout=bound), self._wait_ending(ending, bound))
        await self._refusals.aclose()
        await self._transfers.aclose()
        await self._connection.close()

    @staticmethod
    async def _wait_ending(tasks: list[asyncio.Task[None]], bound: float) -> None:
        """Wait for calls in their teardown (bounded, `bound` s); any left then are cancelled."""
        if not tasks:
            return
        _, stuck = await asyncio.wait(tasks, timeout=bound)
        await cancel_and_wait(*stuck)

    def _teardown_bound_s(self, calls: int) -> float:
        """How long `calls` cancelled call tasks may take to finish, s.

        A cancelled call stops its handler (`CANCEL_BOUND_S`), then makes at most five waits of
        `timeout_s` (caller DELETE, media DELETE, media gone, bridge DELETE, AudioSocket close);
        the media lock lets one call's media teardown (two of those waits) run at a time.
        """
        return CANCEL_BOUND_S + (3 + 2 * calls) * self._settings.timeout_s

    def _on_connected(self, number: int) -> None:
        """Runs on the reader when the app is registered: reconcile after every reconnection."""
        if not self._closing:
            self._reconciler.on_connected(number)

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
        elif kind == "Dial":
            self._transfers.on_dial(event)
        elif kind in _GONE_EVENTS:
            channel_id = (event.get("channel") or {}).get("id")
            self._transfers.on_gone(channel_id or "", event)
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
                    extra={"trace_id": session.uuid},  # logged on the websocket reader, not in the call
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
        if self._transfers.on_stasis_start(channel_id):  # the operator answered a transfer
            return
        if str(channel.get("name", "")).startswith("AudioSocket/") or channel_id in self._calls:
            return  # an externalMedia channel that is not ours (any more), or a duplicate
        if self._closing:
            return
        if self._refusing:
            self.refused += 1
            log.info("draining: refusing the new call on channel %s (congestion, SIP 503)", channel_id)
            self._refuse(channel_id)
            return
        if self._max_calls is not None and len(self._calls) >= self._max_calls:
            self.refused += 1
            limited.warning(
                "max calls",
                "call on channel %s refused: %d calls in progress ([call] max_calls); refused so far: %d",
                channel_id,
                len(self._calls),
                self.refused,
            )
            self._refuse(channel_id)
            return
        full = self._audiosocket.can_admit()
        if full is not None:  # refused now, unanswered, rather than answered and then cut off
            self.refused += 1
            limited.warning(
                "audiosocket full",
                "call on channel %s refused: no AudioSocket connection left (%s limit, see "
                "[audiosocket] max_connections and fd_headroom); refused so far: %d",
                channel_id,
                full,
                self.refused,
            )
            self._refuse(channel_id)
            return
        loop = asyncio.get_running_loop()
        args = event.get("args") or []
        exten = str(args[0]) if args else (channel.get("dialplan") or {}).get("exten")
        caller_number = (channel.get("caller") or {}).get("number") or None
        session = CallSession(channel_id, loop.time(), caller_number)
        channel_vars = {str(k): str(v) for k, v in (channel.get("channelvars") or {}).items()}
        self._calls[channel_id] = session
        self.idle.clear()
        self._by_em[session.em_id] = session
        # The call's task and every task it starts log with the call id as the trace id.
        context = contextvars.copy_context()
        context.run(TRACE_ID.set, session.uuid)
        session.task = loop.create_task(
            self._run_call(session, caller_number, exten, channel_vars),
            name=f"ari-call-{channel_id}",
            context=context,
        )

    def _refuse(self, channel_id: str) -> None:
        self._refusals.spawn(self._legs.refuse(channel_id), f"channel-{channel_id}")
        self._unserved(channel_id, "refused")

    def _unserved(self, channel_id: str, reason: str) -> None:
        if self._on_unserved is not None:
            try:
                self._on_unserved(channel_id, reason)
            except Exception:  # the callback's bug must not take the controller down
                log.exception("channel %s: on_unserved failed", channel_id)

    # --- one call ---
    async def _run_call(
        self, session: CallSession, caller_number: str | None, exten: str | None, channel_vars: dict[str, str]
    ) -> None:
        loop = asyncio.get_running_loop()
        conn: AudioSocketConnection | None = None
        unserved: str | None = "setup_failed"  # until the handler gets the call
        try:
            conn = await self._legs.set_up(session)
            call = AriCall(
                call_id=session.uuid,
                channel_id=session.channel_id,
                caller_number=caller_number,
                exten=exten,
                conn=conn,
                caller_gone=session.caller_gone,
                setup_s=loop.time() - session.started_at,
                channel_vars=channel_vars,
                _hangup=lambda: self._legs.delete_caller(session),
                _transfer=lambda request, on_answer: self._transfers.transfer(session, request, on_answer),
            )
            log.info(
                "call %s: channel %s to %s set up in %.0f ms",
                session.uuid,
                session.channel_id,
                exten,
                call.setup_s * 1000,
            )
            log.debug("call %s: caller number %s", session.uuid, caller_number)  # personal data: DEBUG only
            unserved = None
            await self._run_handler(session, call)
        except CallerGone as exc:
            if unserved is not None:
                unserved = "caller_hangup"
            log.info("call %s: caller hung up during setup (%s)", session.uuid, exc)
        except AriError as exc:  # expected kind of failure: no traceback needed
            log.error("call %s (channel %s) failed: %s", session.uuid, session.channel_id, exc)
        except Exception:
            log.exception("call %s (channel %s) failed", session.uuid, session.channel_id)
        finally:
            session.tearing_down = True
            try:
                await self._legs.tear_down(session, conn)
            finally:
                self._by_em.pop(session.em_id, None)
                self._calls.pop(session.channel_id, None)
                self._transfers.hand_over(session, closing=self._closing)
                if not self._calls:
                    self.idle.set()
                if unserved is not None:
                    self._unserved(session.channel_id, unserved)
                log.info("call %s: cleaned up", session.uuid)

    async def _run_handler(self, session: CallSession, call: AriCall) -> None:
        handler: asyncio.Task[None] = asyncio.create_task(
            self._call_handler(call), name=f"call-handler-{session.uuid}"
        )
        try:
            await asyncio.wait((handler, session.gone), return_when=asyncio.FIRST_COMPLETED)
            if not handler.done():
                # Caller hung up: drop the media leg so the handler sees EOF and returns.
                await self._legs.delete_media(session)
                await asyncio.wait((handler,), timeout=self._settings.handler_grace_s)
                if not handler.done():
                    log.warning("call %s: handler ignored the hangup; cancelling", session.uuid)
        finally:
            await cancel_and_wait(handler)
        # A handler that outlived even its cancellation bound was logged by cancel_and_wait.
        if handler.done() and not handler.cancelled() and handler.exception() is not None:
            log.error("call %s: handler failed", session.uuid, exc_info=handler.exception())

    async def _call_handler(self, call: AriCall) -> None:
        await self._on_call(call)
