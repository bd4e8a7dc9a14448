"""The machine-wide lock that serialises use of the real Asterisk and SIP calls between test runs.

`asterisk_conf/asterisk.sh` takes it (flock on /tmp/voicebridge-asterisk.lock) and test runs are
started under it (`flock /tmp/voicebridge-asterisk.lock pytest ...`). A test that places SIP calls
takes it too, unless one of its ancestor processes already holds it: waiting for our own parent
would never end.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path

LOCK_PATH = Path(os.environ.get("TMPDIR", "/tmp")) / "voicebridge-asterisk.lock"


def _ancestors() -> set[int]:
    """Pids of this process and every process above it."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after the (comm)
    return pids


def held_by_ancestor(path: Path = LOCK_PATH) -> bool:
    """True if a process above us holds a flock on `path` (from /proc/locks)."""
    try:
        st = path.stat()
        locks = Path("/proc/locks").read_text()
    except OSError:
        return False
    inode_id = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    ancestors = _ancestors()
    for line in locks.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:00:5678 0 EOF" ("->" marks waiters)
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        if fields[5] == inode_id and int(fields[4]) in ancestors:
            return True
    return False


@contextlib.asynccontextmanager
async def asterisk_lock(*, timeout_s: float = 600.0, path: Path = LOCK_PATH) -> AsyncIterator[None]:
    """Hold the shared lock (or rely on an ancestor holding it) for the block.

    Raises TimeoutError if another run holds it for longer than `timeout_s`.
    """
    if held_by_ancestor(path):
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    # flock has no awaitable form; another run holds it for minutes at most.
                    await asyncio.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
