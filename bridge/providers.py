"""The providers' wiring: the SpeechKit gRPC channels, the OpenAI client, the IAM token provider,
the providers' circuit breakers and the per-call STT and TTS factories, built from `Settings`.

`ProviderWiring` owns what it opened (channels, clients, the IAM token provider, the breakers'
probes) until `aclose()`; `bridge.composition.Composition` derives from it and adds each dialogue
map's services. The providers' modules are imported when the settings choose them: a service on
espeak-ng never loads the SpeechKit TTS stubs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from bridge.metrics_sinks import FileMetricsSink, logged_metrics_sink
from bridge.settings import Settings
from orchestrator.breaker import CircuitBreaker, Probe
from orchestrator.cache.memory import InMemoryAudioCache
from orchestrator.contracts import AudioCache, Clock, STTStreamer, TTSManager
from orchestrator.metrics import MetricsSink

if TYPE_CHECKING:
    import grpc
    import openai

    from orchestrator.adapters.speechkit import YandexSettings
    from orchestrator.adapters.tts.espeak_settings import EspeakSettings
    from orchestrator.adapters.yandex_iam import IamTokenProvider

__all__ = ["ProviderWiring", "build_audio_cache", "espeak_tts", "start_iam_provider", "tts_for_warming"]

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


def espeak_tts(espeak: EspeakSettings) -> TTSManager:
    from orchestrator.adapters.tts.espeak import EspeakTTS

    return EspeakTTS(espeak)


@contextlib.asynccontextmanager
async def tts_for_warming(s: Settings, *, iam_token: str | None = None) -> AsyncIterator[TTSManager]:
    """The configured TTS, connected, for warming the cache; closed (channel too) afterwards."""
    channel: grpc.aio.Channel | None = None
    if s.providers.tts == "espeak":
        tts = espeak_tts(s.espeak)
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


class ProviderWiring:
    """The process-wide providers, built once (`Composition.build_services()` calls the builders),
    and what they opened, closed by `aclose()`."""

    def __init__(self, settings: Settings, *, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.iam: IamTokenProvider | None = None
        self.tts_breaker: CircuitBreaker | None = None  # built with the services
        self._closers: list[Callable[[], Awaitable[None]]] = []
        # What `warm_connections()` opens: (what, connect), one per client or channel made.
        self._connections: list[tuple[str, Callable[[], Awaitable[None]]]] = []

    def iam_token(self) -> str | None:
        """The IAM token provider's current token (None without a service-account key)."""
        return self.iam.token if self.iam is not None else None

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
        probe = self._llm_probe(client)
        assert probe is not None

        async def connect() -> None:
            # The SDK imports its chat and moderation resources and the stream parser on first use.
            _ = client.chat.completions, client.moderations
            import openai.lib.streaming.chat  # noqa: F401

            await probe()  # the pool's connection (and the HTTP stack's imports) made now

        self._connections.append((f"LLM {self.settings.openai.base_url}", connect))
        return client

    def _channel(self, endpoint: str) -> grpc.aio.Channel:
        from orchestrator.adapters.speechkit import speechkit_channel

        channel = speechkit_channel(endpoint, tls=self.settings.yandex.tls)
        self._closers.append(channel.close)
        self._connections.append((f"SpeechKit {endpoint}", channel.channel_ready))
        return channel

    async def warm_connections(self) -> None:
        """Open the providers' connections (the gRPC channels, the LLM client's HTTP connection)
        and make their lazy imports now, so the first call does not wait for them: over the
        stand-ins the process's first LLM answer came 43 ms later than the next ones'; a TLS
        handshake to a remote provider costs more. Each waits at most `[breaker] probe_timeout_s`.

        Never raises: what does not answer is logged at WARNING and the first call that needs it
        connects as before.
        """
        bound = self.settings.breaker.probe_timeout_s

        async def one(what: str, connect: Callable[[], Awaitable[None]]) -> None:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(bound):
                    await connect()
            except Exception as exc:  # (a timeout too) the first call will try again
                log.warning(
                    "%s: not connected at start (%r); the first call that needs it connects", what, exc
                )
                return
            log.info("%s: connected at start in %.0f ms", what, (time.perf_counter() - started) * 1000)

        await asyncio.gather(*(one(what, connect) for what, connect in self._connections))

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
            return lambda _call_id: espeak_tts(espeak)
        from orchestrator.adapters.tts.yandex import YandexTTSManager

        yandex = self.settings.yandex
        channel = self._channel(yandex.tts_endpoint)

        def tts_factory(call_id: str) -> TTSManager:
            return YandexTTSManager(channel, yandex, request_id=call_id, iam_token=self.iam_token())

        return tts_factory

    async def aclose(self) -> None:
        """Release what `build_services()` opened, newest first; failures are logged. Idempotent."""
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            try:
                await close()
            except Exception:
                log.exception("closing a provider failed")
        self.iam = None
