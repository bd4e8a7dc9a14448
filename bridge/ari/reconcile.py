"""`Reconciler`: after every ARI reconnection, marks gone the calls Asterisk no longer has.

Events sent while the websocket is down are lost (Asterisk does not replay them). After every
reconnection the live calls are reconciled: one `GET /channels` lists what still exists, and a
call whose caller channel is missing is marked gone exactly as if its hang-up event had arrived
(its media leg is deleted, the handler sees EOF and records "caller_hangup"). This is also how
calls end when Asterisk restarts under them, in case their AudioSocket streams have not closed.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web_exceptions

from bridge.ari.connection import AriConnection
from bridge.ari.session import CallSession
from bridge.ari.settings import AriSettings
from orchestrator.tasks import cancel_and_wait

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)


class Reconciler:
    """Reconciles `calls` (the controller's live calls, by caller channel id) after reconnections."""

    def __init__(
        self, settings: AriSettings, connection: AriConnection, calls: dict[str, CallSession]
    ) -> None:
        self._settings = settings
        self._connection = connection
        self._calls = calls
        self._task: asyncio.Task[None] | None = None
        self._again = False  # reconnected again while reconciling: reconcile once more
        self._closing = False
        self.gone = 0  # calls found gone by reconciliation, for tests and logs

    def on_connected(self, number: int) -> None:
        """Runs on the reader when the app is registered: reconcile after every reconnection."""
        if number == 1 or self._closing:
            return
        task = self._task
        if task is not None and not task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._reconcile(), name="ari-reconcile")

    async def aclose(self) -> None:
        """Reconcile no more; cancel a reconciliation in progress (bounded by `timeout_s`)."""
        self._closing = True
        await cancel_and_wait(self._task, timeout=self._settings.timeout_s)

    async def _reconcile(self) -> None:
        """Mark gone every call whose caller channel Asterisk no longer has (bounded, logged)."""
        while True:
            self._again = False
            await self._reconcile_once()
            if not self._again or self._closing:
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
        self.gone += gone
        log.info("ARI reconnected: reconciled %d live call(s), %d found gone", len(sessions), gone)
