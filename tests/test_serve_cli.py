"""`voicebridge serve` as a user runs it: a real process, stopped by a signal; bad settings refused."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from testkit.ports import free_port

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.mark.parametrize(
    ("sig", "event_loop"),
    [(signal.SIGINT, "asyncio"), (signal.SIGTERM, "asyncio"), (signal.SIGTERM, "uvloop")],
)
async def test_serve_starts_and_stops_cleanly_on_a_signal(sig: signal.Signals, event_loop: str) -> None:
    # No Asterisk on this port: the controller keeps retrying, the service stays up and stops on demand.
    env = {
        "VOICEBRIDGE_ARI__URL": f"http://127.0.0.1:{free_port()}/",
        "VOICEBRIDGE_AUDIOSOCKET__BIND_PORT": str(free_port()),
        "VOICEBRIDGE_ADMIN__PORT": "0",
        "VOICEBRIDGE_SERVICE__EVENT_LOOP": event_loop,
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
    assert f"event loop: {event_loop}" in "".join(seen)


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


def _clean_env(**settings: str) -> dict[str, str]:
    """ARI and AudioSocket on free loopback ports, then `settings` (see `_run`: nothing else)."""
    return {
        "VOICEBRIDGE_ARI__URL": f"http://127.0.0.1:{free_port()}/",
        "VOICEBRIDGE_AUDIOSOCKET__BIND_PORT": str(free_port()),
        **settings,
    }


async def _run(*args: str, env: dict[str, str], stdin: bytes | None = None) -> tuple[int, str]:
    """Run the CLI to its end with only `env`'s VOICEBRIDGE_* variables; (exit status, output)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBRIDGE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge.cli",
        *args,
        cwd=ROOT,
        env={**base, **env},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(stdin or b""), 60)
    finally:
        if proc.returncode is None:  # timed out: never leave a service running behind the test
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_serve_without_credentials_exits_naming_the_settings_and_the_standins() -> None:
    rc, out = await _run("serve", env=_clean_env())
    assert rc == 2, out
    assert "Traceback" not in out, out
    assert "voicebridge: cannot start, 2 problems:" in out, out
    assert "  [yandex] api_key (VOICEBRIDGE_YANDEX__API_KEY): Yandex SpeechKit" in out, out
    assert "  [openai] api_key (VOICEBRIDGE_OPENAI__API_KEY): " in out, out
    assert "voicebridge serve --standins" in out, out
    assert "voicebridge serving" not in out and "voicebridge started" not in out


async def test_serve_refuses_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _clean_env(VOICEBRIDGE_AUDIOSOCKET__BIND_PORT=str(port))
        rc, out = await _run("serve", "--standins", env=env)
    assert rc == 2, out
    assert "Traceback" not in out, out
    assert (
        f"[audiosocket] bind_port (VOICEBRIDGE_AUDIOSOCKET__BIND_PORT): cannot listen on 127.0.0.1:{port}: "
        "the port is in use" in out
    ), out
    assert "--standins" not in out.split("cannot start")[1], out  # no hint to what is already used


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("no-such-host.invalid", "the host name does not resolve"),
        ("10.255.255.77", "not an address of this machine"),
    ],
)
async def test_serve_refuses_a_bad_bind_host(host: str, expected: str) -> None:
    rc, out = await _run("serve", "--standins", env=_clean_env(VOICEBRIDGE_AUDIOSOCKET__BIND_HOST=host))
    assert rc == 2, out
    assert "Traceback" not in out, out
    assert f"[audiosocket] bind_host (VOICEBRIDGE_AUDIOSOCKET__BIND_HOST): cannot listen on {host}:" in out, (
        out
    )
    assert expected in out, out


# Redis not answering is refused only when no TTS could say the phrases instead (here: espeak-ng
# missing); with a working TTS it is a warning (tests/test_preflight.py).
_NO_TTS = {"VOICEBRIDGE_PROVIDERS__TTS": "espeak", "VOICEBRIDGE_ESPEAK__BINARY": "no-such-espeak"}


@pytest.mark.parametrize(
    ("url", "expected", "extra"),
    [
        (
            "127.0.0.1:6379",
            "redis.url = '127.0.0.1:6379' (environment variable VOICEBRIDGE_REDIS__URL): ",
            {},
        ),
        (
            "redis://127.0.0.1:{port}/0",
            "[redis] url (VOICEBRIDGE_REDIS__URL): Redis at 127.0.0.1:",
            _NO_TTS,
        ),
    ],
)
async def test_serve_refuses_a_bad_or_unreachable_redis(
    url: str, expected: str, extra: dict[str, str]
) -> None:
    # The unreachable port is bound (never listening) for the whole test, so no other process on
    # the machine (a Redis another test started) can take it between choosing and connecting.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        url = url.format(port=held.getsockname()[1])
        # No --standins: they would bring a SpeechKit TTS that can say every phrase, and then an
        # unreachable Redis is only a warning.
        rc, out = await _run("serve", env=_clean_env(VOICEBRIDGE_REDIS__URL=url, **extra))
    assert rc == 2, out
    assert "Traceback" not in out, out
    assert expected in out, out


@pytest.mark.parametrize("bad", ["inf", "nan", "-5"])
async def test_serve_refuses_a_timeout_that_is_not_finite_and_positive(bad: str) -> None:
    rc, out = await _run("serve", env=_clean_env(VOICEBRIDGE_CALL__SETUP_TIMEOUT_S=bad))
    assert rc == 2, out
    assert f"call.setup_timeout_s = '{bad}' (environment variable VOICEBRIDGE_CALL__SETUP_TIMEOUT_S): " in out
    assert "Traceback" not in out, out


async def test_chat_runs_the_text_mode() -> None:
    rc, out = await _run(
        "chat", "dialogue_maps/cleaning_quote.ru.json", env={}, stdin="нет спасибо\n".encode()
    )
    assert rc == 0, out
    assert "[static:greeting]" in out and "[static:goodbye_refusal]" in out, out
    assert "Звонок окончен: end_call" in out, out


async def test_chat_names_a_missing_map() -> None:
    rc, out = await _run("chat", "no/such/map.json", env={})
    assert rc == 2, out
    assert "no/such/map.json" in out and "Traceback" not in out, out


async def test_version_comes_from_the_package_metadata() -> None:
    import importlib.metadata

    rc, out = await _run("--version", env={})
    assert rc == 0
    assert out.strip() == f"voicebridge {importlib.metadata.version('voicebridge')}"


async def test_help_of_each_command_lists_its_settings_from_the_models() -> None:
    from bridge.settings_help import settings_rows

    rc, out = await _run("serve", "--help", env={})
    assert rc == 0
    rows = settings_rows()
    assert len(rows) > 80
    for key, env, default in rows:  # every setting, its variable and its default, on one line
        assert any(
            key in line and env in line and line.rstrip().endswith(default) for line in out.splitlines()
        ), key
    rc, out = await _run("dial", "--help", env={})
    assert "VOICEBRIDGE_AMI__SECRET" in out and "VOICEBRIDGE_YANDEX__API_KEY" not in out, out
    rc, out = await _run("cache", "warm", "--help", env={})
    assert "VOICEBRIDGE_REDIS__URL" in out and "VOICEBRIDGE_ESPEAK__BINARY" in out, out
    for command in (["chat"], ["map", "lint"], ["demo"]):
        rc, out = await _run(*command, "--help", env={})
        assert rc == 0 and "Settings: none" in out, (command, out)
