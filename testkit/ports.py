"""Local TCP/UDP ports for tests and demos: free now, and outside the kernel's ephemeral range.

A port taken from the kernel with `bind(("127.0.0.1", 0))` comes from the ephemeral range
(/proc/sys/net/ipv4/ip_local_port_range, 32768-60999 by default), the range every outgoing
connection draws its local port from too: a bench opening thousands of connections on the same
machine can take it before the service under test binds it ("the port is in use"). Ports below
that range are never handed out for outgoing connections, so only another listener can collide:
one picked at random and checked free (TCP and UDP) makes that unlikely.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port"]

_LOW = 20000  # below: well-known services and registered ports commonly configured on hosts
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_start() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _is_free(port: int, host: str) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that is free for TCP and UDP now, below the ephemeral range.

    Raises `RuntimeError` when 200 random picks were all taken (the range is full).
    """
    high = _ephemeral_start()
    if high - _LOW < 1000:  # a host with a widened ephemeral range: fall back to the kernel's pick
        with socket.socket() as s:
            s.bind((host, 0))
            return int(s.getsockname()[1])
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(_LOW, high)
        if _is_free(port, host):
            return port
    raise RuntimeError(f"no free port on {host} in {_LOW}..{high - 1} after 200 tries")
