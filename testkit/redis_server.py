"""A real redis-server process to break: TEST INFRASTRUCTURE, not part of the product.

`RedisProcess` runs Debian's `redis-server` on 127.0.0.1 (no persistence, as the compose file runs
it) and can kill it (SIGKILL), freeze it (SIGSTOP) and thaw it (SIGCONT), and start a fresh,
empty one on the same port, so the bridge's own client sees the same URL come back empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
from pathlib import Path

from testkit.ports import free_port

__all__ = ["RedisProcess"]


class RedisProcess:
    """One redis-server on a fixed port; `await start()`, break it, `close()` at the end."""

    def __init__(self, workdir: Path, *, binary: str | None = None) -> None:
        """Raises FileNotFoundError when redis-server is not installed."""
        found = binary or shutil.which("redis-server")
        if found is None:
            raise FileNotFoundError("redis-server not installed (apt-get install redis-server)")
        self._binary = found
        self._dir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients use; the same across restarts."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout_s: float = 10.0) -> None:
        """Start an empty server on `port` and wait until it answers PING."""
        self.proc = subprocess.Popen(  # noqa: ASYNC220  (returns at once; the wait below is async)
            [
                self._binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            + ["--dir", str(self._dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        async with asyncio.timeout(timeout_s):
            while not await self._pong():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited {self.proc.returncode} on port {self.port}")
                await asyncio.sleep(0.02)

    async def _pong(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            return (await reader.readline()).startswith(b"+PONG")
        except OSError:
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def kill(self) -> None:
        """SIGKILL, and reap it: the port is free again."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open, nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after `freeze()`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    async def restart_empty(self) -> None:
        """Kill it and start a fresh one (no data) on the same port."""
        self.kill()
        await self.start()

    def close(self) -> None:
        """Stop the server (thawed first, so it can exit). Idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()
