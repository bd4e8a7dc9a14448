"""The AMI event log's login: retried with back-off until it succeeds or the service stops.

AMI being down never stops the service: the event log (`bridge.ami.AmiEventLogger`: hangup
causes and call events into the log) is only an aid, and `/readyz` names it while it is out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bridge.ami import AmiError, AmiEventLogger, AmiSettings

__all__ = ["log_in_event_logger"]

log = logging.getLogger(__name__)


async def log_in_event_logger(ami: AmiSettings, stopping: asyncio.Event) -> AmiEventLogger | None:
    """An `AmiEventLogger`, logged in (it reconnects by itself from then on); None if `stopping`
    was set first. Attempts back off from 1 s, doubling up to `ami.log_retry_max_s`.

    Returns after the current attempt once `stopping` is set (bounded by the login timeout), so
    that it need not be cancelled mid-login (panoramisk logs a traceback then).
    """
    delay = 1.0
    while not stopping.is_set():
        logger = AmiEventLogger(ami)
        try:
            await logger.start()  # reconnects by itself once logged in
        except AmiError as exc:
            await logger.close()
            log.warning("AMI event log unavailable (%s); retrying in %.0f s", exc, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stopping.wait()
            delay = min(delay * 2, ami.log_retry_max_s)
            continue
        return logger
    return None
