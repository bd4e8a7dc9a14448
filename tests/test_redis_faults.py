"""Redis killed, frozen and restarted empty mid-call: the caller still hears every phrase.

The real service path without Asterisk: a FakeAsterisk caller on a real AudioSocket socket, the
TelephonyGateway, a fresh Orchestrator per call, espeak-ng TTS, STT from the SpeechKit stand-in,
and the audio cache on a real redis-server process (`testkit.redis_server`) that the test kills
(SIGKILL), freezes (SIGSTOP) or replaces with an empty one on the same port. "Heard" means the
frames of the right clip reached the caller's socket.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bridge.app import VoicebridgeApp
from bridge.ari import AriCall
from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.settings import ProvidersSettings, Settings
from orchestrator.adapters.openai_settings import OpenAISettings
from orchestrator.adapters.speechkit import YandexSettings
from orchestrator.cache.audio_format import text_digest, unpack_cached
from orchestrator.cache.redis_settings import RedisSettings
from orchestrator.cache.resilient import ResilientAudioCache
from orchestrator.domain.models import AudioChunk
from orchestrator.orchestrator import CallEvent
from testkit.fake_asterisk import FakeAsterisk, FakeCallerPool
from testkit.redis_server import RedisProcess
from testkit.standins.openai_server import OpenAIStandin
from testkit.standins.speechkit_server import SpeechKitStandin

MAP = str(Path(__file__).resolve().parent.parent / "dialogue_maps" / "cleaning_quote.ru.json")
T = 60  # bound on any one wait (s); a healthy run takes a few seconds
GREETING, GOODBYE = "static:greeting", "static:goodbye_refusal"


@dataclass
class Service:
    app: VoicebridgeApp
    server: AudioSocketServer
    pool: FakeCallerPool
    stt: SpeechKitStandin
    events: dict[str, list[CallEvent]]
    listening: dict[str, asyncio.Queue[None]]

    @property
    def cache(self) -> ResilientAudioCache:
        assert self.app.services is not None
        cache = self.app.services.audio_cache
        assert isinstance(cache, ResilientAudioCache)
        return cache

    async def clip(self, key: str) -> AudioChunk:
        clip = await self.cache.get(key)
        assert clip is not None
        return clip

    async def call(
        self,
        speech: list[tuple[str, bytes]] = (),  # type: ignore[assignment]
        *,
        after_greeting: Callable[[], Awaitable[None]] | None = None,
        hang_up_on: AudioChunk | None = None,
    ) -> FakeAsterisk:
        """One call. With `hang_up_on`: the caller hangs up once the first second of that clip
        reached it. Else: wait for the greeting to end, run `after_greeting`, say each
        (line, audio) of `speech` after the bot finished. Returns the caller once the call ended."""
        call_id = str(uuid.uuid4())
        self.stt.script.set_call(call_id, [line for line, _ in speech])
        self.events[call_id], self.listening[call_id] = [], asyncio.Queue()
        connected = self.server.expect(uuid.UUID(call_id))
        caller = await self.pool.connect(uuid.UUID(call_id))
        conn = await asyncio.wait_for(connected, 5)
        handler = asyncio.create_task(
            self.app.on_call(AriCall(call_id, "test-channel", None, None, conn, asyncio.Event())),
            name="test-call",
        )
        try:
            if hang_up_on is not None:
                first_second = AudioChunk(hang_up_on.pcm[:16000], hang_up_on.sample_rate)
                await asyncio.wait_for(caller.wait_until(lambda c: heard(c, first_second)), T)
                self.pool.hangup(caller)
            else:
                for _line, pcm in speech:
                    await asyncio.wait_for(self.listening[call_id].get(), T)
                    if after_greeting is not None:
                        await after_greeting()
                        after_greeting = None
                    caller.play(pcm)
            await asyncio.wait_for(handler, T)
        finally:
            if not handler.done():
                handler.cancel()
        return caller


@pytest.fixture
async def make_service(
    speechkit_standin: SpeechKitStandin, openai_standin: OpenAIStandin
) -> AsyncIterator[Callable[[RedisSettings], Awaitable[Service]]]:
    started: list[Service] = []

    async def make(redis: RedisSettings) -> Service:
        settings = Settings(
            dialogue_map=MAP,
            redis=redis,
            providers=ProvidersSettings(tts="espeak", intents="local"),
            yandex=YandexSettings(stt_endpoint=speechkit_standin.endpoint, tls=False),
            openai=OpenAISettings(base_url=openai_standin.base_url, api_key="test", moderation=False),
        )
        events: dict[str, list[CallEvent]] = {}
        listening: dict[str, asyncio.Queue[None]] = {}

        def observe(cid: str, event: CallEvent) -> None:
            events[cid].append(event)
            if event.kind == "listening":
                listening[cid].put_nowait(None)

        app = VoicebridgeApp(settings, observer=observe)
        app.services = await app.composition.build_services()  # warms Redis (espeak) and memory
        app.pacer.start()
        server = AudioSocketServer(AudioSocketSettings(bind_port=0), pacer=app.pacer)
        await server.start()
        service = Service(
            app, server, FakeCallerPool("127.0.0.1", server.port), speechkit_standin, events, listening
        )
        started.append(service)
        return service

    try:
        yield make
    finally:
        for s in started:
            await s.pool.close()
            await s.server.close()
            await s.app.close()


def heard(caller: FakeAsterisk, clip: AudioChunk) -> bool:
    """Whether the whole clip reached the caller, frame-aligned as the playout sends it."""
    received = b"".join(r.message.pcm for r in caller.audio_frames)  # type: ignore[union-attr]
    return clip.pcm in received


async def test_redis_killed_mid_call_the_caller_still_hears_the_goodbye_and_new_calls_their_greeting(
    make_service: Callable[[RedisSettings], Awaitable[Service]],
    redis_proc: RedisProcess,
    make_speech: Callable[[str], bytes],
) -> None:
    service = await make_service(RedisSettings(url=redis_proc.url, timeout_s=0.3))
    greeting, goodbye = await service.clip(GREETING), await service.clip(GOODBYE)
    no = [("нет спасибо", make_speech("нет спасибо"))]

    async def kill() -> None:
        redis_proc.kill()

    caller = await service.call(no, after_greeting=kill)
    assert heard(caller, greeting) and heard(caller, goodbye)
    assert list(service.app.outcomes)[-1][1] == "end_call"
    # A new call while Redis is still dead: greeted as usual.
    await service.call(hang_up_on=greeting)


async def test_redis_frozen_costs_one_bounded_read_then_memory_and_live_tts_serve(
    make_service: Callable[[RedisSettings], Awaitable[Service]],
    redis_proc: RedisProcess,
    make_speech: Callable[[str], bytes],
) -> None:
    # No memory budget: only the vital phrases (emergency, fillers, goodbyes) are held, so the
    # greeting must come from Redis, and with Redis frozen, from live TTS.
    settings = RedisSettings(url=redis_proc.url, timeout_s=0.3, probe_every_s=0.1, memory_max_mb=0)
    service = await make_service(settings)
    cache = service.cache
    assert cache.held(GOODBYE) and cache.held("static:emergency") and not cache.held(GREETING)
    greeting, goodbye = await service.clip(GREETING), await service.clip(GOODBYE)
    no = [("нет спасибо", make_speech("нет спасибо"))]

    async def freeze() -> None:
        redis_proc.freeze()

    try:
        caller = await service.call(no, after_greeting=freeze)
        assert heard(caller, greeting) and heard(caller, goodbye)
        # New calls while Redis is frozen: the first read that needs Redis (or the watch's
        # check, whichever comes first) waits timeout_s once, then Redis is skipped; the
        # greeting is synthesized live (espeak: the same audio).
        for _ in range(2):
            await service.call(hang_up_on=greeting)
        assert not cache.redis_up
        assert cache.stats.redis_failures == 1
        # Readiness reads the cache's state (no ping that would wait on the frozen Redis).
        assert "redis" in service.app.readiness().not_ready
        assert cache.stats.synthesized >= 1
        failures = [e for evs in service.events.values() for e in evs if e.kind == "provider_failure"]
        assert failures == []
    finally:
        redis_proc.thaw()
    # Redis answers again: the watch notices and re-warms (nothing was lost: nothing to write).
    await asyncio.wait_for(cache.wait_idle(), T)
    assert cache.redis_up and cache.stats.rewarms >= 1
    assert "redis" not in service.app.readiness().not_ready
    hits = cache.stats.redis_hits
    await service.call(hang_up_on=greeting)
    assert cache.stats.redis_hits == hits + 1  # read from Redis again


async def test_redis_restarted_empty_is_rewarmed_and_no_call_goes_mute(
    make_service: Callable[[RedisSettings], Awaitable[Service]],
    redis_proc: RedisProcess,
    make_speech: Callable[[str], bytes],
) -> None:
    service = await make_service(RedisSettings(url=redis_proc.url, timeout_s=0.3))
    greeting, goodbye = await service.clip(GREETING), await service.clip(GOODBYE)
    no = [("нет спасибо", make_speech("нет спасибо"))]
    caller = await service.call(no, after_greeting=redis_proc.restart_empty)
    assert heard(caller, greeting) and heard(caller, goodbye)
    await service.call(hang_up_on=greeting)
    # The empty Redis is filled again in the background with every phrase of the map.
    await asyncio.wait_for(service.cache.wait_idle(), T)
    assert service.app.services is not None
    texts = service.app.services.dialogue_map.audio
    client = aioredis.Redis.from_url(redis_proc.url)
    try:
        for key, text in texts.items():
            blob = await client.get(key)
            assert blob is not None, key
            assert unpack_cached(blob, key=key).text_sha256 == text_digest(text)
    finally:
        await client.aclose()
    assert service.cache.stats.rewarmed_keys >= len(texts)
