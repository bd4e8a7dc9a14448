"""An asyncio event loop on virtual time, for timeline tests (style-anchors practices 12 and 14).

The loop's clock only moves when nothing is ready to run: then it jumps straight to the next
timer. A 30-second call runs in milliseconds, and the same script always gives the same timeline.
Only for code without real I/O: a socket whose data is still in flight would see time jump.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class _VirtualSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or self.loop is None:
            return events
        if timeout is None:
            # Nothing scheduled and nothing ready: only a self-pipe wakeup could help, so block.
            return super().select(None)
        if timeout > 0:
            self.loop.advance(timeout)
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """`loop.time()` starts at 0 and advances only when the loop would otherwise sleep."""

    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._vtime = 0.0

    def time(self) -> float:
        return self._vtime

    def advance(self, seconds: float) -> None:
        """Move virtual time forward."""
        self._vtime += seconds


def run_virtual(main: Callable[[], Awaitable[T]], *, debug: bool = False) -> T:
    """Run `main()` to completion on a fresh virtual-time loop; fail on leftover tasks."""
    loop = VirtualTimeLoop()
    loop.set_debug(debug)
    try:
        asyncio.set_event_loop(loop)
        result: T = loop.run_until_complete(_checked(main))
        return result
    finally:
        asyncio.set_event_loop(None)
        loop.close()


async def _checked(main: Callable[[], Awaitable[Any]]) -> Any:
    result = await main()
    me = asyncio.current_task()
    leftovers = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    assert not leftovers, f"tasks still pending after the test: {leftovers}"
    return result
