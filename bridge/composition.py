"""The composition root: every provider, cache and per-call factory, built from `Settings`.

Process-wide (built once by `Composition.build_services()`): for each dialogue map (the default
one and each `[numbers]` one) its FlowEngine, intent classifier, LLM factory (the map's prompt,
the shared client and safety checks) and audio cache (warmed); shared by all maps, from
`bridge.providers.ProviderWiring` (the base of `Composition`): the SpeechKit gRPC channels, the
OpenAI client, the providers' circuits, the metrics sink and, with a service-account key, the IAM
token provider. Per call (the factories in `CallServices`, called with the call id): the STT
streamer, the TTS manager and the LLM manager. Each component's constructor takes its own section
of the settings (its pydantic model) as is; nothing is copied field by field here.

The providers' modules are imported when the settings choose them: a service on espeak-ng never
loads the SpeechKit TTS stubs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from bridge.providers import ProviderWiring, start_iam_provider, tts_for_warming
from bridge.settings import Settings
from orchestrator.breaker import CircuitBreaker
from orchestrator.contracts import AudioCache, Clock, IntentStep, LLMManager, STTStreamer, TTSManager
from orchestrator.dialogue_map.loader import load_dialogue_map
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.dialogue_map.templates import render_template
from orchestrator.domain.errors import ConfigError
from orchestrator.factory import CallServices
from orchestrator.flow_engine import MapFlowEngine
from orchestrator.metrics import MetricsSink

if TYPE_CHECKING:
    import openai

    from orchestrator.adapters.llm.safety import SafetyCheck
    from orchestrator.cache.resilient import ResilientAudioCache
    from orchestrator.intents.classifier import VectorIntentClassifier

__all__ = ["Composition"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class _Shared:
    """What every map's calls share: the providers and their circuits."""

    client: openai.AsyncOpenAI | None
    tts_factory: Callable[[str], TTSManager]
    stt_factory: Callable[[str], STTStreamer]
    stt_breaker: CircuitBreaker
    llm_breaker: CircuitBreaker
    metrics_sink: MetricsSink


class Composition(ProviderWiring):
    """Builds the process-wide services once and owns what they opened (channels, clients, the
    IAM token provider: `ProviderWiring`) until `aclose()`."""

    def __init__(self, settings: Settings, *, clock: Clock) -> None:
        super().__init__(settings, clock=clock)
        # The services of each `[numbers]` entry (dialled number -> its map's services).
        self.by_number: dict[str, CallServices] = {}

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
