"""The provider circuit breaker and the TTS behind it, on virtual time (no wall clock)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from orchestrator.adapters.tts.breaker import BreakerTTS
from orchestrator.breaker import BreakerSettings, CircuitBreaker
from orchestrator.clock import LoopClock
from orchestrator.contracts import SynthesisStream
from orchestrator.domain.errors import TTSConnectionError, TTSError
from orchestrator.domain.models import AudioChunk
from testkit.virtual_time import run_virtual

SETTINGS = BreakerSettings(failure_threshold=1, probe_every_s=0.25, probe_timeout_s=1.0)


class Provider:
    """A provider that is up or down; `connect()` hangs while down, as gRPC's channel_ready does."""

    def __init__(self) -> None:
        self.up = True
        self.connects = 0
        self.syntheses = 0

    async def connect(self) -> None:
        self.connects += 1
        if not self.up:
            await asyncio.sleep(3600)

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        self.syntheses += 1
        if not self.up:
            raise TTSConnectionError("unavailable", provider="tts", retryable=True)
        yield AudioChunk(b"\x01\x00" * 160)

    async def open_stream(self) -> SynthesisStream:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def make(provider: Provider, settings: BreakerSettings = SETTINGS) -> CircuitBreaker:
    async def probe() -> None:
        await provider.connect()

    return CircuitBreaker("TTS (test)", settings, clock=LoopClock(), probe=probe)


def test_a_dead_provider_costs_one_bounded_wait_then_calls_are_refused_at_once() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        provider = Provider()
        breaker = make(provider)
        provider.up = False
        t0 = loop.time()
        await BreakerTTS(provider, breaker).connect()  # does not raise: the call goes on
        assert loop.time() - t0 == pytest.approx(SETTINGS.probe_timeout_s)
        assert breaker.state == "open"
        t1 = loop.time()
        for _ in range(5):  # new calls: no wait at all
            await BreakerTTS(provider, breaker).connect()
        assert loop.time() == t1
        with pytest.raises(TTSConnectionError, match="circuit open"):
            async for _ in BreakerTTS(provider, breaker).synthesize("текст"):
                pass
        assert provider.syntheses == 0 and breaker.refused == 6
        await breaker.aclose()

    run_virtual(main)


def test_probes_close_the_breaker_within_one_probe_interval_of_recovery() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        provider = Provider()
        breaker = make(provider)
        breaker.failure(TTSConnectionError("down", provider="tts"))
        provider.up = False
        await asyncio.sleep(10)  # probes keep failing, bounded each
        assert breaker.state == "open"
        provider.up = True
        back = loop.time()
        await asyncio.wait_for(breaker.wait_state("closed"), 5)
        assert loop.time() - back <= SETTINGS.probe_every_s + SETTINGS.probe_timeout_s
        chunks = [c async for c in BreakerTTS(provider, breaker).synthesize("текст")]
        assert len(chunks) == 1
        await breaker.aclose()

    run_virtual(main)


def test_threshold_and_which_failures_count() -> None:
    async def main() -> None:
        provider = Provider()
        breaker = make(provider, BreakerSettings(failure_threshold=2))

        class BadText(Provider):
            async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
                raise TTSError("text too long", provider="tts", retryable=False)
                yield AudioChunk(b"")

        for _ in range(3):  # a bad text says nothing about the provider
            with pytest.raises(TTSError):
                async for _ in BreakerTTS(BadText(), breaker).synthesize("x"):
                    pass
        assert breaker.state == "closed"
        provider.up = False
        for _ in range(2):
            with pytest.raises(TTSConnectionError, match="unavailable"):
                async for _ in BreakerTTS(provider, breaker).synthesize("x"):
                    pass
        assert breaker.state == "open" and breaker.openings == 1
        provider.up = True
        breaker.success()  # a call that got through (e.g. a stream opened before) closes it too
        assert breaker.state == "closed"
        await breaker.aclose()

    run_virtual(main)
