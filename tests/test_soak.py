"""Many calls through the real stack, and afterwards nothing of them is left in the process.

Calls run through the AudioSocket server, the TelephonyGateway, a fresh Orchestrator each and the
real adapters (STT and TTS over gRPC to the SpeechKit stand-in, the LLM client for the OpenAI
stand-in), ten at a time. Each caller hangs up during the greeting, as many real callers do. After
a warm-up, a second round of calls must leave the process exactly as the warm-up left it: no
extra tasks, file descriptors, Orchestrators, gateways, connections, or recognition and synthesis
streams (each call's are closed with it).
"""

from __future__ import annotations

import asyncio
import gc
import os
import uuid
from pathlib import Path

from bridge.app import VoicebridgeApp
from bridge.ari import AriCall
from bridge.audiosocket.server import AudioSocketConnection, AudioSocketServer, AudioSocketSettings
from bridge.gateway import TelephonyGateway
from bridge.settings import ProvidersSettings, Settings
from orchestrator.adapters.openai_settings import OpenAISettings
from orchestrator.adapters.speechkit import YandexSettings
from orchestrator.adapters.stt.yandex import YandexRecognitionStream
from orchestrator.adapters.tts.yandex import YandexSynthesisStream
from orchestrator.orchestrator import Orchestrator
from testkit.fake_asterisk import FakeCallerPool
from testkit.standins.openai_server import OpenAIStandin
from testkit.standins.speechkit_server import SpeechKitStandin

MAP = str(Path(__file__).resolve().parent.parent / "dialogue_maps" / "cleaning_quote.ru.json")
CONCURRENT = 10


def _live(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is kind)


def _our_tasks() -> set[asyncio.Task[object]]:
    """Tasks of the bridge side: not the stand-in servers' (they wind their RPCs down on their own)."""
    ours = set()
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        where = code.co_filename if code is not None else ""
        if "/grpc/" not in where and "/standins/" not in where and task.get_name() != "rpc_task":
            ours.add(task)
    return ours


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _calls(app: VoicebridgeApp, server: AudioSocketServer, pool: FakeCallerPool, n: int) -> None:
    async def one() -> None:
        call_id = uuid.uuid4()
        connected = server.expect(call_id)
        caller = await pool.connect(call_id)
        conn = await asyncio.wait_for(connected, 5)
        handler = asyncio.create_task(
            app.on_call(AriCall(str(call_id), "soak", None, None, conn, asyncio.Event())), name="soak-call"
        )
        async with asyncio.timeout(20):
            await caller.wait_until(lambda c: c.voice_count >= 25)  # half a second of greeting
        pool.hangup(caller)
        await caller.wait_closed()
        await asyncio.wait_for(handler, 20)
        pool.callers.remove(caller)

    for _ in range(n // CONCURRENT):
        await asyncio.gather(*(one() for _ in range(CONCURRENT)))


async def test_calls_leave_nothing_behind(
    speechkit_standin: SpeechKitStandin, openai_standin: OpenAIStandin
) -> None:
    settings = Settings(
        dialogue_map=MAP,
        providers=ProvidersSettings(tts="yandex", intents="local"),
        yandex=YandexSettings(
            stt_endpoint=speechkit_standin.endpoint, tts_endpoint=speechkit_standin.endpoint, tls=False
        ),
        openai=OpenAISettings(base_url=openai_standin.base_url, api_key="test", moderation=False),
    )
    app = VoicebridgeApp(settings)
    app.services = await app.composition.build_services()
    app.pacer.start()
    server = AudioSocketServer(AudioSocketSettings(bind_port=0), pacer=app.pacer)
    await server.start()
    pool = FakeCallerPool("127.0.0.1", server.port)
    try:
        await _calls(app, server, pool, CONCURRENT)  # warm-up: channels, caches, lazy imports
        gc.collect()
        tasks, fds = _our_tasks(), _fds()
        await _calls(app, server, pool, 3 * CONCURRENT)
        gc.collect()
        assert [r for _, r in app.outcomes] == ["caller_hangup"] * (4 * CONCURRENT)
        assert _our_tasks() == tasks
        assert _fds() == fds
        live_kinds = (
            Orchestrator,
            TelephonyGateway,
            AudioSocketConnection,
            YandexRecognitionStream,
            YandexSynthesisStream,
        )
        for kind in live_kinds:
            assert _live(kind) == 0, f"{kind.__name__} instances left after the calls"
        assert len(app.pacer) == 0 and app.calls_active == 0
    finally:
        await pool.close()
        await server.close()
        await app.close()
