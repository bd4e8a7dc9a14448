"""A stand-in as a process of its own, to kill, freeze and restart: TEST INFRASTRUCTURE.

`StandinProcess("speechkit", port, script)` runs `python -m testkit.standins.speechkit_server`
(or `openai_server` for "openai") on a fixed 127.0.0.1 port, so a restarted one is found at the
same address by the clients that lost it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

__all__ = ["StandinProcess"]

_MODULES = {"speechkit": "testkit.standins.speechkit_server", "openai": "testkit.standins.openai_server"}


class StandinProcess:
    """One stand-in process; `await start()`, then `kill`/`freeze`/`thaw`/`start` again, `close`."""

    def __init__(self, kind: str, port: int, script: Path, *, cwd: Path, stderr: Path | None = None) -> None:
        """`kind`: "speechkit" or "openai" (KeyError otherwise); `script`: a JSON script file."""
        self.kind = kind
        self._module = _MODULES[kind]
        self.port = port
        self._script = script
        self._cwd = cwd
        self._stderr = stderr
        self.proc: asyncio.subprocess.Process | None = None
        self.frozen = False

    async def start(self, timeout_s: float = 20.0) -> None:
        """Start it and wait for its "listening" line (RuntimeError if it exits first)."""
        err = self._stderr.open("ab") if self._stderr is not None else None
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", self._module, "--port", str(self.port), "--script", str(self._script),
                cwd=self._cwd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=err if err is not None else asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            if err is not None:
                err.close()
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            line = await self.proc.stdout.readline()
        if b"listening" not in line:
            raise RuntimeError(f"{self.kind} stand-in did not start on port {self.port}: {line!r}")
        self.frozen = False

    async def kill(self) -> None:
        """SIGKILL and reap it."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        self.frozen = False

    def freeze(self) -> None:
        """SIGSTOP: its sockets stay open, nothing answers."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGSTOP)
            self.frozen = True

    def thaw(self) -> None:
        """SIGCONT after `freeze()`."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGCONT)
            self.frozen = False

    async def close(self) -> None:
        """Stop it for good (thawed first so the kill is reaped). Idempotent."""
        self.thaw()
        await self.kill()
        self.proc = None
