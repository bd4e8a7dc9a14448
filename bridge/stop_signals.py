"""How `voicebridge serve` answers stop signals (the convention of gunicorn and nginx).

- SIGTERM (a deploy: `systemctl stop`, `podman stop`, Kubernetes): drain. New calls are refused
  with SIP 503, calls in progress finish (`VoicebridgeApp.begin_drain`); the process exits 0 once
  the last call has ended.
- A second SIGTERM, or SIGINT at any time (Ctrl-C on a terminal, where one wants the prompt back
  now): stop at once, still cleanly: every call is hung up, sockets and providers are closed.

Every one of these ends with exit status 0: the stop was asked for and done, so a supervisor must
not count it as a crash (a non-zero status would also make `Restart=on-failure` restart it).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

__all__ = ["Drainable", "stop_signals"]

log = logging.getLogger(__name__)


class Drainable(Protocol):
    """What the signals act on (`VoicebridgeApp`)."""

    @property
    def draining(self) -> bool:
        """Whether a drain has begun; only `begin_drain()` starts one (read-only here)."""
        ...

    def begin_drain(self) -> None:
        """Stop taking calls; let the calls in progress end."""
        ...


@contextmanager
def stop_signals(app: Drainable, stop: asyncio.Event) -> Iterator[None]:
    """While inside: SIGTERM begins the drain, a second SIGTERM or any SIGINT sets `stop`.

    Must be entered in the running loop's thread (it uses `loop.add_signal_handler`); the
    handlers are removed on exit.
    """
    loop = asyncio.get_running_loop()

    def on_term() -> None:
        if app.draining:
            log.warning("SIGTERM again while draining: stopping now, hanging up every call")
            stop.set()
        else:
            log.info("SIGTERM: draining (another SIGTERM or SIGINT stops at once)")
            app.begin_drain()

    def on_int() -> None:
        log.info("SIGINT: stopping now, hanging up every call")
        stop.set()

    handlers: dict[signal.Signals, Callable[[], None]] = {signal.SIGTERM: on_term, signal.SIGINT: on_int}
    for sig, handler in handlers.items():
        loop.add_signal_handler(sig, handler)
    try:
        yield
    finally:
        for sig in handlers:
            loop.remove_signal_handler(sig)
