"""`CallLegs`: a call's two channels and the bridge joining them, set up and torn down in order.

Per call, exactly the sequence that worked against Asterisk 22.10.1 (as observed and kept under
test in tests/e2e/test_ari_controller.py and test_ari_failures.py):
StasisStart -> answer -> mixing bridge -> addChannel(caller) -> `audiosocket.expect(uuid)` ->
POST externalMedia (audiosocket/tcp/slin, data=uuid, a channelId we chose) -> wait for the
externalMedia channel's own StasisStart -> addChannel(em) -> await the AudioSocket connection.
The UUID is registered before the POST because Asterisk connects to the AudioSocket server inside
that HTTP request; addChannel(em) waits for the em channel's StasisStart because without it
Asterisk intermittently answers 422 "Channel not in Stasis application".

Teardown: when the handler returns (END_CALL), the AudioSocket stream is ended (40 ms of silence,
0x00, close: see `tear_down` for why first), the caller channel is DELETEd (that is the hang-up),
then the em channel and the bridge; when the caller hangs up first (ChannelHangupRequest,
StasisEnd or ChannelDestroyed), the em channel and the bridge are DELETEd at once, so the
AudioSocket connection sees EOF and the handler can finish. While the call is set up, the new leg
hears paced silence (`_LegSilence`) until the handler's playout takes over. 404 on any DELETE means "already gone".
The requests are ARI's `channels.answer/externalMedia/hangup` and `bridges.create/addChannel/destroy`
(Asterisk's ARI REST reference); every one is bounded by `AriSettings.timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiohttp
from aiohttp import web_exceptions

from bridge.ari.call import AriError
from bridge.ari.connection import AriConnection, ari_op
from bridge.ari.session import CallerGone, CallSession
from bridge.ari.settings import AriSettings
from bridge.audiosocket.server import AudioSocketConnection, AudioSocketServer
from bridge.pacer import Pacer
from orchestrator.tasks import cancel_and_wait

__all__ = ["CallLegs"]

log = logging.getLogger(__name__)

T = TypeVar("T")


# Paced silence frames between the handler's last frame and the 0x00 (see `CallLegs.tear_down`).
TRAILING_FRAMES = 2


class _LegSilence:
    """Paced silence on a call's AudioSocket leg, one frame a tick, while we have nothing else
    to send on it: through the setup, and for `TRAILING_FRAMES` before the stream ends.

    Asterisk's AudioSocket channel, once inside its read of a message header, waits for our next
    byte holding the channel's lock (see `CallLegs.tear_down`), and addChannel of that channel
    needs the lock (res/stasis/control.c queues a frame on it). Without this the leg stayed
    silent through the setup, until the handler's playout, which starts only after addChannel
    has returned.
    """

    def __init__(self, pacer: Pacer) -> None:
        self._pacer = pacer
        self._conn: AudioSocketConnection | None = None
        self._left = -1  # frames still to send before `sent` is set; -1: no count
        self.sent = asyncio.Event()

    def start(self, fut: asyncio.Future[AudioSocketConnection]) -> None:
        """Done callback of the connection future: start with the connected leg."""
        if not fut.cancelled() and fut.exception() is None:
            self.send_on(fut.result())

    def send_on(self, conn: AudioSocketConnection, frames: int = -1) -> None:
        """Send on `conn` from the next tick on; with `frames`, set `sent` after that many."""
        self._conn, self._left = conn, frames
        self._pacer.add(self)

    def tick(self) -> None:
        """One 20 ms frame of silence (dropped by the connection once it is closed)."""
        conn = self._conn
        if conn is None:  # stopped during this tick's pass over the pacer's members
            return
        conn.send_silence()
        if self._left > 0:
            self._left -= 1
            if self._left == 0:
                self.sent.set()

    def stop(self) -> None:
        """Leave the pacer; idempotent."""
        if self._conn is not None:
            self._pacer.remove(self)
            self._conn = None


class CallLegs:
    """Sets up and tears down the ARI channels and bridge of every call of one controller.

    One instance serves all calls: it holds the lock that keeps AudioSocket channel creation and
    teardown apart across calls. Per-call state lives in the `CallSession` passed in.
    """

    def __init__(
        self, settings: AriSettings, connection: AriConnection, audiosocket: AudioSocketServer
    ) -> None:
        self._settings = settings
        self._connection = connection
        self._audiosocket = audiosocket
        # Serialises externalMedia creation and media teardown across calls. Added when creating
        # one AudioSocket channel while another was hung up stalled Asterisk 22.10.1's ARI for
        # ~10 s (1 in ~10 e2e runs), most likely the silent-leg read `tear_down` now avoids.
        # Kept after the setup bench (bench/README.md section 7, call-setup-s13-*.json). Without
        # it: no stall, with 14-1,733 creations and teardowns a run begun while another was in
        # progress (20-40 calls/s), and test_ari_failures.py passed 40 of 40 runs. Its cost up
        # to 20 calls/s: waits p95 under 1 ms (held 1.4-1.9 ms p50), none in the figures (3
        # interleaved pairs at 20/s: setup p95 medians 22.9 ms with, 28.2 ms without). With
        # Asterisk saturated (40 calls/s on 2 cores) it queues setups (StasisStart -> AudioSocket
        # p50 0.9-2.6 s, 0.1-1.6 s without), but 1 of 8 such runs without it failed 32 of 600
        # setups (add externalMedia: 400 "Channel not found" / 422; cause not found), 0 of 6
        # with it. A seam for `bench.call_setup` (a timed lock, or none) and tests only: swap it
        # before the controller runs, never with calls in progress (a call holding the old lock
        # would not hold off one that takes the new).
        self.media_lock: contextlib.AbstractAsyncContextManager[None] = asyncio.Lock()

    async def set_up(self, session: CallSession) -> AudioSocketConnection:
        """Answer the caller and connect it, through a bridge, to a new AudioSocket stream.

        Returns the stream's connection. Raises `AriError` when ARI is disconnected, a request fails
        (HTTP status and body in the message) or a step takes longer than `timeout_s`, and
        `CallerGone` when the caller hangs up first. On any failure the AudioSocket side is undone
        here; the ARI resources are left to `tear_down`, which the caller always runs.
        """
        s = self._settings
        client = self._connection.client
        if client is None:
            raise AriError(f"call {session.uuid}: ARI connection lost before setup")
        cid, bid, em = session.channel_id, session.bridge_id, session.em_id
        await self._step(session, "answer", ari_op(client, "channels", "answer", channelId=cid))
        await self._step(
            session, "create bridge", ari_op(client, "bridges", "create", type="mixing", bridgeId=bid)
        )
        await self._step(
            session, "add caller", ari_op(client, "bridges", "addChannel", bridgeId=bid, channel=cid)
        )
        # Register before the POST: Asterisk connects inside the externalMedia request.
        conn_future = self._audiosocket.expect(uuid.UUID(session.uuid))
        keeper = _LegSilence(self._audiosocket.pacer)
        conn_future.add_done_callback(keeper.start)
        try:
            async with self.media_lock:
                await self._step(
                    session,
                    "externalMedia",
                    ari_op(
                        client,
                        "channels",
                        "externalMedia",
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
                session,
                "add externalMedia",
                ari_op(client, "bridges", "addChannel", bridgeId=bid, channel=em),
            )
            return await self._step(session, "AudioSocket connection", conn_future)
        except BaseException:
            if not conn_future.done() or conn_future.cancelled():
                self._audiosocket.forget(uuid.UUID(session.uuid))
            elif conn_future.exception() is None:
                conn_future.result().hangup()  # connected, but a later step failed
            raise
        finally:
            # The handler's playout takes over (its first frame a few ms after this returns).
            conn_future.remove_done_callback(keeper.start)
            keeper.stop()

    async def _step(
        self, session: CallSession, what: str, aw: Coroutine[Any, Any, T] | asyncio.Future[T]
    ) -> T:
        """Await one setup step, bounded by timeout_s, abandoned if the caller hangs up.

        A request (coroutine) runs as its own named task so that it can be raced against the
        hang-up; when it is abandoned it is cancelled and awaited (bounded) before we go on.
        """
        fut: asyncio.Future[T] = (
            aw
            if isinstance(aw, asyncio.Future)
            else asyncio.create_task(aw, name=f"ari-setup-{session.uuid}-{what.replace(' ', '-')}")
        )
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                await asyncio.wait((fut, session.gone), return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            await cancel_and_wait(fut)
            raise AriError(
                f"call {session.uuid}: {what}: no result within {self._settings.timeout_s} s"
            ) from None
        except BaseException:  # cancelled from outside (close()): abandon the request too
            await cancel_and_wait(fut)
            raise
        if not fut.done():  # the caller hung up first
            await cancel_and_wait(fut)
            raise CallerGone(what)
        try:
            return fut.result()
        except web_exceptions.HTTPException as exc:
            raise AriError(f"call {session.uuid}: {what}: HTTP {exc.status} {exc.text}") from exc

    async def tear_down(self, session: CallSession, conn: AudioSocketConnection | None) -> None:
        """End the stream (trailing silence, 0x00, close), then hang up the caller (unless it is
        gone), then the media leg and bridge, then wait for the stream to close.

        The stream ends first. Once Asterisk 22.10.1's AudioSocket channel is inside its read of a
        message header, it polls 5 ms at a time with no overall deadline until a byte or EOF comes
        (res/res_audiosocket.c, `ast_audiosocket_receive_frame_with_hangup`; open upstream as
        asterisk/asterisk#2089), and `__ast_read` (main/channel.c) holds the channel's lock
        across it. A DELETE of that channel waits for the lock; so does ARI's lookup of any
        channel by id (the default ao2_legacy channel storage locks each channel it walks past
        while holding the container's mutex, main/channelstorage_ao2_legacy.c), and channel
        creation (externalMedia) waits for that mutex. A leg we no longer sent on (a handler that
        failed before any audio, or one whose playout had left the pacer) so stalled these
        DELETEs and other calls' setup for our `timeout_s`, ~10 s. EOF ends that read. Why
        Asterisk enters the read with nothing to read is not in the source we read; #2089 saw it
        on 1 of 3-5 calls with a peer silent at first. (#2078, open, reports a /channels stall
        like it on 20.18/20.19, cause not found.)

        The 0x00 goes `TRAILING_FRAMES` (40 ms) of paced silence behind the handler's last frame
        (its playout has sent everything when it returns, `Playout.drain`), unless the caller is
        gone or transferred: right behind it, Asterisk 22.10.1 lost that last frame at the
        caller in 6 of 16 calls (124 of 125 frames; 8 of 8 whole when the caller's DELETE came
        first; 10 of 10 with the silence). The silence also keeps Asterisk's read fed meanwhile.
        Only a paused peer's stream is aborted, its buffer dropped (`AudioSocketConnection._end`):
        over 64 KiB unread by Asterisk is 4 s of audio already late, which would reach the phone
        as a burst.

        Best effort and bounded: failures are logged, never raised (CancelledError excepted).
        """
        if conn is not None:
            if not conn.closed and not session.caller_gone.is_set() and not session.transferred:
                await self._trailing_silence(conn)
            conn.hangup()
        if not session.caller_gone.is_set() and not session.transferred:
            await self.delete_caller(session)
        # A transferred caller stays in the bridge with the operator: only the bot's leg goes.
        await self.delete_media(session, keep_bridge=session.transferred)
        if conn is not None:
            try:
                async with asyncio.timeout(self._settings.timeout_s):
                    await conn.wait_closed()
            except Exception as exc:  # best effort: log and go on (never CancelledError)
                log.warning("call %s: waiting for AudioSocket close failed: %r", session.uuid, exc)

    async def _trailing_silence(self, conn: AudioSocketConnection) -> None:
        """`TRAILING_FRAMES` of paced silence behind the handler's last frame (bounded)."""
        silence = _LegSilence(self._audiosocket.pacer)
        silence.send_on(conn, TRAILING_FRAMES)
        try:
            async with asyncio.timeout(1.0):  # a stopped pacer must not hold the teardown
                await silence.sent.wait()
        except TimeoutError:
            log.warning("call %s: no trailing silence sent within 1 s", conn.uuid)
        finally:
            silence.stop()

    async def refuse(self, channel_id: str) -> None:
        """Hang an unanswered new caller up with cause congestion: PJSIP answers the INVITE with
        503, which a SIP proxy in front retries elsewhere. Bounded; failures are logged."""
        await self._delete(
            channel_id,
            "refused caller channel",
            "channels",
            "hangup",
            channelId=channel_id,
            reason="congestion",
        )

    async def delete_caller(self, session: CallSession) -> None:
        """DELETE the caller channel (the hang-up); only the first call does anything."""
        if session.caller_deleted:
            return
        session.caller_deleted = True
        await self._delete(session.uuid, "caller channel", "channels", "hangup", channelId=session.channel_id)

    async def delete_media(self, session: CallSession, *, keep_bridge: bool = False) -> None:
        """DELETE the externalMedia channel, wait until Asterisk reports it gone, destroy the bridge
        (unless `keep_bridge`: a transferred call's caller and operator are talking in it).

        Only the first call does anything. Holds the media lock while the channel goes away.
        """
        if session.media_deleted:
            return
        session.media_deleted = True
        async with self.media_lock:
            await self._delete(
                session.uuid, "externalMedia channel", "channels", "hangup", channelId=session.em_id
            )
            if session.em_started.done():
                # The DELETE returns before Asterisk has torn the channel down: hold the lock
                # until it has, so no other AudioSocket channel is created meanwhile (bounded).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._settings.timeout_s):
                        await session.em_ended.wait()
        if not keep_bridge:
            await self._delete(session.uuid, "bridge", "bridges", "destroy", bridgeId=session.bridge_id)

    async def end_transferred(self, session: CallSession) -> None:
        """One side of a transferred call hung up: hang up the other, destroy the bridge (bounded)."""
        await self._delete(session.uuid, "caller channel", "channels", "hangup", channelId=session.channel_id)
        if session.op_id is not None:
            await self._delete(
                session.uuid, "operator channel", "channels", "hangup", channelId=session.op_id
            )
        await self._delete(session.uuid, "bridge", "bridges", "destroy", bridgeId=session.bridge_id)

    async def hang_up_channel(self, session: CallSession, channel_id: str, what: str) -> None:
        """DELETE one channel of the call (bounded; 404 is success; failures logged)."""
        await self._delete(session.uuid, what, "channels", "hangup", channelId=channel_id)

    async def _delete(self, call: str, what: str, repo: str, op: str, **params: str) -> None:
        """Call `client.<repo>.<op>(**params)`, bounded by timeout_s; 404 is success, errors are
        logged naming `call` (the call id, or the refused channel)."""
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                # ARI may be reconnecting (websocket blip): wait for it, bounded, rather than
                # leave the caller on a silent line.
                await self._connection.connected.wait()
                client = self._connection.client
                if client is None:
                    raise TimeoutError("ARI not connected")
                await ari_op(client, repo, op, **params)
        except web_exceptions.HTTPNotFound:
            pass  # already gone
        except (web_exceptions.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("call %s: deleting %s failed: %r", call, what, exc)
