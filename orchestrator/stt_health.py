"""One call's STT health wiring: the watchdog's callbacks and the service's STT circuit.

The caller's speech with no result for `[call] stt_stall_s` is a stalled STT
(`orchestrator.stt_watchdog`): the dialogue gets a retryable `STTError` (the emergency phrase),
the STT circuit records a failure; no result within `stt_recovery_s` more and it gets a final
one (the call ends, "stt_failure"). A call that starts while the circuit is open waits one probe
for it to close (`still_down`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from orchestrator.breaker import CircuitBreaker
from orchestrator.domain.errors import ProviderError, STTError
from orchestrator.domain.models import SttResult

__all__ = ["SttHealth"]

log = logging.getLogger("orchestrator.orchestrator")  # the call's log, as before the split


class SttHealth:
    """Reports STT health to the service's circuit and STT failures to the dialogue."""

    def __init__(
        self, call_id: str, breaker: CircuitBreaker | None, report: Callable[[STTError], None]
    ) -> None:
        """`breaker`: the service's STT circuit (None: none); `report`: puts a failure on the
        dialogue's queue."""
        self._call_id = call_id
        self._breaker = breaker
        self._report = report

    def result(self, event: SttResult | ProviderError) -> None:
        """A recognition event: a result closes the circuit's count, a final error is a failure."""
        if self._breaker is None:
            return
        if isinstance(event, SttResult):
            self._breaker.success()
        elif not event.retryable:
            self._breaker.failure(f"call {self._call_id}: {event}")

    async def still_down(self) -> bool:
        """At the call's start: whether the STT circuit is open and stays so for one probe
        (`probe_every_s + probe_timeout_s`): another call's stall opened it, and a healthy STT
        closes it on the next probe, so this call waits that long rather than fail at once."""
        breaker = self._breaker
        assert breaker is not None
        if breaker.is_open:
            s = breaker.settings
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(s.probe_every_s + s.probe_timeout_s):
                    await breaker.wait_state("closed")
        return not breaker.allow()  # a refusal is counted

    def stalled(self, unheard_s: float) -> None:
        why = f"no recognition result for {unheard_s:.1f} s of the caller's speech"
        log.warning("call %s: STT stalled: %s", self._call_id, why)
        if self._breaker is not None:
            self._breaker.failure(f"call {self._call_id}: {why}")
        self._report(STTError(why, provider="stt", retryable=True))

    def recovered(self, stalled_s: float) -> None:
        log.info("call %s: STT recovered after %.1f s", self._call_id, stalled_s)

    def gave_up(self, stalled_s: float) -> None:
        why = f"no recognition result within {stalled_s:.1f} s of the stall"
        log.warning("call %s: STT did not recover: %s", self._call_id, why)
        self._report(STTError(why, provider="stt", retryable=False))
