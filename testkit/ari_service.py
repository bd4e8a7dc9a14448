"""TEST INFRASTRUCTURE: the whole service (`VoicebridgeApp`: ARI controller, AudioSocket server, a
fresh Orchestrator per call) in this process, against a `FakeAri` on real sockets, with the
SpeechKit and OpenAI stand-ins (`running_standins`) and the in-memory audio cache."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable

from bridge.admin import AdminSettings
from bridge.ami import AmiSettings
from bridge.app import VoicebridgeApp
from bridge.ari import AriSettings
from bridge.audiosocket.server import AudioSocketSettings
from bridge.gc_policy import GcSettings
from bridge.settings import Settings
from orchestrator.call_settings import CallSettings
from testkit.fake_ari import FakeAri
from testkit.fake_asterisk import FakeAsterisk
from testkit.phone_call import MAP
from testkit.ports import free_port
from testkit.standins.launch import running_standins
from testkit.standins.openai_server import OpenAIStandin
from testkit.standins.speechkit_server import SpeechKitStandin

CONNECT_S = 15.0  # bound on the controller's first ARI connection


@contextlib.asynccontextmanager
async def running_service(
    fake: FakeAri,
    call: CallSettings | None = None,
    *,
    reconnect_s: tuple[float, float] | None = None,
    gc_settings: GcSettings | None = None,
) -> AsyncIterator[VoicebridgeApp]:
    """Start the service on free ports (admin port 0: never the default another run may hold),
    wait until its ARI websocket is up, yield it; close it on exit. `reconnect_s`: the ARI
    reconnect backoff (min, max) s, for tests that drop the websocket; `gc_settings`: `[gc]`
    (default: its defaults)."""
    async with running_service_and_standins(fake, call, reconnect_s=reconnect_s, gc_settings=gc_settings) as (
        app,
        _,
        _,
    ):
        yield app


@contextlib.asynccontextmanager
async def running_service_and_standins(
    fake: FakeAri,
    call: CallSettings | None = None,
    *,
    reconnect_s: tuple[float, float] | None = None,
    gc_settings: GcSettings | None = None,
) -> AsyncIterator[tuple[VoicebridgeApp, SpeechKitStandin, OpenAIStandin]]:
    """`running_service`, also yielding its SpeechKit and OpenAI stand-ins (to inject faults)."""
    port = free_port()
    ari = AriSettings(url=fake.url, audiosocket_host=f"127.0.0.1:{port}")
    if reconnect_s is not None:
        ari = dataclasses.replace(ari, reconnect_min_s=reconnect_s[0], reconnect_max_s=reconnect_s[1])
    base = Settings(
        dialogue_map=MAP,
        call=call or CallSettings(),
        audiosocket=AudioSocketSettings(bind_port=port),
        ami=AmiSettings(log_events=False),
        admin=AdminSettings(port=0),
        ari=ari,
        gc=gc_settings or GcSettings(),
    )
    async with running_standins(base) as (settings, speechkit, openai_standin):
        app = VoicebridgeApp(settings)
        await app.start()
        try:
            assert app.ari is not None
            async with asyncio.timeout(CONNECT_S):
                await app.ari.connected.wait()
            yield app, speechkit, openai_standin
        finally:
            await app.close()


async def call_until_greeting(fake: FakeAri, timeout_s: float) -> tuple[str, FakeAsterisk]:
    """Place a call; return its caller channel id and AudioSocket leg once the caller hears the
    greeting (each wait bounded by `timeout_s`)."""
    channel = await fake.place_call()
    await fake.wait_for(lambda: fake.leg_of(channel) is not None, timeout_s)
    leg = fake.leg_of(channel)
    assert leg is not None
    async with asyncio.timeout(timeout_s):
        await leg.wait_until(lambda c: c.voice_count > 0)  # the greeting
    return channel, leg


async def talk_and_hang_up(
    app: VoicebridgeApp,
    fake: FakeAri,
    line: bytes,
    *,
    timeout_s: float = 30.0,
    on_greeting: Callable[[], None] | None = None,
) -> None:
    """One call through the service: the greeting, `line` (8 kHz s16 PCM) said by the caller, the
    bot's answer, then the caller hangs up; returns once the service recorded the call's outcome.
    `on_greeting` runs once the caller heard the greeting (the call is in its dialogue). Each wait
    is bounded by `timeout_s`. The fake's own record of the call is then forgotten (as the soak
    does): what is left is the service's."""
    ended = len(app.outcomes)
    channel, leg = await call_until_greeting(fake, timeout_s)
    if on_greeting is not None:
        on_greeting()
    leg.play(line)
    heard = leg.voice_count
    async with asyncio.timeout(timeout_s):
        await leg.wait_until(lambda c: c.audio_queued == 0)
        await leg.wait_until(lambda c: c.voice_count > heard + 10)  # the answer
    await fake.hangup_caller(channel)
    async with asyncio.timeout(timeout_s):
        while len(app.outcomes) == ended:  # noqa: ASYNC110 - a deque, no event to wait on
            await asyncio.sleep(0.02)
    fake.deleted.clear()
    fake.channels.clear()
    del fake.requests[:]
