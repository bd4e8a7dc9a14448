"""Clocks. The default reads the running event loop's clock, so a virtual-time loop drives it too."""

from __future__ import annotations

import asyncio


class LoopClock:
    """Monotonic time from the running event loop (`loop.time()`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop

    def now(self) -> float:
        """Current loop time in seconds."""
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()
