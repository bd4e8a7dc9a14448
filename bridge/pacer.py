"""One shared 20 ms deadline tick that sends every call's next outbound frame.

A timer or sleeping task per call does not scale to hundreds of calls; one `loop.call_at` chain
does. Deadlines are absolute (`t0 + n * 20 ms`), so scheduling jitter never accumulates. When the
loop was stalled, up to `max_catchup` missed frames are sent at once to keep real time; a longer
stall is skipped (counted in `resyncs`) rather than burst out, because a burst overruns the
phone's jitter buffer and is heard as garbage.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from typing import Annotated, Protocol

import pydantic.dataclasses
from pydantic import ConfigDict, Field

from orchestrator.audio import FRAME_S

log = logging.getLogger(__name__)


# Upper bounds of the tick-lateness buckets, s (Prometheus `le`); the last bucket is +Inf.
LATENESS_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class Tickable(Protocol):
    """Anything that sends one frame per tick (a call's `Playout`)."""

    def tick(self) -> None:
        """Send one frame."""
        ...


@pydantic.dataclasses.dataclass(
    frozen=True, slots=True, config=ConfigDict(extra="forbid", allow_inf_nan=False)
)
class PacerSettings:
    """The shared outbound tick (section `[pacer]`)."""

    # Missed frames sent at once after a loop stall (60 ms at 3); a longer stall is skipped and
    # counted in `Pacer.resyncs`, because a burst overruns the phone's jitter buffer. 0: never catch up.
    max_catchup: Annotated[int, Field(ge=0, le=50)] = 3


class Pacer:
    """Drives `tick()` of every registered member once per frame period.

    `frame_s` is the audio frame period (an audio fact, not a setting; tests shorten it).
    """

    def __init__(self, settings: PacerSettings | None = None, *, frame_s: float = FRAME_S) -> None:
        self.settings = settings or PacerSettings()
        self._frame_s = frame_s
        self._max_catchup = self.settings.max_catchup
        self._members: dict[Tickable, None] = {}  # insertion-ordered set
        self._snapshot: tuple[Tickable, ...] = ()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._t0 = 0.0
        self._n = 0
        self.ticks = 0
        self.resyncs = 0
        self.max_lateness_s = 0.0
        # How late each tick ran (not each frame: a catch-up tick counts once), as counts per
        # `LATENESS_BUCKETS_S` bucket plus +Inf, and their sum: exported at scrape time.
        self.lateness_counts = [0] * (len(LATENESS_BUCKETS_S) + 1)
        self.lateness_sum_s = 0.0

    def add(self, member: Tickable) -> None:
        """Start ticking `member` from the next frame on."""
        self._members[member] = None
        self._snapshot = tuple(self._members)

    def remove(self, member: Tickable) -> None:
        """Stop ticking `member`. Safe to call from inside a tick."""
        if self._members.pop(member, 0) is None:
            self._snapshot = tuple(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def start(self) -> None:
        """Begin ticking on the running loop."""
        if self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self._n = 0
        self._handle = self._loop.call_at(self._t0 + self._frame_s, self._on_tick)

    def stop(self) -> None:
        """Stop ticking. Members stay registered."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def running(self) -> bool:
        """Whether the tick is scheduled."""
        return self._handle is not None

    def _on_tick(self) -> None:
        loop = self._loop
        assert loop is not None
        handle = self._handle  # this tick's; a member may stop (or restart) the pacer below
        now = loop.time()
        # Frames whose deadline has passed; the epsilon keeps a tick that runs exactly on its
        # deadline from flooring to the previous frame through float rounding.
        due = int((now - self._t0) / self._frame_s + 1e-6)
        behind = due - self._n
        lateness = now - (self._t0 + (self._n + 1) * self._frame_s)
        if lateness > self.max_lateness_s:
            self.max_lateness_s = lateness
        if lateness > 0.0:  # a tick may run a hair early: that counts as on time
            self.lateness_sum_s += lateness
        self.lateness_counts[bisect.bisect_left(LATENESS_BUCKETS_S, lateness)] += 1
        if behind > self._max_catchup:
            # Stalled for too long: skip the lost frames instead of bursting them.
            self.resyncs += 1
            self._n = due - 1
            behind = 1
        for _ in range(max(behind, 1)):
            self._n += 1
            self.ticks += 1
            for member in self._snapshot:
                try:
                    member.tick()
                except Exception:
                    # One broken call must not silence the others.
                    log.exception("playout tick failed; member removed")
                    self.remove(member)
        if self._handle is handle:  # else stopped during the tick (or restarted: its own handle)
            self._handle = loop.call_at(self._t0 + (self._n + 1) * self._frame_s, self._on_tick)
