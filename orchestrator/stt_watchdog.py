"""STT health in the call's time scale: speech the recognizer never answers is a stalled STT.

A frozen STT process keeps its connection and says nothing; a reconnecting one buffers the audio
and says nothing either. Only the caller's side shows it: the VAD hears speech and no result of
any kind (partial or final, taken or dropped as echo) comes back. So the watchdog counts the
caller's speech since the last result (`unheard_s`), and:

- STALL: when `unheard_s` reaches `[call] stt_stall_s`, `on_stall()` is called once (the call
  plays the emergency phrase and reports the failure to the STT circuit).
- RECOVERY: the next result after a stall calls `on_recover(seconds stalled)`.
- GIVE UP: no result within `[call] stt_recovery_s` of the stall calls `on_give_up()` once (the
  call ends, "stt_failure").

Noise the recognizer rightly turns into nothing (a cough) also counts as speech, but a result
clears the count, so it only adds up between two recognized utterances.

One task per call, `<call_id>:stt_watchdog` (`run()`, owned by the Orchestrator), sleeps until
the next deadline and wakes only when the VAD or a result changes it: no work per audio frame.
Times are on the call's injected clock (the event loop's time in the service and the tests).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from orchestrator.contracts import Clock

__all__ = ["SttWatchdog"]


class SttWatchdog:
    """One call's STT stall detector (see the module docstring)."""

    def __init__(
        self,
        *,
        clock: Clock,
        stall_s: float,
        recovery_s: float,
        on_stall: Callable[[float], None],
        on_recover: Callable[[float], None],
        on_give_up: Callable[[float], None],
    ) -> None:
        """Callbacks get seconds: `on_stall(unheard speech)`, `on_recover(stalled for)`,
        `on_give_up(stalled for)`; they run in the watchdog's task (or in `heard()`)."""
        self._clock = clock
        self._stall_s = stall_s
        self._recovery_s = recovery_s
        self._on_stall, self._on_recover, self._on_give_up = on_stall, on_recover, on_give_up
        self._unheard_s = 0.0  # closed stretches of speech since the last result
        self._speaking_since: float | None = None
        self.stalled_at: float | None = None
        self._gave_up = False
        self._changed = asyncio.Event()

    # --- what the call reports (synchronous, O(1)) ---
    def speech_start(self, at: float) -> None:
        """The VAD heard the caller start talking at clock time `at`."""
        if self._speaking_since is None:
            self._speaking_since = at
            self._changed.set()

    def speech_end(self, at: float) -> None:
        """The VAD heard the caller stop at `at`."""
        if self._speaking_since is not None:
            self._unheard_s += max(0.0, at - self._speaking_since)
            self._speaking_since = None
            self._changed.set()

    def heard(self, at: float) -> None:
        """A recognition result arrived at `at`: STT is alive."""
        if self._speaking_since is not None:
            self._speaking_since = at  # speech before the result was heard
        self._unheard_s = 0.0
        if self.stalled_at is not None:
            stalled = self.stalled_at
            self.stalled_at = None
            self._gave_up = False
            self._on_recover(at - stalled)
        self._changed.set()

    @property
    def unheard_s(self) -> float:
        """The caller's speech since the last result, in seconds, now."""
        now = self._clock.now()
        open_s = now - self._speaking_since if self._speaking_since is not None else 0.0
        return self._unheard_s + max(0.0, open_s)

    def _deadline(self) -> float | None:
        """Clock time of the next stall or give-up check; None when nothing can happen."""
        if self.stalled_at is not None:
            return None if self._gave_up else self.stalled_at + self._recovery_s
        if self._speaking_since is None:
            return None  # silence adds nothing to the count
        return self._speaking_since + (self._stall_s - self._unheard_s)

    # --- the task ---
    async def run(self) -> None:
        """Watch until cancelled (the call's end)."""
        while True:
            self._changed.clear()
            deadline = self._deadline()
            if deadline is None:
                await self._changed.wait()
                continue
            delay = deadline - self._clock.now()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._changed.wait()
                continue
            now = self._clock.now()
            if self.stalled_at is None:
                unheard = self.unheard_s
                self.stalled_at = now
                self._on_stall(unheard)
            else:
                self._gave_up = True
                self._on_give_up(now - self.stalled_at)
