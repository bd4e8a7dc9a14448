"""`[call] max_calls`: a caller beyond the limit is refused with `congestion`, the call in
progress is untouched; a call the service never serves (refused, its media leg failed) is reported
to whoever expected it (an outbound campaign), not left waiting (a fake ARI on real sockets, the
real service, the stand-ins)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
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
from testkit.phone_call import MAP
from testkit.standins.launch import running_standins

T = 15.0  # bound on any one wait (s)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def one_call_app() -> AsyncIterator[tuple[VoicebridgeApp, FakeAri]]:
    fake = FakeAri()
    await fake.start()
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
            await fake.close()


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


async def test_an_expected_outbound_call_that_is_refused_or_fails_setup_is_reported_over(
    one_call_app: tuple[VoicebridgeApp, FakeAri],
) -> None:
    app, fake = one_call_app
    # Its media leg cannot be made (Asterisk answers externalMedia with 500).
    fake.external_media_status = 500
    failed = app.expect_call("out-failed", {"name": "Анна"})
    await fake.place_call(channel_id="out-failed")
    async with asyncio.timeout(T):
        assert await failed == ("", "setup_failed", 0.0)
    assert app.calls_active == 0
    fake.external_media_status = None

    # Refused: one call is in progress and max_calls is 1.
    first = await fake.place_call()
    await fake.wait_for(lambda: fake.leg_of(first) is not None, T)
    refused = app.expect_call("out-refused", {})
    await fake.place_call(channel_id="out-refused")
    async with asyncio.timeout(T):
        assert await refused == ("", "refused", 0.0)
    assert first in fake.channels and first not in fake.deleted  # the call in progress goes on


def test_max_calls_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="max_calls"):
        dataclasses.replace(CallSettings(), max_calls=0)
