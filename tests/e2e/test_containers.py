"""The containers really run: docker-compose.yml on Podman, a sipp call hears the bot's greeting.

The images are built from docker/ (docker/containers.sh: local debootstrap base images, Podman
with runc, layer cache), and the compose file with the stand-ins overlay runs Asterisk, Redis and
the bridge in a network namespace this test creates, so their 127.0.0.1:5060/8088/9092 never meet
the shared Asterisk on the host's loopback. sipp and tcpdump run in the same namespace; what the
caller heard is counted on the wire.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.hostlock import asterisk_lock
from testkit.sip import (
    UAC_MEDIA_PORT,
    UAC_SIP_PORT,
    Capture,
    analyse,
    netns_prefix,
    render_scenario,
    run_sipp,
    write_rtp_pcap,
)

pytestmark = [pytest.mark.asterisk, pytest.mark.containers]

REPO = Path(__file__).resolve().parents[2]
CONTAINERS_SH = REPO / "docker" / "containers.sh"
BUILD_TIMEOUT_S = 1200  # a clean machine: two debootstraps, apt and pip inside the builds
HANGUP_S = 12.0  # the caller listens this long, then hangs up (the greeting is about 5 s)


@dataclass
class ContainerStack:
    netns: str
    project: str
    env: dict[str, str]

    def compose(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(CONTAINERS_SH), "compose", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def in_netns(self, *cmd: str, timeout_s: float = 10) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*netns_prefix(self.netns), *cmd], capture_output=True, text=True, timeout=timeout_s
        )

    def logs(self, service: str) -> str:
        proc = subprocess.run(
            ["podman", "logs", "--tail", "60", f"{self.project}_{service}_1"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return proc.stdout + proc.stderr

    def running(self) -> set[str]:
        proc = subprocess.run(
            ["podman", "ps", "--filter", f"label=io.podman.compose.project={self.project}"]
            + ["--format", "{{.Names}}"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return set(proc.stdout.split())


def _containers_sh(env: dict[str, str], *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CONTAINERS_SH), *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )


def _voicebridge_app_registered(stack: ContainerStack) -> bool:
    """The bridge's ARI websocket is up: Asterisk lists the Stasis application."""
    proc = stack.in_netns(
        "curl", "-fsS", "--max-time", "2", "-u", "voicebridge:voicebridge",
        "http://127.0.0.1:8088/ari/applications",
    )  # fmt: skip
    if proc.returncode != 0:
        return False
    return any(app.get("name") == "voicebridge" for app in json.loads(proc.stdout))


@pytest.fixture(scope="module")
def stack() -> Iterator[ContainerStack]:
    for tool in ("podman", "runc", "sipp", "tcpdump", "ip", "curl", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run `make system-deps`")
    if os.geteuid() != 0:
        pytest.fail("the container test needs root (rootful Podman, network namespaces, sipp pcap play)")
    tag = f"vbct{os.getpid()}"
    env = dict(os.environ)
    env.update(
        CONTAINERS_CONF=str(REPO / "docker" / "containers.conf"),  # podman run/ps/logs below
        PODMAN_COMPOSE=str(Path(sys.executable).parent / "podman-compose"),
        VOICEBRIDGE_STANDINS="1",
        VOICEBRIDGE_PROJECT=tag,
        VOICEBRIDGE_NETWORK=f"ns:/run/netns/{tag}",
    )
    t0 = time.monotonic()
    build = _containers_sh(env, "build", timeout_s=BUILD_TIMEOUT_S)
    assert build.returncode == 0, f"image build failed:\n{build.stderr[-4000:]}"
    product = _containers_sh(
        {**env, "VOICEBRIDGE_STANDINS": "0"}, "build", "bridge", timeout_s=BUILD_TIMEOUT_S
    )
    assert product.returncode == 0, f"product image build failed:\n{product.stderr[-4000:]}"
    print(f"\nimages built in {time.monotonic() - t0:.1f} s")

    subprocess.run(["ip", "netns", "add", tag], check=True, timeout=10)
    stack = ContainerStack(netns=tag, project=tag, env=env)
    try:
        stack.in_netns("ip", "link", "set", "lo", "up").check_returncode()
        t1 = time.monotonic()
        up = stack.compose("up", "-d", "--no-build")
        assert up.returncode == 0, f"compose up failed:\n{up.stdout}\n{up.stderr}"
        deadline = time.monotonic() + 60
        # Across the namespace there is nothing to wait on but ARI itself; poll it, bounded.
        while not _voicebridge_app_registered(stack):
            if time.monotonic() > deadline:
                pytest.fail(
                    "the bridge did not register with Asterisk within 60 s\n--- asterisk ---\n"
                    f"{stack.logs('asterisk')}\n--- bridge ---\n{stack.logs('bridge')}"
                )
            time.sleep(0.25)
        print(f"stack up (compose up to the bridge registered on ARI) in {time.monotonic() - t1:.1f} s")
        yield stack
    finally:
        stack.compose("down", "-t", "5")
        subprocess.run(["ip", "netns", "delete", tag], timeout=10)


def test_product_image_has_no_test_infrastructure(stack: ContainerStack) -> None:
    run = subprocess.run(
        ["podman", "run", "--rm", "--network", "none", "localhost/voicebridge/bridge:latest", "python", "-c"]
        + ["import bridge.cli, orchestrator\ntry:\n import testkit\nexcept ImportError: print('clean')"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "clean", "testkit/ is importable in the product image"


@pytest.mark.parametrize("image", ["bridge", "bridge-standins"])
def test_the_bridge_runs_as_an_unprivileged_user(stack: ContainerStack, image: str) -> None:
    run = subprocess.run(
        ["podman", "run", "--rm", "--network", "none", f"localhost/voicebridge/{image}:latest", "id", "-u"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() != "0", f"the {image} image runs as root"
    # The running service too (the compose stack's bridge container).
    ps = subprocess.run(
        ["podman", "exec", f"{stack.project}_bridge_1", "id", "-u"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ps.returncode == 0, ps.stderr
    assert ps.stdout.strip() != "0", "the bridge container's process runs as root"


async def test_sipp_call_hears_the_greeting(stack: ContainerStack, tmp_path: Path) -> None:
    pcap = tmp_path / "caller.pcap"
    write_rtp_pcap(pcap, b"", lead_silence_s=0, total_s=HANGUP_S)  # the caller only listens
    scenario = render_scenario(
        "uac_hangup", tmp_path, exten="100", caller="79990001122", pcap=pcap, hangup_ms=int(HANGUP_S * 1000)
    )
    capture = tmp_path / "call.pcap"
    async with (
        asterisk_lock(),
        Capture(capture, f"udp and (port {UAC_MEDIA_PORT} or dst port {UAC_SIP_PORT})", netns=stack.netns),
    ):
        sipp = await run_sipp(
            scenario,
            local_port=UAC_SIP_PORT,
            media_port=UAC_MEDIA_PORT,
            work_dir=tmp_path,
            timeout_s=HANGUP_S + 20,
            netns=stack.netns,
        )
    logs = f"--- asterisk ---\n{stack.logs('asterisk')}\n--- bridge ---\n{stack.logs('bridge')}"
    assert sipp.ok, f"{sipp.describe()}\n{logs}"
    a = analyse(capture, media_port=UAC_MEDIA_PORT, sip_port=UAC_SIP_PORT)
    voiced = a.voiced
    print(f"RTP to the caller: {len(a.audio)} packets, {len(voiced)} non-silent")
    # The greeting (several seconds of speech) reached the caller, not silence.
    assert len(voiced) > 100, f"only {len(voiced)} non-silent RTP packets of {len(a.audio)}\n{logs}"
    assert stack.running() == {f"{stack.project}_{s}_1" for s in ("asterisk", "redis", "bridge")}
