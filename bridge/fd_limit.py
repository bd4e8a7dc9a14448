"""The process's file-descriptor limit: raised at start, and how many descriptors are open.

Every call holds an AudioSocket socket and shares provider sockets; the common soft limit of
1,024 descriptors ran out under 1,100 idle connections (a live call's cache read then failed with
"too many open files"). The soft limit may be raised by the process itself up to the hard limit
(setrlimit(2)), so `raise_fd_limit()` does that at start; the AudioSocket server then refuses new
connections before the remaining headroom is used up (`AudioSocketSettings.fd_headroom`).
"""

from __future__ import annotations

import logging
import os
import resource

__all__ = ["fd_limit", "open_fds", "raise_fd_limit"]

log = logging.getLogger(__name__)

_PROC_FDS = "/proc/self/fd"


def fd_limit() -> int:
    """The soft RLIMIT_NOFILE: descriptors this process may have open (RLIM_INFINITY as 2**31)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 2**31


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns (before, after).

    Never raises: a refusal (some sandboxes) is logged and the limit stays as it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft, soft
    log.info("open-file limit raised from %d to %d", soft, hard)
    return soft, hard


def open_fds() -> int | None:
    """Descriptors open in this process now (Linux `/proc/self/fd`), None where unknown.

    Costs a directory listing (about 0.1 ms per 1,000 descriptors): call it periodically, not per
    packet.
    """
    try:
        return len(os.listdir(_PROC_FDS)) - 1  # minus the listing's own descriptor
    except OSError:
        return None
