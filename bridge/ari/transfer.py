"""`Transfers`: a call's hand-over to an operator through ARI, and the bridge left behind it.

Transfer (`AriCall.transfer`, a map's `action: TRANSFER`): the operator's channel is originated
into our app (`POST /channels` with `endpoint`, `app`, `appArgs=transfer`, our `channelId`,
`timeout`, the caller's number as `callerId` (what the operator's phone shows; none when Asterisk
had none) and the call's `VB_*` channel variables in the body; for a PJSIP endpoint also as
`PJSIP_HEADER(add,X-VB-...)`, which chan_pjsip puts into the INVITE, each value cut to
`SIP_HEADER_BYTES` of UTF-8 at a character boundary so the INVITE stays a small UDP datagram). Asterisk sends the
channel's StasisStart when it answers (its `Dial` events carry the dial status); then it is added
to the caller's bridge and the bot's media leg alone is deleted: the caller and the operator talk
in the bridge, and when either hangs up the other is hung up and the bridge destroyed (no task per
transferred call: the hang-up event does it). A ChannelDestroyed first means busy (dial status
BUSY, or cause 17), no answer (NOANSWER, 18, 19) or another failure (a Local channel's cause is 0
whatever happened behind it: the dial status decides); no answer within the timeout hangs the
operator's channel up ("no_answer"). Either way the caller stays with the bot. This keeps the
caller's channel in our bridge rather than `continueInDialplan`/`redirect`, so a failed transfer
needs no way back into Stasis.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web_exceptions

from bridge.ari.connection import AriConnection, ari_op
from bridge.ari.legs import CallLegs
from bridge.ari.session import CallSession
from bridge.ari.settings import AriSettings
from orchestrator.domain.models import TransferOutcome, TransferRequest
from orchestrator.tasks import TaskOwner

__all__ = ["Transfers"]

log = logging.getLogger(__name__)

# Q.850 hang-up causes of an operator channel that never answered.
_BUSY_CAUSES = frozenset({17})  # user busy
_NO_ANSWER_CAUSES = frozenset({18, 19})  # no user responding, no answer
# An X-VB-* header value's bound in UTF-8 bytes: 1000 Cyrillic characters of VB_TRANSCRIPT are
# ~2 KB, and a UDP INVITE past the ~1300-byte MTU budget fragments (or goes over TCP).
SIP_HEADER_BYTES = 400


def sip_header_value(value: str, bound: int = SIP_HEADER_BYTES) -> str:
    """`value` cut to at most `bound` bytes of UTF-8 at a character boundary, its end kept (as
    VB_TRANSCRIPT keeps its newest turns)."""
    raw = value.encode()
    return value if len(raw) <= bound else raw[-bound:].decode(errors="ignore")


class Transfers:
    """The transfers of every call of one controller: operator channels and transferred bridges."""

    def __init__(self, settings: AriSettings, connection: AriConnection, legs: CallLegs) -> None:
        self._settings = settings
        self._connection = connection
        self._legs = legs
        self._by_op: dict[str, CallSession] = {}  # by operator channel id, while transferring
        # Transferred calls, by caller and by operator channel id: the bot is gone, the bridge
        # stays until either side hangs up (`_end_transferred`).
        self._bridged: dict[str, CallSession] = {}
        self._after_transfer = TaskOwner("ari-transferred", cancel_bound_s=settings.timeout_s)
        self.transferred_ended = 0  # transferred calls whose bridge we took down, for tests

    # --- events (synchronous, on the websocket reader) ---
    @property
    def tracked(self) -> int:
        """Calls this holds on to (transferring, or handed over and bridged): 0 when idle."""
        return len(self._by_op) + len(self._bridged)

    def on_dial(self, event: dict[str, Any]) -> None:
        """A `Dial` event: remember an operator channel's dial status (BUSY, NOANSWER, ...).

        A Local channel's hang-up cause is 0 whatever happened behind it; its Dial event says what.
        """
        peer_id = (event.get("peer") or {}).get("id") or ""
        op_session = self._by_op.get(peer_id)
        if op_session is not None and event.get("dialstatus"):
            op_session.op_dialstatus = str(event["dialstatus"])

    def on_gone(self, channel_id: str, event: dict[str, Any]) -> None:
        """A hang-up event of `channel_id`: an operator channel ended, or a transferred side left."""
        op_session = self._by_op.get(channel_id)
        if op_session is not None and op_session.op_id == channel_id and not op_session.op_gone.done():
            cause = event.get("cause")
            op_session.op_gone.set_result(cause if isinstance(cause, int) else 0)
        bridged = self._bridged.pop(channel_id, None)
        if bridged is not None:
            self._bridged.pop(bridged.channel_id, None)
            self._bridged.pop(bridged.op_id or "", None)
            self._after_transfer.spawn(self._end_transferred(bridged), f"transferred-{bridged.uuid}")

    def on_stasis_start(self, channel_id: str) -> bool:
        """An operator channel answered (True), or `channel_id` is not an operator's (False)."""
        op_session = self._by_op.get(channel_id)
        if op_session is None:
            return False
        if op_session.op_id == channel_id and not op_session.op_started.done():
            op_session.op_started.set_result(None)
        return True

    # --- one transfer ---
    async def transfer(
        self, session: CallSession, request: TransferRequest, on_answer: Callable[[], None] | None = None
    ) -> TransferOutcome:
        """Originate the operator's channel and, when it answers, bridge it with the caller.

        `on_answer()` runs as soon as the operator's channel has answered, before it is bridged.
        Originating, ringing and bridging finish within `request.bound_s` seconds (then an operator
        channel not bridged is hung up, bounded by `[ari] timeout_s`). Never raises but for
        cancellation; see the module docstring for the outcomes.
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
                variables[f"PJSIP_HEADER(add,X-{name.replace('_', '-')})"] = sip_header_value(value)
        outcome: TransferOutcome = "failed"
        timeout_s = self._settings.timeout_s
        caller_id = {"callerId": session.caller_number} if session.caller_number else {}
        # One deadline over originate + ring + bridging (`request.bound_s`), which the caller of
        # `transfer` bounds with a margin: a late answer is bridged or given up here, never cut
        # from outside after `on_answer`. Asterisk gives up ringing after `timeout` itself; the
        # answer is awaited half of `setup_s` longer (a lost event), the rest is for bridging.
        start = loop.time()
        deadline = start + request.bound_s
        answer_by = start + request.timeout_s + request.setup_s / 2
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    try:
                        async with asyncio.timeout(timeout_s):
                            await ari_op(
                                client,
                                "channels",
                                "originate",
                                endpoint=request.endpoint,
                                app=self._settings.app,
                                appArgs="transfer",
                                channelId=op_id,
                                timeout=max(1, math.ceil(request.timeout_s)),
                                variables=variables,
                                **caller_id,
                            )
                    except (web_exceptions.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
                        log.warning(
                            "call %s: transfer to %s: originate failed: %r",
                            session.uuid,
                            request.endpoint,
                            exc,
                        )
                        return outcome
                    waits: set[asyncio.Future[Any]] = {session.op_started, session.op_gone, session.gone}
                    await asyncio.wait(
                        waits, timeout=max(0.0, answer_by - loop.time()), return_when=asyncio.FIRST_COMPLETED
                    )
                    outcome = await self._settle(session, request, op_id, on_answer)
            except TimeoutError:  # the deadline (while bridging): the operator is hung up below
                log.warning("call %s: transfer to %s: not done in time", session.uuid, request.endpoint)
            return outcome
        finally:
            if not session.transferred:
                self._by_op.pop(op_id, None)
                if not session.op_gone.done():  # still ringing, or answered too late: not ours
                    await self._legs.hang_up_channel(session, op_id, "operator channel")

    async def _settle(
        self,
        session: CallSession,
        request: TransferRequest,
        op_id: str,
        on_answer: Callable[[], None] | None,
    ) -> TransferOutcome:
        """After the wait for an answer: bridge an answered operator, or name why there is none."""
        if session.op_started.done() and not session.op_gone.done() and not session.caller_gone.is_set():
            if on_answer is not None:
                on_answer()
            client = self._connection.client
            try:
                if client is None:
                    raise OSError("ARI not connected")
                async with asyncio.timeout(self._settings.timeout_s):
                    await ari_op(client, "bridges", "addChannel", bridgeId=session.bridge_id, channel=op_id)
            except (web_exceptions.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("call %s: transfer: bridging the operator failed: %r", session.uuid, exc)
                return "failed"
            session.transferred = True
            return "answered"
        if session.op_gone.done():
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
                return "busy"
            if status == "NOANSWER" or cause in _NO_ANSWER_CAUSES:
                return "no_answer"
            return "failed"
        return "failed" if session.caller_gone.is_set() else "no_answer"

    def hand_over(self, session: CallSession, *, closing: bool) -> None:
        """After a transferred call's bot side is torn down: watch the bridge (or end it now)."""
        if not session.transferred or session.op_id is None:
            return
        self._by_op.pop(session.op_id, None)
        if session.caller_gone.is_set() or session.op_gone.done() or closing:
            if not closing:
                self._after_transfer.spawn(self._end_transferred(session), f"transferred-{session.uuid}")
            return
        self._bridged[session.channel_id] = self._bridged[session.op_id] = session
        log.info("call %s: caller and operator (%s) bridged; the bot has left", session.uuid, session.op_id)

    async def _end_transferred(self, session: CallSession) -> None:
        await self._legs.end_transferred(session)
        self.transferred_ended += 1
        log.info("call %s: transferred call ended", session.uuid)

    async def aclose(self) -> None:
        """Await the bridges being taken down; calls still bridged are left to Asterisk."""
        if self._bridged:  # the caller is talking to a person: left to Asterisk, not hung up
            log.info("closing: %d transferred call(s) left bridged", len(self._bridged) // 2)
        await self._after_transfer.aclose()
