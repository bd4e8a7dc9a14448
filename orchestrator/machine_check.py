"""The bot's own answering-machine check for outbound calls: a long greeting with no pause.

A person answers with a short "алло?" and waits; an answering machine (or a voicemail service)
talks on: "Здравствуйте, вы позвонили ..., оставьте сообщение после сигнала". So, from the
moment the call is answered, on the VAD's speech start/end (the gateway's, the times on the
call's clock):
- speech that runs on for `greeting_s` with no pause of `pause_s` or more -> "machine";
- speech that stops for `pause_s` before that -> "human";
- no speech at all for `silence_s` -> "silent" (a person who waits for the bot to speak; the
  call goes on as for a human).
`MachineCheck.verdict()` waits for one of them. After "machine", `wait_quiet()` waits for the
greeting to end (the beep), so a voicemail message is left after it, not over it.
Nothing here runs per frame: two method calls per speech run, and timers on the injected clock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from orchestrator.contracts import Clock

Verdict = Literal["human", "machine", "silent"]
_EPS = 1e-6  # s: a deadline this close counts as reached (float sums of clock times)


@dataclass(frozen=True, slots=True)
class MachineCheckSettings:
    """Thresholds of the check, in seconds (see the module docstring)."""

    greeting_s: float = 3.5
    pause_s: float = 0.8
    silence_s: float = 5.0
    # After "machine": the longest wait for the greeting to end before the message is played.
    quiet_wait_s: float = 20.0


class MachineCheck:
    """One call's check; fed `speech_start`/`speech_end` (clock times) from the call's VAD."""

    def __init__(self, clock: Clock, settings: MachineCheckSettings = MachineCheckSettings()) -> None:
        self.settings = settings
        self._clock = clock
        self._started = clock.now()
        self._run_onset: float | None = None  # start of the current run of speech (pauses < pause_s inside)
        self._speaking = False
        self._last_end: float | None = None
        self._changed = asyncio.Event()

    def speech_start(self, at: float) -> None:
        """The VAD heard speech begin at `at`."""
        if self._run_onset is None or self._last_end is None or at - self._last_end >= self.settings.pause_s:
            self._run_onset = at  # a new run: the pause before it was long enough
        self._speaking = True
        self._changed.set()

    def speech_end(self, at: float) -> None:
        """The VAD heard speech end at `at`."""
        self._speaking = False
        self._last_end = at
        self._changed.set()

    def _due(self) -> tuple[Verdict | None, float]:
        """The verdict now, or None and how long until one may be due (s)."""
        s, now = self.settings, self._clock.now()
        if self._speaking and self._run_onset is not None:
            left = self._run_onset + s.greeting_s - now
            return ("machine", 0.0) if left <= _EPS else (None, left)
        if self._last_end is not None:
            left = self._last_end + s.pause_s - now
            return ("human", 0.0) if left <= _EPS else (None, left)
        left = self._started + s.silence_s - now
        return ("silent", 0.0) if left <= _EPS else (None, left)

    async def verdict(self) -> Verdict:
        """Wait for the verdict (at most about `greeting_s` + `silence_s` s)."""
        while True:
            verdict, left = self._due()
            if verdict is not None:
                return verdict
            await self._wait_change(left)

    async def wait_quiet(self) -> None:
        """Wait until the speech has paused for `pause_s` (or `quiet_wait_s` has passed)."""
        pause = self.settings.pause_s
        deadline = self._clock.now() + self.settings.quiet_wait_s
        while True:
            now = self._clock.now()
            if self._speaking:
                quiet_at = deadline
            else:
                quiet_at = min(
                    deadline, (self._last_end if self._last_end is not None else now - pause) + pause
                )
            if quiet_at - now <= _EPS:
                return
            await self._wait_change(quiet_at - now)

    async def _wait_change(self, timeout_s: float) -> None:
        self._changed.clear()
        try:
            async with asyncio.timeout(timeout_s):
                await self._changed.wait()
        except TimeoutError:
            pass
