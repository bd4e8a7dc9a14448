"""A call the AudioSocket server could not take is refused before it is answered (SIP 503), not
answered and then left silent: the ARI controller asks `AudioSocketServer.can_admit()` first.
Real sockets: a fake ARI (testkit.fake_ari) and the real AudioSocket server."""

from __future__ import annotations

import asyncio

from bridge.ari import AriCall, AriController, AriSettings
from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.pacer import Pacer
from testkit.fake_ari import FakeAri
from testkit.ports import free_port

T = 15.0


async def test_a_call_beyond_the_audiosocket_connection_cap_is_refused_unanswered() -> None:
    fake = FakeAri()
    await fake.start()
    port = free_port()
    server = AudioSocketServer(AudioSocketSettings(bind_port=port, max_connections=1), pacer=Pacer())
    await server.start()
    served: list[str] = []
    serving = asyncio.Event()

    async def on_call(call: AriCall) -> None:
        served.append(call.channel_id)
        serving.set()
        await call.caller_gone.wait()

    ari = AriController(
        AriSettings(url=fake.url, audiosocket_host=f"127.0.0.1:{port}", reconnect_min_s=0.05),
        server,
        on_call,
    )
    runner = asyncio.create_task(ari.run(), name="test-ari-controller")
    try:
        async with asyncio.timeout(T):
            await ari.connected.wait()
        first = await fake.place_call()
        await asyncio.wait_for(serving.wait(), T)
        second = await fake.place_call()
        await fake.wait_for(lambda: second in fake.deleted, T)
        refused = fake.deleted[second]
        assert refused.hangup_reason == "congestion"  # PJSIP answers the INVITE with 503
        assert not refused.answered
        assert served == [first] and ari.refused == 1
        assert sum(server.refused.values()) == 0  # never reached the AudioSocket server
        await fake.hangup_caller(first)
    finally:
        await ari.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await server.close()
        await fake.close()
