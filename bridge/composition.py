"""The composition root: every provider, cache and per-call factory, built from `Settings`.

Process-wide (built once by `Composition.build_services()`): for each dialogue map (the default
one and each `[numbers]` one) its FlowEngine, intent classifier and audio cache (warmed); shared
by all maps: the SpeechKit gRPC channels, the OpenAI client,
the safety checks and, with a service-account key, the IAM token provider. Per call (the
factories in `CallServices`, called with the call id): the STT streamer, the TTS manager and the
LLM manager. Each component's constructor takes its own section of the settings (its pydantic
model) as is; nothing is copied field by field here.

The providers' modules are imported when the settings choose them: a service on espeak-ng never
loads the SpeechKit TTS stubs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.settings import Settings
from orchestrator.breaker import CircuitBreaker, Probe
from orchestrator.cache.memory import InMemoryAudioCache
from orchestrator.contracts import (
    AudioCache,
    Clock,
    IntentStep,
    LLMManager,
    STTStreamer,
    TTSManager,
)
from orchestrator.dialogue_map.loader import load_dialogue_map
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.dialogue_map.templates import render_template
from orchestrator.domain.errors import ConfigError
from orchestrator.factory import CallServices
from orchestrator.flow_engine import MapFlowEngine
from orchestrator.metrics import TRANSCRIPT_FIELDS, MetricsRecord, MetricsSink, log_sink

if TYPE_CHECKING:
    import grpc
    import openai

    from orchestrator.adapters.llm.safety import SafetyCheck
    from orchestrator.adapters.speechkit import YandexSettings
    from orchestrator.adapters.tts.espeak_settings import EspeakSettings
    from orchestrator.adapters.yandex_iam import IamTokenProvider
    from orchestrator.cache.resilient import ResilientAudioCache
    from orchestrator.intents.classifier import VectorIntentClassifier

__all__ = [
    "Composition",
    "build_audio_cache",
    "FileMetricsSink",
    "logged_metrics_sink",
    "start_iam_provider",
    "tts_for_warming",
]

log = logging.getLogger(__name__)


async def start_iam_provider(yandex: YandexSettings, clock: Clock) -> IamTokenProvider | None:
    """With `yandex.service_account_key_file`, a started `IamTokenProvider` (IAM tokens live at
    most 12 h; it refreshes them); None when SpeechKit is reached with an API key or a static
    token. Raises `ConfigError` for an unreadable key file, `ProviderError` if no first token."""
    if not yandex.service_account_key_file:
        return None
    from orchestrator.adapters.yandex_iam import IamTokenProvider, load_service_account_key

    provider = IamTokenProvider(
        load_service_account_key(yandex.service_account_key_file), yandex, clock=clock
    )
    await provider.start()
    return provider


def build_audio_cache(s: Settings) -> AudioCache:
    """Redis when `[redis] url` (or the top-level `redis_url`) is set, else the in-memory cache."""
    if s.redis.url:
        from orchestrator.cache.redis_cache import RedisAudioCache

        return RedisAudioCache(s.redis)
    return InMemoryAudioCache()


def _espeak(espeak: EspeakSettings) -> TTSManager:
    from orchestrator.adapters.tts.espeak import EspeakTTS

    return EspeakTTS(espeak)


@contextlib.asynccontextmanager
async def tts_for_warming(s: Settings, *, iam_token: str | None = None) -> AsyncIterator[TTSManager]:
    """The configured TTS, connected, for warming the cache; closed (channel too) afterwards."""
    channel: grpc.aio.Channel | None = None
    if s.providers.tts == "espeak":
        tts = _espeak(s.espeak)
    else:
        from orchestrator.adapters.speechkit import speechkit_channel
        from orchestrator.adapters.tts.yandex import YandexTTSManager

        channel = speechkit_channel(s.yandex.tts_endpoint, tls=s.yandex.tls)
        tts = YandexTTSManager(channel, s.yandex, iam_token=iam_token)
    try:
        await tts.connect()
        yield tts
    finally:
        await tts.aclose()
        if channel is not None:
            await channel.close()


def logged_metrics_sink(*, transcripts: bool) -> MetricsSink:
    """Each metrics record on the log (`orchestrator.metrics.log_sink`); unless `transcripts`,
    what the caller said (`TRANSCRIPT_FIELDS`) is left out of the INFO line and logged at DEBUG."""
    if transcripts:
        return log_sink

    def sink(record: MetricsRecord) -> None:
        said = {k: record[k] for k in TRANSCRIPT_FIELDS if record.get(k) is not None}
        if not said:
            log_sink(record)
            return
        log_sink({k: v for k, v in record.items() if k not in said})
        log.debug("turn %s transcript: %s", record.get("turn_index"), said)

    return sink


class FileMetricsSink:
    """A `MetricsSink` that appends each record as one JSON line to `path` (created 0600: it
    holds what callers said) and hands it to `log_to`.

    One handle, opened once and line-buffered (each record reaches the file as it is written,
    without an open/close per record on the event loop); `close()` closes it. Idempotent.
    """

    def __init__(self, path: str, *, log_to: MetricsSink = log_sink) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8", buffering=1)
        if target.stat().st_mode & 0o077:
            log.warning("%s: readable by others (it holds transcripts); chmod 600 it", path)
        self._log_to = log_to

    def __call__(self, record: MetricsRecord) -> None:
        self._log_to(record)
        if not self._file.closed:
            self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")

    def close(self) -> None:
        """Close the file; later records only go to `log_to`."""
        self._file.close()


@dataclasses.dataclass(frozen=True, slots=True)
class _Shared:
    """What every map's calls share: the providers and their circuits."""

    client: openai.AsyncOpenAI | None
    tts_factory: Callable[[str], TTSManager]
    stt_factory: Callable[[str], STTStreamer]
    stt_breaker: CircuitBreaker
    llm_breaker: CircuitBreaker
    metrics_sink: MetricsSink


class Composition:
    """Builds the process-wide services once and owns what they opened (channels, clients, the
    IAM token provider) until `aclose()`."""

    def __init__(self, settings: Settings, *, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.iam: IamTokenProvider | None = None
        self.tts_breaker: CircuitBreaker | None = None  # built with the services
        # The services of each `[numbers]` entry (dialled number -> its map's services).
        self.by_number: dict[str, CallServices] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def iam_token(self) -> str | None:
        """The IAM token provider's current token (None without a service-account key)."""
        return self.iam.token if self.iam is not None else None

    async def build_services(self) -> CallServices:
        """Load the maps, build every process-wide service, warm the audio cache.

        Returns the services of the default map (`dialogue_map`); those of each `[numbers]` map
        are in `by_number` then (a map named twice is built once). The providers are shared by
        all maps; each map has its own flow engine, intent classifier, LLM prompt and phrases.

        Raises `ConfigError` (bad map, unusable settings, phrases that cannot be synthesized)
        or `ProviderError` (a provider unreachable at start). Call `aclose()` either way.
        """
        s = self.settings
        self.iam = await start_iam_provider(s.yandex, self.clock)
        if self.iam is not None:
            self._closers.append(self.iam.aclose)
        client = self._openai_client()
        tts_factory = self._tts_factory()
        stt_factory, stt_probe = self._stt_factory()
        shared = _Shared(
            client=client,
            tts_factory=tts_factory,
            stt_factory=stt_factory,
            stt_breaker=self._breaker("stt", stt_probe),
            llm_breaker=self._breaker("llm", self._llm_probe(client)),
            metrics_sink=self._metrics_sink(),
        )
        built: dict[str, CallServices] = {}
        for path in dict.fromkeys([s.dialogue_map, *s.numbers.values()]):
            built[path] = await self._services_for(path, shared)
        self.by_number = {number: built[path] for number, path in s.numbers.items()}
        return built[s.dialogue_map]

    async def _services_for(self, path: str, shared: _Shared) -> CallServices:
        """One map's services: loaded (a bad map raises `ConfigError` naming it), warmed."""
        s = self.settings
        dmap = load_dialogue_map(path)
        classifier = await self._classifier(dmap, shared.client)
        intent_step = self._intent_step(dmap, classifier, shared.client)
        cache = self._audio_cache(dmap, shared.tts_factory)
        await self._warm(dmap, cache, path)
        cache.start()
        log.info(
            "%s: %.1f MB of the map's phrases held in memory (bound %.0f MB + the vital ones)",
            path,
            cache.memory_bytes / 2**20,
            s.redis.memory_max_mb,
        )
        return CallServices(
            dialogue_map=dmap,
            flow_engine=MapFlowEngine(dmap),
            intent_classifier=classifier,
            audio_cache=cache,
            clock=self.clock,
            render=render_template,
            stt_factory=shared.stt_factory,
            tts_factory=shared.tts_factory,
            llm_factory=self._llm_factory(dmap, shared.client),
            metrics_sink=shared.metrics_sink,
            call=s.call,
            interruption=s.interruption,
            intent_step=intent_step,
            stt_breaker=shared.stt_breaker,
            llm_breaker=shared.llm_breaker,
        )

    def _audio_cache(
        self, dmap: DialogueMap, tts_factory: Callable[[str], TTSManager]
    ) -> ResilientAudioCache:
        """The map's phrases in memory, Redis when configured, live TTS behind both."""
        from orchestrator.cache.resilient import ResilientAudioCache
        from orchestrator.cache.warm import live_synthesis

        s = self.settings
        redis = None
        if s.redis.url:
            from orchestrator.cache.redis_cache import RedisAudioCache

            redis = RedisAudioCache(s.redis)
        cache = ResilientAudioCache.for_map(
            dmap, settings=s.redis, clock=self.clock, redis=redis, synthesize=live_synthesis(tts_factory)
        )
        self._closers.append(cache.aclose)
        return cache

    def _breaker(self, name: str, probe: Probe | None) -> CircuitBreaker:
        breaker = CircuitBreaker(
            name,
            self.settings.breaker,
            clock=self.clock,
            probe=probe,
            cancel_bound_s=self.settings.call.cancel_bound_s,
        )
        self._closers.append(breaker.aclose)
        return breaker

    def _llm_probe(self, client: openai.AsyncOpenAI | None) -> Probe | None:
        """Listing the models (costs no tokens). Any HTTP answer counts, even an error status: a
        server without `/models` is up all the same; only no answer (refused, timed out) fails."""
        if client is None:
            return None
        import openai

        timeout = self.settings.breaker.probe_timeout_s

        async def probe() -> None:
            try:
                await client.with_options(timeout=timeout, max_retries=0).models.list()
            except openai.APIStatusError:
                return  # it answered

        return probe

    def _metrics_sink(self) -> MetricsSink:
        s = self.settings
        logged = logged_metrics_sink(transcripts=s.log.transcripts)
        if not s.metrics_file:
            return logged
        sink = FileMetricsSink(s.metrics_file, log_to=logged)

        async def close() -> None:
            sink.close()

        self._closers.append(close)
        return sink

    def _openai_client(self) -> openai.AsyncOpenAI | None:
        p = self.settings.providers
        if p.llm != "openai" and p.intents != "openai":
            return None
        from orchestrator.adapters.openai_settings import openai_client

        client = openai_client(self.settings.openai)
        self._closers.append(client.close)
        return client

    async def _classifier(
        self, dmap: DialogueMap, client: openai.AsyncOpenAI | None
    ) -> VectorIntentClassifier:
        from orchestrator.intents.classifier import VectorIntentClassifier

        if self.settings.providers.intents == "openai":
            from orchestrator.adapters.embeddings.openai_compat import OpenAICompatEmbedder

            assert client is not None
            classifier = VectorIntentClassifier(dmap, OpenAICompatEmbedder(client, self.settings.openai))
        else:
            from orchestrator.intents.ngram import CharNgramEmbedder

            classifier = VectorIntentClassifier(dmap, CharNgramEmbedder())
        await classifier.setup()
        return classifier

    def _intent_step(
        self, dmap: DialogueMap, classifier: VectorIntentClassifier, client: openai.AsyncOpenAI | None
    ) -> IntentStep:
        """The constrained step for unsure turns: the configured chat model, else a null arbiter
        (the step never runs: unsure turns go to the LLM answer as before)."""
        from orchestrator.contracts import IntentArbiter
        from orchestrator.intents.arbiter import ArbiterStep, NullArbiter

        o = self.settings.openai
        arbiter: IntentArbiter = NullArbiter()
        if o.intent_arbiter and client is not None and self.settings.providers.llm == "openai":
            from orchestrator.adapters.llm.arbiter import OpenAICompatArbiter

            arbiter = OpenAICompatArbiter(
                client, model=o.intent_arbiter_model or o.model, response_format=o.intent_arbiter_format
            )
        log.info("intent step: arbiter %s", arbiter.name)
        return ArbiterStep(dmap, classifier, arbiter, clock=self.clock)

    async def _warm(self, dmap: DialogueMap, cache: AudioCache, path: str) -> None:
        """Make sure every phrase of the map is in the cache (synthesizes only what is missing)."""
        from orchestrator.cache.warm import warm_cache

        async with tts_for_warming(self.settings, iam_token=self.iam_token()) as tts:
            report = await warm_cache(dmap, tts, cache, progress=False)
        if report.failed:
            raise ConfigError(f"{path}: cannot produce audio: {report.summary()}")
        log.info("audio cache ready for %s: %s", path, report.summary())

    def _channel(self, endpoint: str) -> grpc.aio.Channel:
        from orchestrator.adapters.speechkit import speechkit_channel

        channel = speechkit_channel(endpoint, tls=self.settings.yandex.tls)
        self._closers.append(channel.close)
        return channel

    def _stt_factory(self) -> tuple[Callable[[str], STTStreamer], Probe]:
        """The per-call STT streamer factory, and the STT circuit's probe (one empty recognition)."""
        from orchestrator.adapters.stt.yandex import YandexSttStreamer, probe_recognizer

        yandex, clock = self.settings.yandex, self.clock
        channel = self._channel(yandex.stt_endpoint)

        async def stt_probe() -> None:
            metadata = yandex.metadata("voicebridge-breaker-probe", iam_token=self.iam_token())
            await probe_recognizer(channel, yandex, metadata)

        def stt_factory(call_id: str) -> STTStreamer:
            # Each call takes the freshest IAM token.
            return YandexSttStreamer(
                channel, yandex, clock=clock, request_id=call_id, iam_token=self.iam_token()
            )

        return stt_factory, stt_probe

    def _tts_factory(self) -> Callable[[str], TTSManager]:
        """Each call's TTS behind the provider's circuit breaker (probed with a fresh manager)."""
        from orchestrator.adapters.tts.breaker import BreakerTTS

        inner = self._raw_tts_factory()

        async def probe() -> None:
            tts = inner("tts-probe")
            try:
                await tts.connect()
            finally:
                await tts.aclose()

        breaker = self._breaker(f"TTS ({self.settings.providers.tts})", probe)
        self.tts_breaker = breaker
        return lambda call_id: BreakerTTS(inner(call_id), breaker)

    def _raw_tts_factory(self) -> Callable[[str], TTSManager]:
        if self.settings.providers.tts == "espeak":
            espeak = self.settings.espeak
            return lambda _call_id: _espeak(espeak)
        from orchestrator.adapters.tts.yandex import YandexTTSManager

        yandex = self.settings.yandex
        channel = self._channel(yandex.tts_endpoint)

        def tts_factory(call_id: str) -> TTSManager:
            return YandexTTSManager(channel, yandex, request_id=call_id, iam_token=self.iam_token())

        return tts_factory

    def _llm_factory(
        self, dmap: DialogueMap, client: openai.AsyncOpenAI | None
    ) -> Callable[[str], LLMManager]:
        from orchestrator.adapters.llm.openai_compat import OpenAICompatLLMManager
        from orchestrator.adapters.llm.safety import CombinedSafety, LocalRulesSafety, ModerationSafety

        assert client is not None  # providers.llm is "openai"
        o = self.settings.openai
        checks: list[SafetyCheck] = [LocalRulesSafety()]
        if o.moderation:
            checks.append(ModerationSafety(client, o))
        safety = CombinedSafety(checks)
        llm = dmap.settings.llm  # the prompt and sampling belong to the map

        def llm_factory(call_id: str) -> LLMManager:
            return OpenAICompatLLMManager(client, o, llm, safety=safety)

        return llm_factory

    async def aclose(self) -> None:
        """Release what `build_services()` opened, newest first; failures are logged. Idempotent."""
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            try:
                await close()
            except Exception:
                log.exception("closing a provider failed")
        self.iam = None
