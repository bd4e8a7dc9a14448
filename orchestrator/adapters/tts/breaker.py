"""A call's TTS behind the provider's circuit breaker (`orchestrator.breaker`).

- `connect()` (call setup): with the breaker open, returns at once: the call goes on with cached
  audio instead of waiting out a dead provider and hanging up. With it closed, the inner check is
  bounded by `probe_timeout_s`; a failure opens the breaker and the call still goes on.
- `synthesize()` / `open_stream()`: refused at once with a retryable `TTSConnectionError` while
  the breaker is open (the playlist's error path plays the emergency phrase from memory); a
  connection failure or a retryable error opens it, a success closes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from orchestrator.breaker import CircuitBreaker
from orchestrator.contracts import SynthesisStream, TTSManager
from orchestrator.domain.errors import ProviderError, TTSConnectionError
from orchestrator.domain.models import AudioChunk

__all__ = ["BreakerTTS"]


def _says_down(exc: ProviderError) -> bool:
    """A failure that tells the provider is down or unreachable, not that one text was bad."""
    return isinstance(exc, TTSConnectionError) or exc.retryable


class BreakerTTS:
    """`TTSManager` wrapping one call's manager with the process-wide breaker."""

    def __init__(self, inner: TTSManager, breaker: CircuitBreaker) -> None:
        self._inner = inner
        self._breaker = breaker

    @property
    def inner(self) -> TTSManager:
        """The wrapped manager."""
        return self._inner

    def _refused(self) -> TTSConnectionError:
        return TTSConnectionError(
            f"{self._breaker.name}: circuit open (provider down), not tried", provider="tts", retryable=True
        )

    async def connect(self) -> None:
        """Check the provider, bounded; never raises for the provider being down (see module)."""
        breaker = self._breaker
        if not breaker.allow():
            return
        bound = breaker.settings.probe_timeout_s
        try:
            async with asyncio.timeout(bound):
                await self._inner.connect()
        except TimeoutError:
            breaker.failure(TTSConnectionError(f"not reachable within {bound:.1f} s", provider="tts"))
        except ProviderError as exc:
            breaker.failure(exc)
        else:
            breaker.success()

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """The inner synthesis; `TTSConnectionError` at once while the breaker is open."""
        if not self._breaker.allow():
            raise self._refused()
        try:
            async for chunk in self._inner.synthesize(text):
                yield chunk
        except ProviderError as exc:
            if _says_down(exc):
                self._breaker.failure(exc)
            raise
        self._breaker.success()

    async def open_stream(self) -> SynthesisStream:
        """The inner stream; `TTSConnectionError` at once while the breaker is open."""
        if not self._breaker.allow():
            raise self._refused()
        try:
            stream = await self._inner.open_stream()
        except ProviderError as exc:
            if _says_down(exc):
                self._breaker.failure(exc)
            raise
        return stream

    async def aclose(self) -> None:
        """Close the inner manager."""
        await self._inner.aclose()
