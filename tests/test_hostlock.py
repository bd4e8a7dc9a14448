"""testkit/hostlock.py: the shared Asterisk lock, taken unless an ancestor already holds it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.hostlock import asterisk_lock, held_by_ancestor

REPO = Path(__file__).resolve().parents[1]
CHECK = "import sys; from pathlib import Path; from testkit.hostlock import held_by_ancestor; print(held_by_ancestor(Path(sys.argv[1])))"


def _flock_available() -> None:
    if shutil.which("flock") is None:
        pytest.fail("flock (util-linux) is not installed")


def test_a_lock_held_by_a_parent_process_is_seen(tmp_path: Path) -> None:
    _flock_available()
    lock = tmp_path / "x.lock"
    under = subprocess.run(
        ["flock", str(lock), sys.executable, "-c", CHECK, str(lock)],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert under.stdout.strip() == "True"
    assert held_by_ancestor(lock) is False  # nobody holds it now


async def _run(*cmd: str) -> int:
    proc = await asyncio.create_subprocess_exec(*cmd)
    async with asyncio.timeout(10):
        return await proc.wait()


async def test_the_lock_excludes_another_holder_and_is_released(tmp_path: Path) -> None:
    _flock_available()
    lock = tmp_path / "x.lock"
    async with asterisk_lock(path=lock):
        assert await _run("flock", "-n", str(lock), "true") != 0, "another process took the lock"
        assert held_by_ancestor(lock)  # this process and its children may go on under it
    assert await _run("flock", "-n", str(lock), "true") == 0, "the lock was not released"


async def test_waiting_for_a_held_lock_is_bounded(tmp_path: Path) -> None:
    _flock_available()
    lock = tmp_path / "x.lock"
    holder = await asyncio.create_subprocess_exec(
        "flock", str(lock), "sh", "-c", "echo locked; exec sleep 30 >/dev/null",
        stdout=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        async with asyncio.timeout(10):
            assert await holder.stdout.readline() == b"locked\n"
        with pytest.raises(TimeoutError):
            async with asterisk_lock(path=lock, timeout_s=0.3):
                pytest.fail("got a lock another process holds")
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # flock and its sleep, which shares the lock
        async with asyncio.timeout(10):
            await holder.wait()
