"""The real Asterisk from asterisk_conf/ is up, loaded what we need, and listens on loopback only."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.e2e.conftest import ari_get, asterisk_sh

pytestmark = pytest.mark.asterisk

REQUIRED_MODULES = {
    "res_ari",
    "res_ari_channels",
    "res_ari_bridges",
    "res_ari_events",
    "res_stasis",
    "app_stasis",
    "res_http_websocket",
    "res_audiosocket",
    "chan_audiosocket",
    "app_audiosocket",
    "chan_pjsip",
    "res_pjsip",
    "res_rtp_asterisk",
    "bridge_simple",
    "bridge_softmix",
    "codec_ulaw",
    "codec_alaw",
    "func_uuid",
}


def test_version_is_22(asterisk: str) -> None:
    assert asterisk.startswith("22."), asterisk


def test_required_modules_run(asterisk: str) -> None:
    modules = ari_get("asterisk/modules")
    assert isinstance(modules, list)
    running = {m["name"].removesuffix(".so") for m in modules if m["status"] == "Running"}
    assert running >= REQUIRED_MODULES, sorted(REQUIRED_MODULES - running)
    # Bind 0.0.0.0 on their own: must stay unloaded.
    assert not running & {"chan_iax2", "pbx_dundi", "chan_unistim"}


def test_trunk_endpoint_exists(asterisk: str) -> None:
    trunk = ari_get("endpoints/PJSIP/trunk")
    assert isinstance(trunk, dict)
    assert trunk["resource"] == "trunk"


def test_startup_log_has_no_errors(asterisk: str) -> None:
    logs = asterisk_sh("logs", timeout_s=30, env_lines=5000)
    assert logs.returncode == 0, logs.stderr
    lines = logs.stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if "loader.c: " in line and "modules will be loaded" in line]
    assert starts, "no startup found in the log"
    ready = [i for i, line in enumerate(lines) if "Asterisk Ready." in line and i > starts[-1]]
    assert ready, "the last startup did not reach 'Asterisk Ready.'"
    startup = lines[starts[-1] : ready[0]]
    problems = [line for line in startup if re.search(r"\b(ERROR|WARNING)\[", line)]
    assert problems == [], "\n".join(problems)


def test_listens_on_loopback_only(asterisk: str) -> None:
    out = subprocess.run(["ss", "-Hlntup"], capture_output=True, text=True, check=True, timeout=10).stdout
    mine = [line.split() for line in out.splitlines() if '"asterisk"' in line]
    tcp = {cols[4] for cols in mine if cols[0] == "tcp"}
    assert tcp == {"127.0.0.1:8088", "127.0.0.1:5038"}, tcp
    udp = {cols[4] for cols in mine if cols[0] == "udp"}
    assert "127.0.0.1:5060" in udp, udp
    # Besides SIP, only pjproject's DNS resolver sockets may use the wildcard address: res_pjsip
    # creates them at startup (seen with strace) on ephemeral ports, and they accept replies to
    # their own queries only. No fixed service port does.
    for addr in udp - {"127.0.0.1:5060"}:
        host, _, port = addr.rpartition(":")
        assert host in {"0.0.0.0", "[::]"} and int(port) >= 32768, addr
