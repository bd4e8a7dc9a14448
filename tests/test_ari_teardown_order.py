"""A call's teardown ends its AudioSocket stream before any ARI DELETE.

Asterisk 22's AudioSocket channel, once inside its read of a message header, waits for our next
byte with no overall deadline while `__ast_read` holds the channel's lock (res/res_audiosocket.c,
asterisk/asterisk#2089); a DELETE of that channel, ARI's lookups of any channel by id and channel
creation wait behind it (see `CallLegs.tear_down`). A handler that failed before sending any
audio left its leg silent, and the caller DELETE then stalled, with the other calls' setup, until
our DELETE timeouts ran out (~10 s; 1 run in ~30 of three to six such calls on the real
Asterisk). Real sockets: a fake ARI (testkit.fake_ari) and the real AudioSocket server.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from bridge.ari import AriCall, AriController, AriSettings
from bridge.audiosocket.connection import AudioSocketConnection
from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.pacer import Pacer
from testkit.fake_ari import FakeAri
from testkit.ports import free_port

T = 15.0


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
    await fake.start()
    port = free_port()
    server = AudioSocketServer(AudioSocketSettings(bind_port=port), pacer=Pacer())
    await server.start()

    async def on_call(call: AriCall) -> None:
        fake.conns[call.channel_id] = call.conn
        raise RuntimeError("broken dialogue map")  # before any audio: the leg never heard from us

    ari = AriController(
        AriSettings(url=fake.url, audiosocket_host=f"127.0.0.1:{port}", reconnect_min_s=0.05), server, on_call
    )
    runner = asyncio.create_task(ari.run(), name="test-ari-controller")
    try:
        async with asyncio.timeout(T):
            await ari.connected.wait()
        caller = await fake.place_call()
        await fake.wait_for(lambda: caller in fake.deleted, T)
        async with asyncio.timeout(T):
            await ari.idle.wait()
        assert fake.stream_ended_at_delete == {caller: True}
    finally:
        await ari.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await server.close()
        await fake.close()
