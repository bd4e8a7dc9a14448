"""The example map end to end through the real adapters and the real telephony path, no Asterisk.

A fake Asterisk (a real TCP client) speaks espeak-ng Russian into the AudioSocket server; the
TelephonyGateway, the Orchestrator and the real adapters do the rest: STT over gRPC to the
SpeechKit stand-in (which recognises a scripted line per speech segment its VAD finds in the audio
it really receives), TTS over gRPC from the stand-in, the LLM over HTTP/SSE from the OpenAI
stand-in with moderation, and every cached phrase from a real Redis, warmed at start.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from bridge.app import VoicebridgeApp
from bridge.ari import AriCall
from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.settings import ProvidersSettings, Settings
from orchestrator.adapters.openai_settings import OpenAISettings
from orchestrator.adapters.speechkit import YandexSettings
from orchestrator.orchestrator import CallEvent
from testkit.fake_asterisk import FakeCallerPool
from testkit.standins.openai_server import OpenAIStandin
from testkit.standins.speechkit_server import SpeechKitStandin

MAP = str(Path(__file__).resolve().parent.parent / "dialogue_maps" / "cleaning_quote.ru.json")


async def test_example_call_through_the_real_adapters(
    speechkit_standin: SpeechKitStandin,
    openai_standin: OpenAIStandin,
    redis_url: str,
    make_speech: object,
) -> None:
    lines = ["у нас квартира шестьдесят метров", "а вы работаете по воскресеньям", "нет спасибо"]
    call_id = str(uuid.uuid4())
    speechkit_standin.script.set_call(call_id, lines)
    openai_standin.script.add("воскресень", "Да, мы работаем без выходных, с восьми до двадцати двух.")
    speech = [make_speech(line) for line in lines]  # type: ignore[operator]  # before the call: it blocks
    sk = speechkit_standin.endpoint
    settings = Settings(
        dialogue_map=MAP,
        redis_url=redis_url,
        providers=ProvidersSettings(tts="yandex", intents="local"),
        yandex=YandexSettings(stt_endpoint=sk, tts_endpoint=sk, tls=False),
        openai=OpenAISettings(base_url=openai_standin.base_url, api_key="test", moderation=True),
    )
    events: list[CallEvent] = []
    listening = asyncio.Queue[None]()

    def observe(cid: str, event: CallEvent) -> None:
        assert cid == call_id
        events.append(event)
        if event.kind == "listening":
            listening.put_nowait(None)

    app = VoicebridgeApp(settings, observer=observe)
    app.services = await app.composition.build_services()  # warms Redis through the stand-in TTS over gRPC
    app.pacer.start()
    server = AudioSocketServer(AudioSocketSettings(bind_port=0), pacer=app.pacer)
    await server.start()
    pool = FakeCallerPool("127.0.0.1", server.port)
    try:
        connected = server.expect(uuid.UUID(call_id))
        caller = await pool.connect(uuid.UUID(call_id))
        conn = await asyncio.wait_for(connected, 5)
        handler = asyncio.create_task(
            app.on_call(AriCall(call_id, "test-channel", None, None, conn, asyncio.Event())),
            name="test-call",
        )
        for pcm in speech:
            await asyncio.wait_for(listening.get(), 60)  # the bot finished and listens
            caller.play(pcm)
        await asyncio.wait_for(handler, 90)
    finally:
        await pool.close()
        await server.close()
        await app.close()

    assert list(app.outcomes) == [(call_id, "end_call")]
    states = [(e.data["from_state"], e.data["to_state"]) for e in events if e.kind == "state"]
    assert states == [("greeting", "quote"), ("quote", "goodbye_refusal")]
    said = [e.data["text"] for e in events if e.kind == "user_said"]
    assert said == lines  # every line came back from the STT stand-in, one final each
    assert any(e.kind == "llm_said" and "без выходных" in e.data["text"] for e in events)
    assert caller.voice_count > 100  # the caller heard the bot (greeting, price, LLM, goodbye)
    gaps = caller.inter_arrival()
    # Paced: no hole in the line a caller would hear as a dropout. The bound leaves room for a
    # loaded CI machine (wall-clock pacing itself is measured by `make bench`, not asserted here);
    # a blocked event loop or a stalled pacer shows as seconds.
    assert gaps.max < 0.5
    assert app.calls_active == 0


async def test_a_call_that_cannot_be_set_up_hears_the_emergency_phrase(
    speechkit_standin: SpeechKitStandin, openai_standin: OpenAIStandin
) -> None:
    from orchestrator.adapters.tts.espeak import EspeakTTS
    from orchestrator.adapters.tts.espeak_settings import EspeakSettings

    settings = Settings(
        dialogue_map=MAP,
        providers=ProvidersSettings(tts="espeak", intents="local"),
        yandex=YandexSettings(stt_endpoint=speechkit_standin.endpoint, tls=False),
        openai=OpenAISettings(base_url=openai_standin.base_url, api_key="test", moderation=False),
    )
    app = VoicebridgeApp(settings)
    app.services = await app.composition.build_services()
    app.services.tts_factory = lambda _cid: EspeakTTS(
        EspeakSettings(binary="/nonexistent/espeak-ng")
    )  # connect() fails
    app.pacer.start()
    server = AudioSocketServer(AudioSocketSettings(bind_port=0), pacer=app.pacer)
    await server.start()
    pool = FakeCallerPool("127.0.0.1", server.port)
    call_id = uuid.uuid4()
    try:
        connected = server.expect(call_id)
        caller = await pool.connect(call_id)
        conn = await asyncio.wait_for(connected, 5)
        await asyncio.wait_for(
            app.on_call(AriCall(str(call_id), "test-channel", None, None, conn, asyncio.Event())), 30
        )
    finally:
        await pool.close()
        await server.close()
        await app.close()
    assert list(app.outcomes) == [(str(call_id), "setup_failed")]
    emergency = await app.services.audio_cache.get(app.services.dialogue_map.settings.emergency_filler_key)
    assert emergency is not None
    pcm = emergency.pcm
    voiced = sum(1 for i in range(0, len(pcm) - 319, 320) if any(pcm[i : i + 320]))
    assert caller.voice_count >= voiced  # the whole phrase, then the hang-up
