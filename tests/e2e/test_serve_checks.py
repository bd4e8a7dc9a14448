"""`voicebridge serve` checks its start against the real Asterisk 22: without credentials it exits
naming the settings; with a wrong ARI password it exits naming `[ari] password` (ARI's 401)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from testkit.ports import free_port

pytestmark = pytest.mark.asterisk

ROOT = Path(__file__).resolve().parents[2]


async def _serve(*args: str, env: dict[str, str]) -> tuple[int, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBRIDGE_")}
    env = {"VOICEBRIDGE_AUDIOSOCKET__BIND_PORT": str(free_port()), **env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge.cli",
        "serve",
        *args,
        cwd=ROOT,
        env={**base, **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_serve_without_credentials_exits_naming_the_settings(asterisk: str) -> None:
    rc, out = await _serve(env={})
    assert rc == 2, out
    assert "[yandex] api_key (VOICEBRIDGE_YANDEX__API_KEY)" in out, out
    assert "[openai] api_key (VOICEBRIDGE_OPENAI__API_KEY)" in out, out
    assert "ARI" not in out, out  # the real ARI accepted the default login
    assert "Traceback" not in out, out


async def test_serve_with_a_wrong_ari_password_exits_naming_it(asterisk: str) -> None:
    rc, out = await _serve("--standins", env={"VOICEBRIDGE_ARI__PASSWORD": "not-the-password"})
    assert rc == 2, out
    assert "[ari] password (VOICEBRIDGE_ARI__PASSWORD): ARI at http://127.0.0.1:8088/ refused user" in out, (
        out
    )
    assert "not-the-password" not in out and "Traceback" not in out, out
