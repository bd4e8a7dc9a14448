"""`voicebridge serve` as a process of its own, for the soak: started with its settings in the
environment (`VOICEBRIDGE_*`), its `/debug/` endpoints on, its end reasons read back from its
metrics file (`call_end` records) and its memory and descriptors from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import aiohttp

from bench.proc_stats import fd_count, fd_kinds, free_port, rss_mb

ROOT = Path(__file__).resolve().parent.parent
READY_S = 90.0  # bound on the service's start (the cache warms through the TTS stand-in)
STOP_S = 30.0  # bound on its exit after SIGINT


class ServiceProcess:
    """The service under test; `settings` are `{"section__field": value}` (or top-level keys)."""

    def __init__(self, workdir: Path, settings: dict[str, str], *, log: Path | None = None) -> None:
        self.admin_port = free_port()
        self.metrics_file = workdir / "metrics.jsonl"
        self.log = log or workdir / "service.log"
        self.env = {
            **os.environ,
            **{f"VOICEBRIDGE_{k.upper()}": v for k, v in settings.items()},
            "VOICEBRIDGE_METRICS_FILE": str(self.metrics_file),
            "VOICEBRIDGE_ADMIN__PORT": str(self.admin_port),
            "VOICEBRIDGE_ADMIN__DEBUG": "true",
        }
        self.proc: asyncio.subprocess.Process | None = None
        self.outcomes: dict[str, str] = {}  # call id -> end reason, from the metrics file
        self._read_at = 0
        self._http: aiohttp.ClientSession | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        """Start `python -m bridge.cli serve` and wait until `/readyz` says ready (ARI connected)."""
        with open(self.log, "ab") as log:  # noqa: ASYNC230 - once, before the soak begins
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bridge.cli", "serve",
                cwd=ROOT, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        async with asyncio.timeout(READY_S):
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"the service exited ({self.proc.returncode}); see {self.log}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with self._http.get(self._url("/readyz")) as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.2)

    def _url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    async def get(self, path: str) -> dict[str, object]:
        """An admin endpoint's JSON answer."""
        assert self._http is not None
        async with self._http.get(self._url(path)) as r:
            body: dict[str, object] = await r.json()
            return body

    async def post(self, path: str) -> dict[str, object]:
        assert self._http is not None
        async with self._http.post(self._url(path)) as r:
            body: dict[str, object] = await r.json()
            return body

    async def tasks(self) -> Counter[str]:
        """The service's live asyncio tasks by name (ids as "#")."""
        tasks = (await self.get("/debug/tasks"))["tasks"]
        assert isinstance(tasks, dict)
        return Counter({str(k): int(v) for k, v in tasks.items()})

    async def objects(self) -> dict[str, int]:
        """The most numerous object types in the service (gc-tracked), by count."""
        objects = (await self.get("/debug/objects"))["objects"]
        assert isinstance(objects, dict)
        return {str(k): int(v) for k, v in objects.items()}

    async def calls_active(self) -> int:
        """The service's `voicebridge_calls_active` gauge."""
        assert self._http is not None
        async with self._http.get(self._url("/metrics")) as r:
            text = await r.text()
        for line in text.splitlines():
            if line.startswith("voicebridge_calls_active "):
                return int(float(line.split()[1]))
        raise RuntimeError("no voicebridge_calls_active in /metrics")

    def outcome(self, call_id: str) -> str | None:
        """The call's end reason once its `call_end` record is written, else None."""
        if call_id not in self.outcomes:
            self._read_metrics()
        return self.outcomes.get(call_id)

    def _read_metrics(self) -> None:
        try:
            with open(self.metrics_file, "rb") as f:
                f.seek(self._read_at)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # whole lines only: the service may be mid-write
        if not end:
            return
        self._read_at += end
        for line in data[:end].splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == "call_end":
                    self.outcomes[str(record.get("trace_id"))] = str(record.get("reason"))

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def fd_count(self) -> int:
        return fd_count(self.pid)

    def fd_kinds(self, ports: dict[int, str]) -> Counter[str]:
        return fd_kinds(ports, self.pid)

    async def close(self) -> None:
        """SIGINT (stop at once, exit 0), bounded; then SIGKILL."""
        if self._http is not None:
            await self._http.close()
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(STOP_S):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
