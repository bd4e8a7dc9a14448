"""`voicebridge serve` as a user runs it: a real process, stopped by a signal; bad settings refused."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _spawn(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge.cli",
        *args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_serve_starts_and_stops_cleanly_on_a_signal(sig: signal.Signals) -> None:
    # No Asterisk on this port: the controller keeps retrying, the service stays up and stops on demand.
    env = {
        "VOICEBRIDGE_ARI__URL": f"http://127.0.0.1:{_free_port()}/",
        "VOICEBRIDGE_AUDIOSOCKET__BIND_PORT": str(_free_port()),
        "VOICEBRIDGE_ADMIN__PORT": "0",
    }
    proc = await _spawn("serve", "--standins", env=env)
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(60):
            while "voicebridge serving" not in (line := (await proc.stdout.readline()).decode()):
                assert line, f"serve exited early (rc {await proc.wait()}):\n{''.join(seen)}"
                seen.append(line)
        proc.send_signal(sig)
        async with asyncio.timeout(20):
            rest = (await proc.stdout.read()).decode()
            rc = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert rc == 0, rest
    assert "Traceback" not in rest, rest


async def test_serve_refuses_invalid_settings_naming_the_setting() -> None:
    proc = await _spawn("serve", env={"VOICEBRIDGE_VAD__MIN_SPEECH_MS": "5"})
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert (
        "vad.min_speech_ms = '5' (environment variable VOICEBRIDGE_VAD__MIN_SPEECH_MS): "
        "Input should be greater than or equal to 20" in out.decode()
    ), out.decode()


async def test_serve_refuses_a_bad_settings_file_naming_file_section_and_field(tmp_path: Path) -> None:
    config = tmp_path / "voicebridge.toml"
    config.write_text('[ari]\npassword = "p@ss word"\n', encoding="utf-8")
    proc = await _spawn("serve", "--config", str(config), env={})
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    text = out.decode()
    assert f"ari.password ({config}: [ari] password): Value error, use 1 to 128 ASCII letters" in text, text
    assert "p@ss word" not in text  # secrets are not echoed


async def test_map_lint_names_file_and_json_path_of_a_broken_map(tmp_path: Path) -> None:
    text = (ROOT / "dialogue_maps" / "cleaning_quote.ru.json").read_text(encoding="utf-8")
    broken = tmp_path / "broken.json"
    broken.write_text(text.replace('"agree": "ask_day"', '"agree": "nowhere"'), encoding="utf-8")
    proc = await _spawn("map", "lint", str(ROOT / "dialogue_maps"), str(broken), env={})
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert (
        f"{broken}: $.states.quote.transitions.agree: error: unknown target state 'nowhere'" in out.decode()
    )
