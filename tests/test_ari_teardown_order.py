"""A call's AudioSocket leg is not left silent around its ARI requests: paced silence from the
moment it connects through the setup, and the stream ended before any teardown DELETE, a few
frames of silence behind the goodbye's last one.

Asterisk 22's AudioSocket channel, once inside its read of a message header, waits for our next
byte with no overall deadline while `__ast_read` holds the channel's lock (res/res_audiosocket.c,
asterisk/asterisk#2089); a DELETE of that channel, ARI's lookups of any channel by id, channel
creation and addChannel of that channel (res/stasis/control.c queues a frame on it) wait behind
it (see `CallLegs.tear_down`). A handler that failed before sending any audio left its leg
silent, and the caller DELETE then stalled, with the other calls' setup, until our DELETE
timeouts ran out (~10 s; 1 run in ~30 of three to six such calls on the real Asterisk). Real
sockets: a fake ARI (testkit.fake_ari) and the real AudioSocket server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from bridge.ari import AriCall, AriController, AriSettings, CallHandler
from bridge.ari.legs import TRAILING_FRAMES
from bridge.audiosocket.connection import AudioSocketConnection
from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.pacer import Pacer
from bridge.playout import Playout
from orchestrator.domain.models import AudioChunk
from testkit.fake_ari import FakeAri
from testkit.fake_asterisk import FakeAsterisk
from testkit.ports import free_port

T = 15.0
FRAMES = 5  # 100 ms of silence before addChannel(em) answers


@asynccontextmanager
async def controller(
    fake: FakeAri, on_call: CallHandler
) -> AsyncIterator[tuple[AriController, AudioSocketServer]]:
    """`fake` started, a real AudioSocket server, and a connected controller serving `on_call`."""
    await fake.start()
    port = free_port()
    server = AudioSocketServer(AudioSocketSettings(bind_port=port), pacer=Pacer())
    await server.start()
    ari = AriController(
        AriSettings(url=fake.url, audiosocket_host=f"127.0.0.1:{port}", reconnect_min_s=0.05), server, on_call
    )
    runner = asyncio.create_task(ari.run(), name="test-ari-controller")
    try:
        async with asyncio.timeout(T):
            await ari.connected.wait()
        yield ari, server
    finally:
        await ari.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await server.close()
        await fake.close()


class OrderSeen(FakeAri):
    """Records, at each channel DELETE, whether the call's AudioSocket leg had ended on our side."""

    def __init__(self) -> None:
        super().__init__()
        self.conns: dict[str, AudioSocketConnection] = {}  # by caller channel id
        self.stream_ended_at_delete: dict[str, bool] = {}  # by deleted channel id

    async def _delete_channel(self, request: web.Request) -> web.Response:
        channel_id = request.match_info["id"]
        conn = self.conns.get(channel_id)
        if conn is not None:
            self.stream_ended_at_delete[channel_id] = conn.closed
        return await super()._delete_channel(request)


async def test_a_failing_handler_s_stream_ends_before_its_caller_is_deleted() -> None:
    fake = OrderSeen()

    async def on_call(call: AriCall) -> None:
        fake.conns[call.channel_id] = call.conn
        raise RuntimeError("broken dialogue map")  # before any audio: the leg never heard from us

    async with controller(fake, on_call) as (ari, _):
        caller = await fake.place_call()
        await fake.wait_for(lambda: caller in fake.deleted, T)
        async with asyncio.timeout(T):
            await ari.idle.wait()
        assert fake.stream_ended_at_delete == {caller: True}


class SilenceBeforeAdd(FakeAri):
    """addChannel(em) answers only once the em leg has received FRAMES audio messages
    (bounded: after 2 s it answers anyway, recording how many came)."""

    def __init__(self) -> None:
        super().__init__()
        self.heard_before_add: list[int] = []  # audio messages the leg had when addChannel(em) came

    async def _add_channel(self, request: web.Request) -> web.Response:
        channel = self.channels.get(request.query["channel"])
        leg = channel.leg if channel is not None else None
        if leg is not None:

            def enough(fake: FakeAsterisk) -> bool:
                return len(fake.audio_frames) >= FRAMES

            try:
                async with asyncio.timeout(2.0):
                    await leg.wait_until(enough)
            except TimeoutError:
                pass
            self.heard_before_add.append(len(leg.audio_frames))
        return await super()._add_channel(request)


async def test_the_leg_hears_silence_while_the_call_is_set_up() -> None:
    # The handler's playout starts only after addChannel(em) has returned: before, the leg was
    # silent through the whole setup (0 frames here).
    fake = SilenceBeforeAdd()
    handled = asyncio.Event()

    async def on_call(call: AriCall) -> None:
        handled.set()

    async with controller(fake, on_call) as (ari, server):
        await fake.place_call()
        async with asyncio.timeout(T):
            await handled.wait()
            await ari.idle.wait()
        assert fake.heard_before_add == [FRAMES]
        # The setup's silence stopped with the setup: nothing of it is left on the shared tick.
        assert len(server.pacer) == 0


async def say_goodbye(call: AriCall, pacer: Pacer) -> None:
    """5 voiced frames of a goodbye through a playout on `pacer`, returning once all are sent."""
    playout = Playout(call.conn)
    pacer.add(playout)
    try:
        await playout.write(AudioChunk(bytes([0, 40]) * 800))
        await playout.drain()
    finally:
        pacer.remove(playout)


async def test_the_goodbye_s_last_frame_is_followed_by_silence_before_the_stream_ends() -> None:
    # On the real Asterisk a 0x00 right behind the last frame lost that frame at the caller in 6
    # of 16 calls (124 of 125 tone frames; 8 of 8 whole with the old DELETE-first order): the
    # stream now ends TRAILING_FRAMES of paced silence after the handler's last frame.
    fake = FakeAri()
    legs: list[FakeAsterisk] = []
    returned = asyncio.Event()

    async def on_call(call: AriCall) -> None:
        legs.extend(fake.legs())  # this call's only
        try:
            await say_goodbye(call, pacer)
        finally:
            returned.set()

    async with controller(fake, on_call) as (ari, server):
        pacer = server.pacer
        await fake.place_call()
        async with asyncio.timeout(T):
            await returned.wait()
            await ari.idle.wait()
            await legs[0].wait_until(lambda leg: leg.hangup_received)
    kinds = ["voice" if any(r.message.pcm) else "silence" for r in legs[0].audio_frames]  # type: ignore[union-attr]
    last_voice = len(kinds) - 1 - kinds[::-1].index("voice")
    assert kinds.count("voice") == 5
    assert len(kinds) - 1 - last_voice >= TRAILING_FRAMES


async def test_closing_the_controller_during_a_call_s_teardown_still_hangs_the_caller_up() -> None:
    # A campaign stops the service as soon as its last call's handler returns: the controller's
    # close() came while that call sent its trailing silence, cancelled the teardown there, and
    # the caller's DELETE never went (the real Asterisk kept the callee's line up; e2e
    # test_campaign_amd.py). A call in its teardown is now waited for, not cancelled.
    fake = FakeAri()
    legs: list[FakeAsterisk] = []

    async def on_call(call: AriCall) -> None:
        legs.extend(fake.legs())
        await say_goodbye(call, pacer)

    def trailing_silence_started(leg: FakeAsterisk) -> bool:
        kinds = [any(r.message.pcm) for r in leg.audio_frames]  # type: ignore[union-attr]
        return kinds.count(True) == 5 and not kinds[-1]

    async with controller(fake, on_call) as (ari, server):
        pacer = server.pacer
        caller = await fake.place_call()
        async with asyncio.timeout(T):
            await fake.wait_for(lambda: bool(fake.legs()), T)
            leg = fake.legs()[0]
            await leg.wait_until(trailing_silence_started)
            await ari.close()
        assert caller in fake.deleted
        assert leg.hangup_received
