"""What the soak reads of a process from /proc (its own or the service's, by pid): RSS, open
descriptors by kind; and free ports."""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections import Counter


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int | str = "self") -> float:
    """The process's resident set (VmRSS), MB; 0.0 once it has exited."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fd_count(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def tcp_peers() -> dict[str, tuple[int, int]]:
    """Socket inode -> (local port, remote port) of this host's TCP sockets."""
    peers: dict[str, tuple[int, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as f:
            for row in list(f)[1:]:
                cols = row.split()
                peers[cols[9]] = (int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16))
    return peers


def fd_kinds(ports: dict[int, str], pid: int | str = "self") -> Counter[str]:
    """Open descriptors by kind: a TCP socket by the peer it talks to (`ports`: port -> name),
    else "socket", "pipe", "anon_inode:[eventpoll]", or a path."""
    kinds: Counter[str] = Counter()
    peers = tcp_peers()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            inode = re.fullmatch(r"socket:\[(\d+)\]", target)
            if inode is not None and inode.group(1) in peers:
                local, remote = peers[inode.group(1)]
                name = ports.get(remote) or ports.get(local)
                target = f"tcp:{name}" if name else f"tcp:{remote or 'listen'}"
            kinds[re.sub(r":\[\d+\]$", "", target)] += 1
    return kinds
