"""A circuit breaker per provider (TTS, STT, LLM), so new calls do not each wait out a dead provider.

States:
- closed: calls use the provider and report what they saw: `failure(why)` (a connection that
  cannot be made, an STT stall, an LLM error) and `success()` (a result came).
  `failure_threshold` failures in a row open the circuit.
- open: `allow()` is false (counted in `refused`) and `is_open` true; calls fail fast (cached
  audio, the emergency phrase) instead of waiting out the provider's timeouts. One owned task,
  "<name>-breaker:probe", runs the provider's cheap `probe()` every `probe_every_s`, each bounded
  by `probe_timeout_s`; the first probe that returns closes the circuit, so it closes within
  `probe_every_s` plus one probe of the provider coming back (half-open is this probe: no call
  acts as the probe, so none waits on a dead provider). A `success()` reported by a call closes it
  too. Without a probe the circuit half-opens after `probe_every_s`: the next call tries.

Opening and closing are logged once each (WARNING / INFO) with the reason and how long it was
open. Times come from the injected clock; the probe sleeps on the event loop, so a virtual-time
loop drives it too. `aclose()` ends the probe task (bounded).

Small and ours rather than `aiobreaker`/`pybreaker`/`purgatory`: none takes an injected clock
(they read the wall clock), and none probes in the background.

`GuardedLLM` puts an `LLMManager` behind a breaker: an open circuit fails the answer at its first
step with `LLMError` (no request goes out; counted in `refused`), a retryable `LLMError` from the
answer is a failure (a non-retryable one, e.g. HTTP 400 or 401, is this request's or this key's
fault, not the server being down), a first chunk is a success.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Annotated, Literal

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


@pydantic.dataclasses.dataclass(
    frozen=True, slots=True, config=ConfigDict(extra="forbid", allow_inf_nan=False)
)
class BreakerSettings:
    """Section `[breaker]`: every provider's circuit breaker; times in seconds."""

    # Failures in a row that open a provider's circuit (an STT stall is already `[call]
    # stt_stall_s` of the caller's speech unheard, and the probe re-checks it).
    failure_threshold: Annotated[int, Field(ge=1, le=100)] = 1
    # While open, how often the provider is probed: recovery is seen within this (plus the probe
    # itself) of the provider coming back.
    probe_every_s: Annotated[float, Field(gt=0, le=60)] = 0.25
    # Bound on one probe (a frozen provider never answers it), and on a call's own TTS connection
    # check while the circuit is closed: the most a call waits at setup for a provider that just died.
    probe_timeout_s: Annotated[float, Field(gt=0, le=60)] = 1.0


class CircuitBreaker:
    """One provider's circuit (see the module docstring). `aclose()` stops the probe task."""

    def __init__(
        self,
        name: str,
        settings: BreakerSettings,
        *,
        clock: Clock,
        probe: Probe | None = None,
        cancel_bound_s: float | None = None,
    ) -> None:
        """`name`: the provider ("tts", "stt", "llm"), for logs and the probe task's name."""
        self.name = name
        self._settings = settings
        self._clock = clock
        self._probe = probe
        self._failures = 0  # in a row, while closed
        self._opened_at: float | None = None
        self._why = ""
        self.closed_at = 0.0  # clock time of the last closing
        self.openings = 0  # times the circuit opened (tests, metrics)
        self.refused = 0  # operations refused while open
        bound = settings.probe_timeout_s + 1 if cancel_bound_s is None else cancel_bound_s
        self._tasks = TaskOwner(f"{name}-breaker", cancel_bound_s=bound)
        self._prober: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def settings(self) -> BreakerSettings:
        """The bounds this breaker runs with."""
        return self._settings

    @property
    def is_open(self) -> bool:
        """Whether calls should not use the provider now."""
        return self._opened_at is not None

    @property
    def state(self) -> Literal["closed", "open"]:
        """ "closed" (calls use the provider) or "open" (refused; probing)."""
        return "open" if self.is_open else "closed"

    @property
    def open_for_s(self) -> float:
        """How long the circuit has been open (0 when closed)."""
        return 0.0 if self._opened_at is None else self._clock.now() - self._opened_at

    def allow(self) -> bool:
        """Whether an operation may use the provider now; counts a refusal when not."""
        if self._opened_at is None:
            return True
        self.refused += 1
        return False

    def failure(self, why: BaseException | str) -> None:
        """A call saw the provider fail (only failures that say it is down count); may open it."""
        if self.is_open:
            return
        self._failures += 1
        if self._failures < self._settings.failure_threshold:
            return
        self._opened_at = self._clock.now()
        self._why = str(why)
        self.openings += 1
        log.warning(
            "%s circuit open (%s): new calls fail fast until it answers; probing every %.2f s",
            self.name,
            self._why,
            self._settings.probe_every_s,
        )
        self._changed.set()
        if self._prober is None or self._prober.done():
            with contextlib.suppress(RuntimeError):  # the owner is closed: the service is stopping
                # A fresh context: the probe serves the service, not the call whose failure
                # opened the circuit (its log lines must not carry that call's trace id).
                probe = self._probe_until_closed()
                self._prober = self._tasks.spawn(probe, "probe", context=contextvars.Context())

    def success(self) -> None:
        """A call got a result from the provider: failures forgotten, an open circuit closed."""
        self._failures = 0
        if self._opened_at is None:
            return
        log.info("%s circuit closed after %.2f s (it had opened: %s)", self.name, self.open_for_s, self._why)
        self._opened_at = None
        self.closed_at = self._clock.now()
        self._changed.set()

    async def wait_state(self, state: Literal["closed", "open"]) -> None:
        """Return once the circuit is in `state` (tests, tools; bound it)."""
        while self.state != state:
            self._changed.clear()
            await self._changed.wait()

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
            except Exception as exc:  # any probe failure means: still down
                log.debug("%s probe failed: %r", self.name, exc)
                continue
            self.success()

    async def aclose(self) -> None:
        """Stop probing (bounded). Idempotent; no probe starts after it."""
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
        if not breaker.allow():  # counted in `refused`
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
            if exc.retryable:  # a 400 (context too long) or 401 (bad key) says nothing of the server
                breaker.failure(exc)
            raise
        finally:
            await stream.aclose()

    async def shutdown(self) -> None:
        """Shut the wrapped manager down."""
        await self._inner.shutdown()
