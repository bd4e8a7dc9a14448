"""`[call] max_calls`: a caller beyond the limit is refused with `congestion`, the call in
progress is untouched (a fake ARI on real sockets, the real service, the stand-ins)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from bridge.admin import AdminSettings
from bridge.ami import AmiSettings
from bridge.app import VoicebridgeApp
from bridge.ari import AriSettings
from bridge.audiosocket.server import AudioSocketSettings
from bridge.settings import Settings
from orchestrator.call_settings import CallSettings
from testkit.fake_ari import FakeAri
from testkit.phone_call import MAP, _free_port
from testkit.standins.launch import running_standins

T = 15.0  # bound on any one wait (s)


@pytest.fixture
async def one_call_app(fake_ari: FakeAri) -> AsyncIterator[tuple[VoicebridgeApp, FakeAri]]:
    fake = fake_ari
    port = _free_port()
    base = Settings(
        dialogue_map=MAP,
        call=CallSettings(max_calls=1),
        audiosocket=AudioSocketSettings(bind_port=port),
        ami=AmiSettings(log_events=False),
        admin=AdminSettings(port=0),  # 9180 may be taken by another run on this machine
        ari=AriSettings(url=fake.url, audiosocket_host=f"127.0.0.1:{port}"),
    )
    async with running_standins(base) as (settings, _, _):
        app = VoicebridgeApp(settings)
        await app.start()
        try:
            assert app.ari is not None
            async with asyncio.timeout(T):
                await app.ari.connected.wait()
            yield app, fake
        finally:
            await app.close()


async def test_the_call_beyond_max_calls_is_refused_with_congestion_and_the_first_goes_on(
    one_call_app: tuple[VoicebridgeApp, FakeAri],
) -> None:
    app, fake = one_call_app
    assert app.ari is not None
    first = await fake.place_call()
    await fake.wait_for(lambda: fake.leg_of(first) is not None, T)
    leg = fake.leg_of(first)
    assert leg is not None
    async with asyncio.timeout(T):
        await leg.wait_until(lambda c: c.voice_count >= 10)  # 200 ms of the greeting

    second = await fake.place_call(caller="79990000002")
    await fake.wait_for(lambda: second in fake.deleted, T)
    assert fake.deleted[second].hangup_reason == "congestion"
    assert not fake.deleted[second].answered
    assert fake.leg_of(second) is None  # no media channel was made for it
    assert app.ari.refused == 1

    # The first call is untouched: still counted, still hearing the bot, not hung up.
    assert first in fake.channels and first not in fake.deleted
    assert app.calls_active == 1 and leg.connected
    frames = leg.audio_count
    async with asyncio.timeout(T):
        await leg.wait_until(lambda c: c.audio_count >= frames + 25)
    assert leg.connected


def test_max_calls_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="max_calls"):
        dataclasses.replace(CallSettings(), max_calls=0)
