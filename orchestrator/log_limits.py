"""Log lines a hostile or broken peer cannot multiply or inflate.

`RateLimitedLog`: at most `burst` lines per key per `period_s`; the lines held back are counted
and their number is added to the next line of that key, so nothing is hidden, only summarised.
Keys name a kind of event ("unknown AudioSocket kind"), never a peer or a call: the set of keys
stays small, whatever the peers do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]

_MAX_KEYS = 256  # a bound on the limiter's memory if a caller does make keys per peer


class RateLimitedLog:
    """Repeated warnings of one kind, at most `burst` lines per `period_s` seconds per key.

    Usage: `limited = RateLimitedLog(log)`, then `limited.warning("unknown kind", "msg %s", arg)`.
    Cheap when suppressed: one dict lookup and a clock read, no formatting. Not thread-safe (one
    event loop).
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        period_s: float = 10.0,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if period_s <= 0 or burst < 1:
            raise ValueError(f"RateLimitedLog: period_s {period_s} must be > 0 and burst {burst} >= 1")
        self._logger = logger
        self._period_s = period_s
        self._burst = burst
        self._clock = clock
        # key -> [window start, lines logged in the window, lines suppressed since the last line]
        self._state: dict[str, list[float]] = {}
        self.suppressed_total = 0

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log `msg % args` at `level` unless `key` has had its `burst` lines this period.

        Returns whether the line was logged. A logged line after suppressed ones ends with
        "(N similar suppressed)".
        """
        return self._emit(level, key, msg, args)

    def warning(self, key: str, msg: str, *args: object) -> bool:
        """`log(logging.WARNING, ...)`."""
        return self._emit(logging.WARNING, key, msg, args)

    def _emit(self, level: int, key: str, msg: str, args: tuple[object, ...]) -> bool:
        # stacklevel 3: the record names our caller's line, not this module's.
        if not self._logger.isEnabledFor(level):
            return False
        now = self._clock()
        state = self._state.get(key)
        if state is None:
            if len(self._state) >= _MAX_KEYS:
                self._state.clear()  # degenerate use: forget rather than grow
            state = self._state[key] = [now, 0.0, 0.0]
        if now - state[0] >= self._period_s:
            state[0], state[1] = now, 0.0
        if state[1] >= self._burst:
            state[2] += 1
            self.suppressed_total += 1
            return False
        state[1] += 1
        suppressed = int(state[2])
        state[2] = 0.0
        if suppressed:
            self._logger.log(level, msg + " (%d similar suppressed)", *args, suppressed, stacklevel=3)
        else:
            self._logger.log(level, msg, *args, stacklevel=3)
        return True
