"""`[call] max_calls`: a caller beyond the limit is refused with `congestion`, the call in
progress is untouched; a call the service never serves (refused, its media leg failed) is reported
to whoever expected it (an outbound campaign), not left waiting (a fake ARI on real sockets, the
real service, the stand-ins)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from bridge.app import VoicebridgeApp
from orchestrator.call_settings import CallSettings
from testkit.ari_service import running_service
from testkit.fake_ari import FakeAri

T = 15.0  # bound on any one wait (s)


@pytest.fixture
async def one_call_app(fake_ari: FakeAri) -> AsyncIterator[tuple[VoicebridgeApp, FakeAri]]:
    async with running_service(fake_ari, CallSettings(max_calls=1)) as app:
        yield app, fake_ari


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
