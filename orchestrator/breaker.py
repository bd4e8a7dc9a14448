"""A circuit breaker per provider, so new calls do not each wait out a dead provider.

States:
- CLOSED: calls use the provider. A call reports what it saw: `failure(why)` (an STT stall, an LLM
  error) and `success()` (a result came). `failure_threshold` failures in a row open the circuit.
- OPEN: `is_open` is true; calls fail fast (the caller hears the emergency phrase at once instead
  of waiting out the provider's timeouts). One task, "<name>-breaker:probe", runs the provider's
  cheap `probe()` every `probe_every_s`, each bounded by `probe_timeout_s`; the first probe that
  returns closes the circuit, so it closes within `probe_every_s` plus one probe of the provider
  coming back. A `success()` reported by a call closes it too. Without a probe the circuit
  half-opens after `probe_every_s` (`is_open` false again; the next call is the probe, and its
  failure reopens it).

Opening and closing are logged once each (WARNING / INFO) with the reason and the time it was
open. `aclose()` ends the probe task (bounded); the breaker can be used again after it.

`GuardedLLM` puts an `LLMManager` behind a breaker: an open circuit fails the answer at its first
step with `LLMError` (no request goes out), an `LLMError` from the answer is a failure, a first
chunk is a success.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Annotated

import pydantic.dataclasses
from pydantic import ConfigDict, Field

from orchestrator.contracts import AnswerStream, Clock, LLMManager
from orchestrator.domain.errors import LLMError
from orchestrator.domain.models import LLMStreamChunk, SessionState
from orchestrator.tasks import TaskOwner

__all__ = ["BreakerSettings", "CircuitBreaker", "GuardedLLM", "Probe"]

log = logging.getLogger(__name__)

# A cheap check that the provider answers; returns when it does, raises (anything) when not.
Probe = Callable[[], Awaitable[None]]


@pydantic.dataclasses.dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class BreakerSettings:
    """Every provider's circuit breaker (section `[breaker]`); times in seconds."""

    # Call-level failures in a row that open a provider's circuit (an STT stall is already
    # `[call] stt_stall_s` of the caller's speech unheard, and the probe re-checks it).
    failure_threshold: Annotated[int, Field(ge=1, le=100)] = 1
    # While open: how often the provider is probed (the recovery time is about this plus a probe).
    probe_every_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    # Bound on one probe (a frozen provider never answers it).
    probe_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0


class CircuitBreaker:
    """One provider's circuit (see the module docstring)."""

    def __init__(
        self,
        name: str,
        settings: BreakerSettings,
        *,
        clock: Clock,
        probe: Probe | None = None,
        cancel_bound_s: float = 5.0,
    ) -> None:
        """`name`: the provider ("stt", "llm"), for logs and the probe task's name."""
        self.name = name
        self._settings = settings
        self._clock = clock
        self._probe = probe
        self._failures = 0  # in a row, while closed
        self._opened_at: float | None = None
        self._why = ""
        self._tasks = TaskOwner(f"{name}-breaker", cancel_bound_s=cancel_bound_s)
        self._prober: asyncio.Task[None] | None = None
        self.opened = 0  # times the circuit opened (tests, metrics)

    @property
    def is_open(self) -> bool:
        """Whether calls should not use the provider now."""
        return self._opened_at is not None

    @property
    def open_for_s(self) -> float:
        """How long the circuit has been open (0 when closed)."""
        return 0.0 if self._opened_at is None else self._clock.now() - self._opened_at

    def failure(self, why: str) -> None:
        """A call saw the provider fail; may open the circuit. Needs a running loop."""
        if self.is_open:
            return
        self._failures += 1
        if self._failures < self._settings.failure_threshold:
            return
        self._opened_at = self._clock.now()
        self._why = why
        self.opened += 1
        log.warning("%s circuit open: %s; new calls fail fast until it answers again", self.name, why)
        if self._prober is None or self._prober.done():
            self._prober = self._tasks.spawn(self._probe_until_closed(), "probe")

    def success(self) -> None:
        """A call got a result from the provider: it works (closes an open circuit)."""
        self._failures = 0
        if self._opened_at is None:
            return
        log.info("%s circuit closed after %.1f s (it had opened: %s)", self.name, self.open_for_s, self._why)
        self._opened_at = None

    async def _probe_until_closed(self) -> None:
        s = self._settings
        while self.is_open:
            await asyncio.sleep(s.probe_every_s)
            if not self.is_open:
                return
            if self._probe is None:
                self.success()  # half-open: the next call tries the provider
                return
            try:
                async with asyncio.timeout(s.probe_timeout_s):
                    await self._probe()
            except Exception as exc:  # noqa: BLE001 - any probe failure means: still down
                log.debug("%s probe failed: %r", self.name, exc)
                continue
            self.success()

    async def aclose(self) -> None:
        """Stop probing (bounded). Idempotent."""
        await self._tasks.aclose()
        self._prober = None


class GuardedLLM:
    """`LLMManager` behind a `CircuitBreaker` (see the module docstring)."""

    def __init__(self, inner: LLMManager, breaker: CircuitBreaker) -> None:
        self._inner = inner
        self._breaker = breaker

    @property
    def model_name(self) -> str:
        """The wrapped manager's model."""
        return self._inner.model_name

    def process_user_turn(self, text: str, session: SessionState, *, attempt: int = 0) -> AnswerStream:
        """The wrapped manager's answer, failing at once with `LLMError` while the circuit is open."""
        return self._answer(text, session, attempt)

    async def _answer(
        self, text: str, session: SessionState, attempt: int
    ) -> AsyncGenerator[LLMStreamChunk, None]:
        breaker = self._breaker
        if breaker.is_open:
            raise LLMError(f"circuit open for {breaker.open_for_s:.1f} s: not asked", provider=breaker.name)
        stream = self._inner.process_user_turn(text, session, attempt=attempt)
        first = True
        try:
            async for chunk in stream:
                if first:
                    breaker.success()
                    first = False
                yield chunk
        except LLMError as exc:
            breaker.failure(str(exc))
            raise
        finally:
            await stream.aclose()

    async def shutdown(self) -> None:
        """Shut the wrapped manager down."""
        await self._inner.shutdown()
