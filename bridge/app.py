"""`voicebridge serve`: the ARI controller, the AudioSocket server, the shared pacer and one fresh
Orchestrator per call, wired from `Settings`.

Process-wide (built once): the dialogue map, FlowEngine, intent classifier, audio cache, gRPC
channels and the OpenAI client. Per call (built by the factories, torn down by the call): the STT
stream, the TTS manager, the LLM manager, the TelephonyGateway and the Orchestrator itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from bridge.ari_controller import AriCall, AriController, AriSettings
from bridge.audiosocket.server import AudioSocketServer
from bridge.gateway import TelephonyGateway
from bridge.pacer import Pacer
from bridge.settings import Settings
from bridge.vad import VadSettings
from orchestrator.cache.memory import InMemoryAudioCache
from orchestrator.clock import LoopClock
from orchestrator.contracts import AudioCache, LLMManager, STTStreamer, TTSManager
from orchestrator.dialogue_map.loader import load_dialogue_map
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.dialogue_map.templates import render_template
from orchestrator.domain.errors import CallSetupError, ConfigError
from orchestrator.flow_engine import MapFlowEngine
from orchestrator.intents.classifier import VectorIntentClassifier
from orchestrator.intents.ngram import CharNgramEmbedder
from orchestrator.metrics import MetricsSink, log_sink
from orchestrator.orchestrator import CallEvent, CallServices, create_orchestrator_instance

log = logging.getLogger(__name__)


def yandex_settings(s: Settings, *, iam_token: str | None = None) -> Any:
    """The SpeechKit adapters' settings from ours (`iam_token` from a refreshing provider wins)."""
    from orchestrator.adapters.speechkit import YandexSettings

    y = s.yandex
    return YandexSettings(
        api_key=y.api_key,
        iam_token=iam_token or y.iam_token,
        folder_id=y.folder_id,
        stt_endpoint=y.stt_endpoint,
        tts_endpoint=y.tts_endpoint,
        tls=y.tls,
        stt_model=y.stt_model,
        voice=y.voice,
        role=y.role,
        speed=y.speed,
    )


async def start_iam_provider(s: Settings, clock: LoopClock) -> Any:
    """With a service-account key, an started IamTokenProvider (IAM tokens live at most 12 h,
    it refreshes them); None when SpeechKit is reached with an API key or a static token."""
    y = s.yandex
    if not y.service_account_key_file:
        return None
    from orchestrator.adapters.yandex_iam import IamTokenProvider, load_service_account_key

    key = load_service_account_key(y.service_account_key_file)
    provider = IamTokenProvider(key, endpoint=y.iam_endpoint, tls=y.tls, clock=clock)
    await provider.start()
    return provider


def build_audio_cache(s: Settings) -> AudioCache:
    """Redis when `redis_url` is set, else the in-memory cache."""
    if s.redis_url:
        from orchestrator.cache.redis_cache import RedisAudioCache

        return RedisAudioCache(s.redis_url)
    return InMemoryAudioCache()


@contextlib.asynccontextmanager
async def tts_for_warming(s: Settings, *, iam_token: str | None = None) -> AsyncIterator[TTSManager]:
    """The configured TTS, connected, for warming the cache; closed (channel too) afterwards."""
    if s.providers.tts == "espeak":
        from orchestrator.adapters.tts.espeak import EspeakTTS

        tts: TTSManager = EspeakTTS()
        channel = None
    else:
        from orchestrator.adapters.speechkit import speechkit_channel
        from orchestrator.adapters.tts.yandex import YandexTTSManager

        ys = yandex_settings(s, iam_token=iam_token)
        channel = speechkit_channel(ys.tts_endpoint, tls=ys.tls)
        tts = YandexTTSManager(channel, ys)
    try:
        await tts.connect()
        yield tts
    finally:
        await tts.aclose()
        if channel is not None:
            await channel.close()


def file_metrics_sink(path: str) -> MetricsSink:
    """Append each metrics record as one JSON line to `path` (and log it)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)

    def sink(record: dict[str, Any]) -> None:
        log_sink(record)
        with target.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")

    return sink


class VoicebridgeApp:
    """The running service."""

    def __init__(
        self, settings: Settings, *, observer: Callable[[str, CallEvent], None] | None = None
    ) -> None:
        self.settings = settings
        self.pacer = Pacer()
        self.clock = LoopClock()
        self.services: CallServices | None = None
        self.audiosocket: AudioSocketServer | None = None
        self.ari: AriController | None = None
        self.calls_total = 0
        self.calls_active = 0
        # The last calls' (call id, end reason), for tests and status; bounded for months of uptime.
        self.outcomes: deque[tuple[str, str]] = deque(maxlen=1000)
        self._observer = observer
        self._ari_task: asyncio.Task[None] | None = None
        self._ami_task: asyncio.Task[None] | None = None
        self._ami_logger: Any = None
        self._stopping = asyncio.Event()
        self._iam: Any = None  # IamTokenProvider when a service-account key is configured
        self._closers: list[Callable[[], Any]] = []

    async def start(self) -> None:
        """Load the map, build the providers, warm the cache, start listening for calls."""
        s = self.settings
        self.services = await self.build_services()
        self.pacer.start()
        self.audiosocket = AudioSocketServer(
            s.audiosocket.bind_host, s.audiosocket.bind_port, pacer=self.pacer
        )
        await self.audiosocket.start()
        a = s.ari
        self.ari = AriController(
            AriSettings(
                url=a.url,
                username=a.username,
                password=a.password,
                app=a.app,
                audiosocket_host=a.audiosocket_host,
            ),
            self.audiosocket,
            self.on_call,
        )
        self._ari_task = asyncio.create_task(self.ari.run(), name="ari-controller")
        if s.ami.log_events:
            self._ami_task = asyncio.create_task(self._log_ami_events(), name="ami-event-logger")
        # Everything built so far lives as long as the process: keep it out of the collector's
        # generations so a full collection does not stall the 20 ms tick (measured: 55 ms at 650 calls).
        gc.collect()
        gc.freeze()
        log.info(
            "voicebridge started: map %s, AudioSocket on %s:%d, ARI %s app %s",
            s.dialogue_map,
            s.audiosocket.bind_host,
            self.audiosocket.port,
            a.url,
            a.app,
        )

    async def build_services(self) -> CallServices:
        """Load the map and build every process-wide service; warms the audio cache."""
        s = self.settings
        dmap = load_dialogue_map(s.dialogue_map)
        await self._start_iam()
        openai_client = None
        if s.providers.llm == "openai" or s.providers.intents == "openai":
            import openai

            openai_client = openai.AsyncOpenAI(
                base_url=s.openai.base_url,
                api_key=s.openai.api_key or "not-set",
                timeout=s.openai.timeout_s,
                max_retries=0,
            )
            self._closers.append(openai_client.close)
        if s.providers.intents == "openai":
            from orchestrator.adapters.embeddings.openai_compat import OpenAICompatEmbedder

            assert openai_client is not None
            classifier = VectorIntentClassifier(
                dmap, OpenAICompatEmbedder(openai_client, s.openai.embeddings_model)
            )
        else:
            classifier = VectorIntentClassifier(dmap, CharNgramEmbedder())
        await classifier.setup()

        cache = build_audio_cache(s)
        await self._warm(dmap, cache)

        from orchestrator.adapters.speechkit import speechkit_channel
        from orchestrator.adapters.stt.yandex import YandexSttStreamer

        ys = self._yandex()
        stt_channel = speechkit_channel(ys.stt_endpoint, tls=ys.tls)
        self._closers.append(stt_channel.close)
        clock = self.clock

        def stt_factory(call_id: str) -> STTStreamer:
            return YandexSttStreamer(stt_channel, self._yandex(), clock=clock, request_id=call_id)

        if s.providers.tts == "espeak":
            from orchestrator.adapters.tts.espeak import EspeakTTS

            def tts_factory(call_id: str) -> TTSManager:
                return EspeakTTS()
        else:
            from orchestrator.adapters.tts.yandex import YandexTTSManager

            tts_channel = speechkit_channel(ys.tts_endpoint, tls=ys.tls)
            self._closers.append(tts_channel.close)

            def tts_factory(call_id: str) -> TTSManager:
                return YandexTTSManager(tts_channel, self._yandex(), request_id=call_id)

        from orchestrator.adapters.llm.openai_compat import OpenAICompatLLMManager
        from orchestrator.adapters.llm.safety import (
            CombinedSafety,
            LocalRulesSafety,
            ModerationSafety,
            SafetyCheck,
        )

        assert openai_client is not None
        checks: list[SafetyCheck] = [LocalRulesSafety()]
        if s.openai.moderation:
            checks.append(ModerationSafety(openai_client))
        safety = CombinedSafety(checks)
        llm_settings = dmap.settings.llm

        def llm_factory(call_id: str) -> LLMManager:
            return OpenAICompatLLMManager(
                openai_client,
                model=s.openai.model,
                system_prompt=llm_settings.system_prompt,
                safety=safety,
                max_tokens=llm_settings.max_tokens,
                temperature=llm_settings.temperature,
                timeout_s=s.openai.timeout_s,
            )

        return CallServices(
            dialogue_map=dmap,
            flow_engine=MapFlowEngine(dmap),
            intent_classifier=classifier,
            audio_cache=cache,
            clock=clock,
            render=render_template,
            stt_factory=stt_factory,
            tts_factory=tts_factory,
            llm_factory=llm_factory,
            metrics_sink=file_metrics_sink(s.metrics_file) if s.metrics_file else None,
        )

    async def _start_iam(self) -> None:
        self._iam = await start_iam_provider(self.settings, self.clock)
        if self._iam is not None:
            self._closers.append(self._iam.aclose)

    def _yandex(self) -> Any:
        """SpeechKit settings with the current IAM token: each call takes the freshest one."""
        return yandex_settings(self.settings, iam_token=self._iam.token if self._iam is not None else None)

    async def _warm(self, dmap: DialogueMap, cache: AudioCache) -> None:
        """Make sure every phrase of the map is in the cache (synthesizes only what is missing)."""
        from orchestrator.cache.warm import warm_cache

        token = self._iam.token if self._iam is not None else None
        async with tts_for_warming(self.settings, iam_token=token) as tts:
            report = await warm_cache(dmap, tts, cache, progress=False)
        if getattr(report, "failed", None):
            raise ConfigError(f"{self.settings.dialogue_map}: cannot produce audio: {report}")
        log.info("audio cache ready: %s", report)

    async def on_call(self, call: AriCall) -> None:
        """One call: gateway + fresh Orchestrator; returning hangs the caller up."""
        assert self.services is not None
        self.calls_total += 1
        self.calls_active += 1
        v = self.settings.vad
        gateway = TelephonyGateway(
            call.conn,
            self.pacer,
            clock=self.clock,
            vad_settings=VadSettings(
                aggressiveness=v.aggressiveness, min_speech_ms=v.min_speech_ms, hangover_ms=v.hangover_ms
            ),
        )
        reason = "error"
        try:
            observer = None
            if self._observer is not None:
                obs = self._observer
                cid = call.call_id

                def observer(event: CallEvent) -> None:
                    obs(cid, event)

            orchestrator = await create_orchestrator_instance(call.call_id, self.services, observer=observer)
            outcome = await orchestrator.run(gateway, gateway.outbound)
            reason = outcome.reason
        except CallSetupError as exc:
            log.error("%s", exc)  # names the call
            reason = "setup_failed"
            await self._apologise(gateway)
        finally:
            # The ARI controller hangs the AudioSocket leg up itself, in the order Asterisk copes
            # with (AriController._delete_media).
            await gateway.close(hang_up=False)
            self.calls_active -= 1
            self.outcomes.append((call.call_id, reason))
            log.info("call %s ended: %s", call.call_id, reason)

    async def _log_ami_events(self) -> None:
        """Hangup causes and call events into the log; AMI being down never stops the service.

        Not cancelled mid-login by `close()` (panoramisk logs a traceback then): `close()` sets
        `_stopping` and this returns after the current attempt, bounded by the login timeout.
        """
        from bridge.ami import AmiError, AmiEventLogger, AmiSettings

        a = self.settings.ami
        delay = 1.0
        while not self._stopping.is_set():
            logger = AmiEventLogger(
                AmiSettings(host=a.host, port=a.port, username=a.username, secret=a.secret)
            )
            try:
                await logger.start()  # reconnects by itself once logged in
            except AmiError as exc:
                await logger.close()
                log.warning("AMI event log unavailable (%s); retrying in %.0f s", exc, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
                delay = min(delay * 2, 30.0)
                continue
            self._ami_logger = logger
            return

    async def _apologise(self, gateway: TelephonyGateway) -> None:
        """The call cannot be served: say the emergency phrase rather than hang up in silence."""
        assert self.services is not None
        key = self.services.dialogue_map.settings.emergency_filler_key
        try:
            async with asyncio.timeout(10):
                clip = await self.services.audio_cache.get(key)
                if clip is not None:
                    await gateway.outbound.write(clip)
                    await gateway.outbound.drain()
        except Exception as exc:  # the caller is gone, the cache is down: nothing more to do
            log.warning("call: cannot play %s before hanging up: %r", key, exc)

    async def run_until(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set or the ARI controller gives up."""
        assert self._ari_task is not None
        stopper = asyncio.create_task(stop.wait(), name="stop-signal")
        try:
            await asyncio.wait({stopper, self._ari_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            await asyncio.wait({stopper})

    async def close(self) -> None:
        """Hang up every call, stop listening, release the providers."""
        if self.ari is not None:
            await self.ari.close()
        if self._ari_task is not None:
            if not self._ari_task.done():
                self._ari_task.cancel()
            await asyncio.wait({self._ari_task})
        self._stopping.set()
        if self._ami_task is not None:
            try:
                async with asyncio.timeout(10):
                    await asyncio.wait({self._ami_task})
            except TimeoutError:
                self._ami_task.cancel()
                await asyncio.wait({self._ami_task})
        if self._ami_logger is not None:
            await self._ami_logger.close()
        if self.audiosocket is not None:
            await self.audiosocket.close()
        self.pacer.stop()
        for close in reversed(self._closers):
            try:
                result = close()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("closing a provider failed")
        self._closers.clear()
