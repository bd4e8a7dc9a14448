"""Which new AudioSocket connections the server takes: caps an operator sets, checked on accept.

Checked in order, the first that fails names the refusal:

1. `fd`: the process is within `fd_headroom` descriptors of its open-file limit. The count is the
   accepted socket's own descriptor number (Linux hands out the lowest free one, so every number
   below it is in use) and, between the periodic recounts of `/proc/self/fd`, the last count plus
   every connection accepted since. Refusing here keeps descriptors for the live calls' provider
   and cache sockets: running out made a live call's cache read fail.
2. `total`: `max_connections` open AudioSocket connections.
3. `peer`: `max_connections_per_peer` from one peer address (Asterisk connects from one host;
   anybody else is a stranger or a test).
4. `rate`: more than `max_accepts_per_s` accepts per second (token bucket, one second of burst).

A refused connection is closed at once (a plain close: the peer sees a FIN), so it costs no
descriptor beyond that instant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

__all__ = ["Admission", "AdmissionLimits", "Refusal"]

Refusal = Literal["fd", "total", "peer", "rate"]


class AdmissionLimits(Protocol):
    """The settings read here (`AudioSocketSettings` has them)."""

    @property
    def max_connections(self) -> int: ...
    @property
    def max_connections_per_peer(self) -> int: ...
    @property
    def max_accepts_per_s(self) -> float: ...
    @property
    def fd_headroom(self) -> int: ...


class Admission:
    """Counts open connections per peer and decides on each new one (see the module doc)."""

    def __init__(
        self,
        limits: AdmissionLimits,
        *,
        clock: Callable[[], float],
        fd_limit: int,
        open_fds: Callable[[], int | None],
    ) -> None:
        self._limits = limits
        self._clock = clock
        self._fd_ceiling = fd_limit - limits.fd_headroom  # refuse at or above this many open fds
        self._open_fds = open_fds
        self._fds_counted = open_fds() or 0
        self._accepted_since_count = 0
        self._tokens = limits.max_accepts_per_s
        self._tokens_at = clock()
        self._per_peer: dict[str, int] = {}
        self.open = 0

    @property
    def fd_ceiling(self) -> int:
        """Open descriptors at which new connections are refused."""
        return self._fd_ceiling

    def admit(self, host: str, fileno: int) -> Refusal | None:
        """None and the connection is counted (call `release(host)` when it closes), or why not."""
        lim = self._limits
        if fileno >= self._fd_ceiling or self._fds_counted + self._accepted_since_count >= self._fd_ceiling:
            return "fd"
        if self.open >= lim.max_connections:
            return "total"
        peer_open = self._per_peer.get(host, 0)
        if peer_open >= lim.max_connections_per_peer:
            return "peer"
        now = self._clock()
        rate = lim.max_accepts_per_s
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1.0:
            return "rate"
        self._tokens -= 1.0
        self._per_peer[host] = peer_open + 1
        self.open += 1
        self._accepted_since_count += 1
        return None

    def can_admit(self, pending: int = 0) -> Refusal | None:
        """Whether one more connection, after `pending` announced ones not yet connected, would
        pass the `fd` and `total` caps now (None), or which would refuse it. Counts nothing; the
        peer and rate caps are judged on the connection itself."""
        if self._fds_counted + self._accepted_since_count + pending >= self._fd_ceiling:
            return "fd"
        if self.open + pending >= self._limits.max_connections:
            return "total"
        return None

    def release(self, host: str) -> None:
        """An admitted connection closed."""
        self.open -= 1
        left = self._per_peer.get(host, 1) - 1
        if left > 0:
            self._per_peer[host] = left
        else:
            self._per_peer.pop(host, None)

    def recount_fds(self) -> None:
        """Count the open descriptors again (periodically; see `bridge.fd_limit.open_fds`)."""
        counted = self._open_fds()
        if counted is not None:
            self._fds_counted = counted
            self._accepted_since_count = 0
