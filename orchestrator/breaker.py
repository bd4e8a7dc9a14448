"""A circuit breaker per provider, so new calls do not each wait out a dead provider.

Closed: calls use the provider; `failure_threshold` failures in a row (a connection that cannot be
made, a retryable error) open it. Open: calls are refused at once (they go to cached audio) and
one owned task, `breaker:<name>:probe`, probes the provider every `probe_every_s` (each probe
bounded by `probe_timeout_s`); the first probe that succeeds closes the breaker (half-open is
this probe: calls never act as probes, so none of them waits on a dead provider). A success seen
by a call also closes it. Times come from the injected clock; the probe sleeps on the event loop,
so a virtual-time loop drives it too.

Small and ours rather than `aiobreaker`/`pybreaker`/`purgatory`: none takes an injected clock
(they read the wall clock), and none probes in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

import pydantic.dataclasses
from pydantic import ConfigDict, Field

from orchestrator.contracts import Clock
from orchestrator.tasks import TaskOwner

__all__ = ["BreakerSettings", "CircuitBreaker"]

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[None]]  # raises when the provider is still down


@pydantic.dataclasses.dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class BreakerSettings:
    """Section `[breaker]`: the providers' circuit breakers (TTS today)."""

    # Failures in a row that open the breaker.
    failure_threshold: Annotated[int, Field(ge=1)] = 1
    # While open, how often the provider is probed (s): recovery is seen within this (plus the
    # probe itself) of the provider coming back.
    probe_every_s: Annotated[float, Field(gt=0)] = 0.25
    # Bound on one probe, and on a call's own connection check while the breaker is closed (s):
    # the most a call waits at setup for a provider that just died.
    probe_timeout_s: Annotated[float, Field(gt=0)] = 1.0


class CircuitBreaker:
    """One provider's breaker; see the module docstring. `aclose()` stops the probe task."""

    def __init__(self, name: str, settings: BreakerSettings, *, clock: Clock, probe: Probe) -> None:
        self.name = name
        self._settings = settings
        self._clock = clock
        self._probe = probe
        self._state: Literal["closed", "open"] = "closed"
        self._failures = 0
        self.opened_at = 0.0  # clock time of the last opening
        self.closed_at = 0.0  # clock time of the last closing
        self.openings = 0
        self.refused = 0  # operations refused while open
        self._tasks = TaskOwner(f"breaker:{name}", cancel_bound_s=settings.probe_timeout_s + 1)
        self._prober: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def state(self) -> Literal["closed", "open"]:
        """ "closed" (calls use the provider) or "open" (refused; probing)."""
        return self._state

    @property
    def settings(self) -> BreakerSettings:
        """The bounds this breaker runs with."""
        return self._settings

    def allow(self) -> bool:
        """Whether an operation may use the provider now; counts a refusal when not."""
        if self._state == "closed":
            return True
        self.refused += 1
        return False

    def success(self) -> None:
        """The provider worked: failures forgotten, the breaker closed."""
        self._failures = 0
        if self._state == "open":
            self._close("a call succeeded")

    def failure(self, exc: BaseException) -> None:
        """The provider failed (only failures that say it is down or unreachable count)."""
        self._failures += 1
        if self._state == "closed" and self._failures >= self._settings.failure_threshold:
            self._state = "open"
            self.opened_at = self._clock.now()
            self.openings += 1
            log.warning(
                "%s unavailable (%s): circuit open, calls use cached audio; probing every %.2f s",
                self.name,
                exc,
                self._settings.probe_every_s,
            )
            self._signal()
            if self._prober is None or self._prober.done():
                with contextlib.suppress(RuntimeError):  # closed: the service is stopping
                    self._prober = self._tasks.spawn(self._probe_until_closed(), "probe")

    async def wait_state(self, state: Literal["closed", "open"]) -> None:
        """Return once the breaker is in `state` (tests, tools; bound it)."""
        while self._state != state:
            self._changed.clear()
            await self._changed.wait()

    def _close(self, why: str) -> None:
        self._state = "closed"
        self._failures = 0
        self.closed_at = self._clock.now()
        log.info(
            "%s is back (%s) after %.2f s: circuit closed", self.name, why, self.closed_at - self.opened_at
        )
        self._signal()

    def _signal(self) -> None:
        self._changed.set()

    async def _probe_until_closed(self) -> None:
        s = self._settings
        while self._state == "open":
            await asyncio.sleep(s.probe_every_s)
            if self._state != "open":
                return
            try:
                async with asyncio.timeout(s.probe_timeout_s):
                    await self._probe()
            except Exception as exc:  # still down (any failure of the probe counts)
                log.debug("%s probe failed: %r", self.name, exc)
                continue
            if self._state == "open":
                self._close("a probe succeeded")

    async def aclose(self) -> None:
        """Stop probing (bounded). Idempotent."""
        await self._tasks.aclose()
