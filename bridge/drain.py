"""The service's drain (a deploy): stop taking calls, let the calls in progress end, say when none
is left.

`begin()` (on SIGTERM or `POST /drain` on the admin port, through `VoicebridgeApp.begin_drain`):
new calls are refused with congestion (SIP 503, see `bridge.ari.controller`), `/readyz` answers
503, each call in progress may finish its dialogue until `[call] drain_timeout_s` after the drain
began and then hears the map's drain goodbye and is hung up (`Orchestrator.drain_by`);
`drained()` returns once no call is left.
"""

from __future__ import annotations

import asyncio
import logging

from bridge.ari import AriController
from bridge.settings import Settings
from orchestrator.clock import LoopClock
from orchestrator.orchestrator import Orchestrator

__all__ = ["CallDrain"]

log = logging.getLogger(__name__)


class CallDrain:
    """Whether the service drains, by when its calls must end, and the calls in their dialogue."""

    def __init__(self, settings: Settings, clock: LoopClock) -> None:
        self._settings = settings
        self._clock = clock
        # Read by the admin endpoint (/readyz answers 503 while it is true) and the node registry.
        self.draining = False
        self.deadline: float | None = None  # clock time the calls must end by
        self._requested = asyncio.Event()
        self.orchestrators: set[Orchestrator] = set()  # calls in their dialogue

    def admit(self, orchestrator: Orchestrator) -> None:
        """A call entering its dialogue: drained with the rest (at once if the drain began)."""
        if self.deadline is not None:  # taken just before the drain began
            orchestrator.drain_by(self.deadline)
        self.orchestrators.add(orchestrator)

    def discard(self, orchestrator: Orchestrator) -> None:
        """The call's dialogue is over."""
        self.orchestrators.discard(orchestrator)

    def begin(self, ari: AriController | None) -> None:
        """Stop taking calls and let the calls in progress end (see the module docstring).

        Synchronous (a signal handler or an HTTP handler calls it) and idempotent: the first call
        fixes the deadline.
        """
        if self.draining:
            return
        self.draining = True
        timeout = self._settings.call.drain_timeout_s
        self.deadline = self._clock.now() + timeout
        if ari is not None:
            ari.refuse_new_calls()
        for orchestrator in self.orchestrators:
            orchestrator.drain_by(self.deadline)
        active = ari.active_calls if ari is not None else 0
        log.info(
            "draining: new calls are refused (SIP 503); %d call(s) in progress may go on for up to %.0f s",
            active,
            timeout,
        )
        self._requested.set()

    async def drained(self, ari: AriController) -> None:
        """Returns when a drain has begun and no call is left (bounded: past the drain deadline
        plus the goodbye and teardown bounds, the rest is left to `VoicebridgeApp.close()`)."""
        await self._requested.wait()
        s = self._settings
        grace = s.call.apologise_timeout_s + s.call.cancel_bound_s + 3 * s.ari.timeout_s
        try:
            async with asyncio.timeout(s.call.drain_timeout_s + grace):
                await ari.idle.wait()
        except TimeoutError:
            log.warning("drain: %d call(s) still up past the drain bound; hanging them up", ari.active_calls)
            return
        log.info("drain complete: no call left (%d refused meanwhile)", ari.refused)
