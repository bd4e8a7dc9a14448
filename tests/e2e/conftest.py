"""Fixtures for the end-to-end tests against the real Asterisk (asterisk_conf/asterisk.sh).

Nothing is skipped silently: if Asterisk cannot be brought up, or a tool the harness needs
(sipp, tcpdump, espeak-ng, root for play_pcap_audio) is missing, the test fails and says why.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bridge.ari import AriCall, AriController, AriSettings
from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.pacer import Pacer
from testkit.sip import espeak_pcm

REPO = Path(__file__).resolve().parents[2]
ASTERISK_SH = REPO / "asterisk_conf" / "asterisk.sh"
ARI = AriSettings()
CALLER_PHRASE = "Здравствуйте! Я хочу узнать, когда приедет мой заказ номер сорок два."


def ari_get(path: str, *, timeout_s: float = 2.0) -> object:
    """GET an ARI resource with the test credentials; raises on failure."""
    req = urllib.request.Request(ARI.url.rstrip("/") + "/ari/" + path.lstrip("/"))
    token = base64.b64encode(f"{ARI.username}:{ARI.password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read() or b"null")


def ari_version() -> str | None:
    """The Asterisk version if ARI answers, else None."""
    try:
        info = ari_get("asterisk/info")
    except (OSError, urllib.error.URLError, ValueError):
        return None
    assert isinstance(info, dict)
    return str(info["system"]["version"])


def asterisk_sh(
    *args: str, timeout_s: float = 900, env_lines: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run asterisk_conf/asterisk.sh (bounded); `env_lines` sets LINES for `logs`."""
    env = dict(os.environ)
    if env_lines is not None:
        env["LINES"] = str(env_lines)
    return subprocess.run(
        ["bash", str(ASTERISK_SH), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )


@pytest.fixture(scope="session")
def asterisk() -> str:
    """Make sure the real Asterisk answers on ARI; start it if needed. Returns its version."""
    for tool in ("sipp", "tcpdump", "espeak-ng"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run `make system-deps`")
    if os.geteuid() != 0:
        pytest.fail("the e2e tests need root (sipp play_pcap_audio, tcpdump, the Asterisk chroot)")
    version = ari_version()
    if version is None:
        proc = asterisk_sh("up")
        version = ari_version()
        if proc.returncode != 0 or version is None:
            logs = asterisk_sh("logs", timeout_s=30)
            pytest.fail(
                f"Asterisk did not come up (asterisk.sh up exit {proc.returncode}):\n"
                f"{proc.stdout}\n{proc.stderr}\n--- log tail ---\n{logs.stdout}{logs.stderr}"
            )
    return version


@pytest.fixture(scope="session")
def caller_pcm() -> bytes:
    """A Russian caller phrase, 8 kHz s16le (espeak-ng)."""
    return espeak_pcm(CALLER_PHRASE)


Handler = Callable[[AriCall], Awaitable[None]]


class Stack:
    """The bridge side of a call: shared pacer, AudioSocket server, ARI controller."""

    def __init__(self, *, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self.pacer = Pacer()
        self.server = AudioSocketServer(AudioSocketSettings(bind_port=0), pacer=self.pacer)
        self.handler: Handler | None = None
        self.controller: AriController | None = None
        self.run_task: asyncio.Task[None] | None = None

    async def _on_call(self, call: AriCall) -> None:
        assert self.handler is not None, "test did not set stack.handler"
        await self.handler(call)

    async def start(self, *, audiosocket_port: int | None = None) -> None:
        """Start; `audiosocket_port` sends Asterisk elsewhere than our server (failure tests)."""
        await self.server.start()
        port = self.server.port if audiosocket_port is None else audiosocket_port
        settings = AriSettings(audiosocket_host=f"127.0.0.1:{port}", timeout_s=self.timeout_s)
        self.controller = AriController(settings, self.server, self._on_call)
        self.run_task = asyncio.create_task(self.controller.run(), name="ari-controller-run")
        async with asyncio.timeout(15):
            await self.controller.connected.wait()

    async def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Wait until the controller has cleaned up every call."""
        assert self.controller is not None
        tasks = call_tasks()
        if tasks:
            async with asyncio.timeout(timeout_s):
                await asyncio.wait(tasks)
        assert self.controller.active_calls == 0

    async def assert_no_leftovers(self, timeout_s: float = 3.0) -> None:
        """Asterisk holds no channel or bridge any more (it destroys hung-up channels a moment
        after the DELETE returned, so this waits, bounded)."""
        left: tuple[object, object] = ([], [])
        try:
            async with asyncio.timeout(timeout_s):
                # Asterisk's state has no event we could wait on here; poll ARI.
                while True:  # noqa: ASYNC110
                    left = (ari_get("channels"), ari_get("bridges"))
                    if left == ([], []):
                        return
                    await asyncio.sleep(0.05)
        except TimeoutError:
            pytest.fail(f"left over in Asterisk: channels {left[0]}, bridges {left[1]}")

    async def close(self) -> None:
        if self.controller is not None:
            await self.controller.close()
        if self.run_task is not None:
            async with asyncio.timeout(10):
                await self.run_task
        await self.server.close()


def clear_leftovers() -> None:
    """Hang up what an earlier failed test left in Asterisk, so one failure does not cascade."""
    token = base64.b64encode(f"{ARI.username}:{ARI.password}".encode()).decode()
    for kind in ("channels", "bridges"):
        items = ari_get(kind)
        assert isinstance(items, list)
        for item in items:
            req = urllib.request.Request(f"{ARI.url.rstrip('/')}/ari/{kind}/{item['id']}", method="DELETE")
            req.add_header("Authorization", f"Basic {token}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(req, timeout=2).close()


@pytest.fixture
async def stack(asterisk: str) -> AsyncIterator[Stack]:
    clear_leftovers()
    s = Stack()
    await s.start()
    try:
        yield s
    finally:
        await s.close()


def call_tasks() -> list[asyncio.Task[object]]:
    """Tasks the controller runs per call that have not finished."""
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith(("ari-call-", "call-handler-")) and not t.done()
    ]


async def udp_port_bound(port: int, timeout_s: float = 5.0) -> None:
    """Wait until something listens on 127.0.0.1:`port`/udp (sipp as UAS is ready)."""
    needle = f"0100007F:{port:04X}"
    udp = Path("/proc/net/udp")
    async with asyncio.timeout(timeout_s):
        # Another process's readiness has no event to wait on; poll the kernel's socket table.
        while needle not in udp.read_text():  # noqa: ASYNC240, ASYNC110
            await asyncio.sleep(0.02)
