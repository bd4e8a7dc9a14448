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

Transfer (`AriCall.transfer`, a map's `action: TRANSFER`): the operator's channel is originated
into our app (`POST /channels` with `endpoint`, `app`, `appArgs=transfer`, our `channelId`,
`timeout` and the call's `VB_*` channel variables in the body; for a PJSIP endpoint also as
`PJSIP_HEADER(add,X-VB-...)`, which chan_pjsip puts into the INVITE). Asterisk sends the
channel's StasisStart when it answers (its `Dial` events carry the dial status); then it is added to the caller's bridge and the bot's
media leg alone is deleted: the caller and the operator talk in the bridge, and when either hangs
up the other is hung up and the bridge destroyed (no task per transferred call: the hang-up
event does it). A ChannelDestroyed first means busy (dial status BUSY, or cause 17), no answer
(NOANSWER, 18, 19) or another failure (a Local channel's cause is 0 whatever happened behind it:
the dial status decides); no answer within the timeout hangs the operator's channel up ("no_answer"). Either way
the caller stays with the bot. This keeps the caller's channel in our bridge rather than
`continueInDialplan`/`redirect`, so a failed transfer needs no way back into Stasis.

Events sent while the websocket is down are lost (Asterisk does not replay them). After every
reconnection the live calls are reconciled: one `GET /channels` lists what still exists, and a
call whose caller channel is missing is marked gone exactly as if its hang-up event had arrived
(its media leg is deleted, the handler sees EOF and records "caller_hangup"). This is also how
calls end when Asterisk restarts under them, in case their AudioSocket streams have not closed.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import math
from typing import Any

import aiohttp
from aiohttp import web_exceptions

from bridge.ari.call import AriCall, AriError, CallHandler
from bridge.ari.connection import AriConnection
from bridge.ari.legs import CallLegs
from bridge.ari.session import CallerGone, CallSession
from bridge.ari.settings import AriSettings
from bridge.audiosocket.server import AudioSocketConnection, AudioSocketServer
from bridge.logs import TRACE_ID
from orchestrator.domain.models import TransferOutcome, TransferRequest
from orchestrator.log_limits import RateLimitedLog
from orchestrator.tasks import CANCEL_BOUND_S, TaskOwner, cancel_and_wait

__all__ = ["AriController"]

log = logging.getLogger(__name__)
limited = RateLimitedLog(log)

_GONE_EVENTS = frozenset({"ChannelHangupRequest", "StasisEnd", "ChannelDestroyed"})
# Q.850 hang-up causes of an operator channel that never answered.
_BUSY_CAUSES = frozenset({17})  # user busy
_NO_ANSWER_CAUSES = frozenset({18, 19})  # no user responding, no answer


class AriController:
    """Serves every call of one Stasis app; see `bridge.ari.legs` for the per-call sequence."""

    def __init__(
        self,
        settings: AriSettings,
        audiosocket: AudioSocketServer,
        on_call: CallHandler,
        *,
        max_calls: int | None = None,
    ) -> None:
        self._settings = settings
        self._max_calls = max_calls
        self._refusals = TaskOwner("ari-refuse", cancel_bound_s=settings.timeout_s)
        self._on_call = on_call
        self._connection = AriConnection(settings, self._dispatch_text, self._on_connected)
        self._audiosocket = audiosocket
        self._legs = CallLegs(settings, self._connection, audiosocket)
        self._calls: dict[str, CallSession] = {}  # by caller channel id
        self._by_em: dict[str, CallSession] = {}  # by externalMedia channel id
        self._by_op: dict[str, CallSession] = {}  # by operator channel id, while transferring
        # Transferred calls, by caller and by operator channel id: the bot is gone, the bridge
        # stays until either side hangs up (`_end_transferred`).
        self._bridged: dict[str, CallSession] = {}
        self._after_transfer = TaskOwner("ari-transferred", cancel_bound_s=settings.timeout_s)
        self.transferred_ended = 0  # transferred calls whose bridge we took down, for tests
        self._closing = False
        self._refusing = False
        self.refused = 0  # calls refused (draining, max_calls, AudioSocket full), for tests and logs
        # Set while no call is being set up, served or torn down (a drain waits for it).
        self.idle = asyncio.Event()
        self.idle.set()
        self._reconcile_task: asyncio.Task[None] | None = None
        self._reconcile_again = False  # reconnected again while reconciling: reconcile once more
        self.reconciled_gone = 0  # calls found gone by reconciliation, for tests and logs
        self.connected = self._connection.connected  # set while connected and the app is registered

    @property
    def connects(self) -> int:
        """Successful (re)connections to ARI so far, for tests and logs."""
        return self._connection.connects

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
        await cancel_and_wait(self._reconcile_task, timeout=self._settings.timeout_s)
        tasks = [s.task for s in self._calls.values() if s.task is not None]
        await cancel_and_wait(*tasks, timeout=self._teardown_bound_s(len(tasks)))
        await self._refusals.aclose()
        if self._bridged:  # the caller is talking to a person: left to Asterisk, not hung up
            log.info("closing: %d transferred call(s) left bridged", len(self._bridged) // 2)
        await self._after_transfer.aclose()
        await self._connection.close()

    def _teardown_bound_s(self, calls: int) -> float:
        """How long `calls` cancelled call tasks may take to finish, s.

        A cancelled call stops its handler (`CANCEL_BOUND_S`), then makes at most five waits of
        `timeout_s` (caller DELETE, media DELETE, media gone, bridge DELETE, AudioSocket close);
        the media lock lets one call's media teardown (two of those waits) run at a time.
        """
        return CANCEL_BOUND_S + (3 + 2 * calls) * self._settings.timeout_s

    # --- reconciliation after a reconnection ---
    def _on_connected(self, number: int) -> None:
        """Runs on the reader when the app is registered: reconcile after every reconnection."""
        if number == 1 or self._closing:
            return
        task = self._reconcile_task
        if task is not None and not task.done():
            self._reconcile_again = True
            return
        self._reconcile_task = asyncio.get_running_loop().create_task(self._reconcile(), name="ari-reconcile")

    async def _reconcile(self) -> None:
        """Mark gone every call whose caller channel Asterisk no longer has (bounded, logged)."""
        while True:
            self._reconcile_again = False
            await self._reconcile_once()
            if not self._reconcile_again or self._closing:
                return

    async def _reconcile_once(self) -> None:
        sessions = [s for s in self._calls.values() if not s.caller_gone.is_set()]
        client = self._connection.client
        if not sessions or client is None:
            return  # nothing to check, or disconnected again (the next connection reconciles)
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                channels = await client.channels.list()
        except (web_exceptions.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning(
                "ARI reconnected, but listing channels to reconcile %d call(s) failed: %r", len(sessions), exc
            )
            return
        live = {channel.id for channel in channels}
        gone = 0
        for session in sessions:
            if session.em_started.done() and session.em_id not in live:
                session.em_ended.set()  # its StasisEnd/ChannelDestroyed was lost too
            if session.channel_id in live or session.caller_gone.is_set():
                continue
            gone += 1
            log.info(
                "call %s: caller gone while ARI was disconnected (channel %s not found after reconnect)",
                session.uuid,
                session.channel_id,
            )
            session.mark_gone()
        self.reconciled_gone += gone
        log.info("ARI reconnected: reconciled %d live call(s), %d found gone", len(sessions), gone)

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
            # The dial result of an operator channel (BUSY, NOANSWER, ...): a Local channel's
            # hang-up cause is 0 whatever happened behind it, its Dial event says what.
            peer_id = (event.get("peer") or {}).get("id") or ""
            op_session = self._by_op.get(peer_id)
            if op_session is not None and event.get("dialstatus"):
                op_session.op_dialstatus = str(event["dialstatus"])
        elif kind in _GONE_EVENTS:
            channel_id = (event.get("channel") or {}).get("id")
            op_session = self._by_op.get(channel_id or "")
            if op_session is not None and op_session.op_id == channel_id and not op_session.op_gone.done():
                cause = event.get("cause")
                op_session.op_gone.set_result(cause if isinstance(cause, int) else 0)
            bridged = self._bridged.pop(channel_id or "", None)
            if bridged is not None:
                self._bridged.pop(bridged.channel_id, None)
                self._bridged.pop(bridged.op_id or "", None)
                self._after_transfer.spawn(self._end_transferred(bridged), f"transferred-{bridged.uuid}")
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
        op_session = self._by_op.get(channel_id)
        if op_session is not None:  # the operator answered a transfer
            if op_session.op_id == channel_id and not op_session.op_started.done():
                op_session.op_started.set_result(None)
            return
        if str(channel.get("name", "")).startswith("AudioSocket/") or channel_id in self._calls:
            return  # an externalMedia channel that is not ours (any more), or a duplicate
        if self._closing:
            return
        if self._refusing:
            self.refused += 1
            log.info("draining: refusing the new call on channel %s (congestion, SIP 503)", channel_id)
            self._refusals.spawn(self._legs.refuse(channel_id), f"channel-{channel_id}")
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
            self._refusals.spawn(self._legs.refuse(channel_id), f"channel-{channel_id}")
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
            self._refusals.spawn(self._legs.refuse(channel_id), f"channel-{channel_id}")
            return
        loop = asyncio.get_running_loop()
        session = CallSession(channel_id, loop.time())
        args = event.get("args") or []
        exten = str(args[0]) if args else (channel.get("dialplan") or {}).get("exten")
        caller_number = (channel.get("caller") or {}).get("number") or None
        self._calls[channel_id] = session
        self.idle.clear()
        self._by_em[session.em_id] = session
        # The call's task and every task it starts log with the call id as the trace id.
        context = contextvars.copy_context()
        context.run(TRACE_ID.set, session.uuid)
        session.task = loop.create_task(
            self._run_call(session, caller_number, exten), name=f"ari-call-{channel_id}", context=context
        )

    # --- one call ---
    async def _run_call(self, session: CallSession, caller_number: str | None, exten: str | None) -> None:
        loop = asyncio.get_running_loop()
        conn: AudioSocketConnection | None = None
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
                _hangup=lambda: self._legs.delete_caller(session),
                _transfer=lambda request: self._transfer(session, request),
            )
            log.info(
                "call %s: channel %s to %s set up in %.0f ms",
                session.uuid,
                session.channel_id,
                exten,
                call.setup_s * 1000,
            )
            log.debug("call %s: caller number %s", session.uuid, caller_number)  # personal data: DEBUG only
            await self._run_handler(session, call)
        except CallerGone as exc:
            log.info("call %s: caller hung up during setup (%s)", session.uuid, exc)
        except AriError as exc:  # expected kind of failure: no traceback needed
            log.error("call %s (channel %s) failed: %s", session.uuid, session.channel_id, exc)
        except Exception:
            log.exception("call %s (channel %s) failed", session.uuid, session.channel_id)
        finally:
            try:
                await self._legs.tear_down(session, conn)
            finally:
                self._by_em.pop(session.em_id, None)
                self._calls.pop(session.channel_id, None)
                self._hand_over(session)
                if not self._calls:
                    self.idle.set()
                log.info("call %s: cleaned up", session.uuid)

    # --- transfer ---
    async def _transfer(self, session: CallSession, request: TransferRequest) -> TransferOutcome:
        """Originate the operator's channel and, when it answers, bridge it with the caller.

        Never raises but for cancellation; see the module docstring for the outcomes.
        """
        client = self._connection.client
        if client is None or session.caller_gone.is_set() or session.transferred:
            return "failed"
        loop = asyncio.get_running_loop()
        session.transfers += 1
        op_id = session.op_id = f"vb-op-{session.uuid}-{session.transfers}"
        session.op_started, session.op_gone = loop.create_future(), loop.create_future()
        session.op_dialstatus = ""
        self._by_op[op_id] = session
        variables = dict(request.variables)
        if request.sip_headers:
            for name, value in request.variables.items():
                variables[f"PJSIP_HEADER(add,X-{name.replace('_', '-')})"] = value
        outcome: TransferOutcome = "failed"
        timeout_s = self._settings.timeout_s
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    await client.channels.originate(
                        endpoint=request.endpoint,
                        app=self._settings.app,
                        appArgs="transfer",
                        channelId=op_id,
                        timeout=max(1, math.ceil(request.timeout_s)),
                        variables=variables,
                    )
            except (web_exceptions.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning(
                    "call %s: transfer to %s: originate failed: %r", session.uuid, request.endpoint, exc
                )
                return outcome
            waits: set[asyncio.Future[Any]] = {session.op_started, session.op_gone, session.gone}
            # Asterisk gives up ringing after `timeout` itself; ours only guards a lost event.
            await asyncio.wait(
                waits, timeout=request.timeout_s + timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            if session.op_started.done() and not session.op_gone.done() and not session.caller_gone.is_set():
                try:
                    async with asyncio.timeout(timeout_s):
                        await client.bridges.addChannel(bridgeId=session.bridge_id, channel=op_id)
                except (web_exceptions.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.warning("call %s: transfer: bridging the operator failed: %r", session.uuid, exc)
                    return outcome
                session.transferred = True
                outcome = "answered"
            elif session.op_gone.done():
                cause = session.op_gone.result()
                status = session.op_dialstatus
                log.info(
                    "call %s: transfer to %s: not answered (dial status %s, cause %s)",
                    session.uuid,
                    request.endpoint,
                    status or "-",
                    cause,
                )
                if status == "BUSY" or cause in _BUSY_CAUSES:
                    outcome = "busy"
                elif status == "NOANSWER" or cause in _NO_ANSWER_CAUSES:
                    outcome = "no_answer"
            elif not session.caller_gone.is_set():
                outcome = "no_answer"
            return outcome
        finally:
            if not session.transferred:
                self._by_op.pop(op_id, None)
                if not session.op_gone.done():  # still ringing, or answered too late: not ours
                    await self._legs.hang_up_channel(session, op_id, "operator channel")

    def _hand_over(self, session: CallSession) -> None:
        """After a transferred call's bot side is torn down: watch the bridge (or end it now)."""
        if not session.transferred or session.op_id is None:
            return
        self._by_op.pop(session.op_id, None)
        if session.caller_gone.is_set() or session.op_gone.done() or self._closing:
            if not self._closing:
                self._after_transfer.spawn(self._end_transferred(session), f"transferred-{session.uuid}")
            return
        self._bridged[session.channel_id] = self._bridged[session.op_id] = session
        log.info("call %s: caller and operator (%s) bridged; the bot has left", session.uuid, session.op_id)

    async def _end_transferred(self, session: CallSession) -> None:
        await self._legs.end_transferred(session)
        self.transferred_ended += 1
        log.info("call %s: transferred call ended", session.uuid)

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
