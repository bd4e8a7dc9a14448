"""TTS really stopped and started: new calls are greeted at once from cached audio, and TTS is
used again within about a second of coming back (the breaker's probes, gRPC's short backoff).

The service path without Asterisk (FakeAsterisk on a real AudioSocket socket); TTS is a
SpeechKit stand-in of its own (stopped, then started again on the same port), STT another.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.app import VoicebridgeApp
from bridge.ari import AriCall
from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.settings import ProvidersSettings, Settings
from orchestrator.adapters.openai_settings import OpenAISettings
from orchestrator.adapters.speechkit import YandexSettings
from orchestrator.orchestrator import CallEvent
from testkit.fake_asterisk import FakeAsterisk, FakeCallerPool
from testkit.standins.openai_server import OpenAIStandin
from testkit.standins.speechkit_server import SpeechKitStandin

MAP = str(Path(__file__).resolve().parent.parent / "dialogue_maps" / "cleaning_quote.ru.json")
T = 60


@pytest.fixture
async def tts_standin() -> AsyncIterator[list[SpeechKitStandin]]:
    """The TTS stand-in, in a list so a test can replace it (restart on the same port)."""
    server = SpeechKitStandin()
    await server.start()
    box = [server]
    try:
        yield box
    finally:
        await box[0].close()


async def test_tts_down_calls_go_on_with_cached_audio_and_recover_within_a_second(
    speechkit_standin: SpeechKitStandin,
    openai_standin: OpenAIStandin,
    tts_standin: list[SpeechKitStandin],
    make_speech: object,
) -> None:
    tts_endpoint = tts_standin[0].endpoint
    port = int(tts_endpoint.rsplit(":", 1)[1])
    settings = Settings(
        dialogue_map=MAP,
        providers=ProvidersSettings(tts="yandex", intents="local"),
        yandex=YandexSettings(stt_endpoint=speechkit_standin.endpoint, tts_endpoint=tts_endpoint, tls=False),
        openai=OpenAISettings(base_url=openai_standin.base_url, api_key="test", moderation=False),
    )
    events: dict[str, list[CallEvent]] = {}

    def observe(cid: str, event: CallEvent) -> None:
        events.setdefault(cid, []).append(event)

    app = VoicebridgeApp(settings, observer=observe)
    app.services = await app.composition.build_services()  # warmed through the TTS stand-in
    breaker = app.composition.tts_breaker
    assert breaker is not None
    greeting = await app.services.audio_cache.get("static:greeting")
    assert greeting is not None
    first_second = greeting.pcm[:16000]
    app.pacer.start()
    server = AudioSocketServer(AudioSocketSettings(bind_port=0), pacer=app.pacer)
    await server.start()
    pool = FakeCallerPool("127.0.0.1", server.port)
    loop = asyncio.get_running_loop()

    def greeted(c: FakeAsterisk) -> bool:
        return first_second in b"".join(r.message.pcm for r in c.audio_frames)  # type: ignore[union-attr]

    async def greeting_call() -> float:
        """A call hung up once the greeting's first second arrived; seconds to that point."""
        call_id = uuid.uuid4()
        connected = server.expect(call_id)
        caller = await pool.connect(call_id)
        conn = await asyncio.wait_for(connected, 5)
        started = loop.time()
        handler = asyncio.create_task(
            app.on_call(AriCall(str(call_id), "test-channel", None, None, conn, asyncio.Event())),
            name="test-call",
        )
        await asyncio.wait_for(caller.wait_until(greeted), T)
        took = loop.time() - started
        pool.hangup(caller)
        await asyncio.wait_for(handler, T)
        return took

    try:
        await tts_standin[0].close()  # TTS is down
        # Before: 5 s of silence, then the emergency phrase and a hang-up ("setup_failed").
        first = await greeting_call()
        assert breaker.state == "open"
        later = [await greeting_call() for _ in range(2)]
        assert [reason for _cid, reason in app.outcomes] == ["caller_hangup"] * 3
        refused = breaker.refused
        assert refused >= 2  # the later calls did not even try TTS
        print(
            f"\nTTS down: greeting after {first:.2f} s (first call), {later[0]:.2f} / {later[1]:.2f} s later"
        )

        # TTS comes back on the same port: the breaker's probe sees it.
        back = SpeechKitStandin(port=port)
        await back.start()
        tts_standin[0] = back
        back_at = loop.time()
        await asyncio.wait_for(breaker.wait_state("closed"), T)
        print(f"TTS back: circuit closed {loop.time() - back_at:.2f} s after the stand-in started")

        # A call that needs live TTS (the price is a `tts` item) gets it.
        call_id = str(uuid.uuid4())
        line = "у нас квартира шестьдесят метров"
        speechkit_standin.script.set_call(call_id, [line])
        speech = make_speech(line)  # type: ignore[operator]
        connected = server.expect(uuid.UUID(call_id))
        caller = await pool.connect(uuid.UUID(call_id))
        conn = await asyncio.wait_for(connected, 5)
        done = asyncio.Event()

        def watch(cid: str, event: CallEvent) -> None:
            observe(cid, event)
            if event.kind == "play" and event.data.get("kind") == "tts":
                done.set()

        app._observer = watch
        handler = asyncio.create_task(
            app.on_call(AriCall(call_id, "test-channel", None, None, conn, asyncio.Event())), name="test-call"
        )
        await asyncio.wait_for(caller.wait_until(greeted), T)
        caller.play(speech)
        await asyncio.wait_for(done.wait(), T)
        pool.hangup(caller)
        await asyncio.wait_for(handler, T)
        assert not [e for e in events[call_id] if e.kind == "provider_failure"]
        assert breaker.state == "closed"
    finally:
        await pool.close()
        await server.close()
        await app.close()
