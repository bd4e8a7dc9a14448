"""Clocks. The default reads the running event loop's clock, so a virtual-time loop drives it too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class LoopClock:
    """Monotonic time from the running event loop (`loop.time()`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop

    def now(self) -> float:
        """Current loop time in seconds."""
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def reader(self) -> Callable[[], float]:
        """`now` as one call, for a reader that lives on the running loop (the given one, else the
        one running now; outside a running loop, `now` itself): read per audio frame, `now`
        costs a running-loop lookup (a getpid) and two Python calls. Same values as `now`."""
        loop = self._loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return self.now
        if type(loop).time is asyncio.BaseEventLoop.time:
            return time.monotonic  # what asyncio's own `time()` returns (a virtual loop overrides it)
        return loop.time
