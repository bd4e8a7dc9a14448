"""`serve`'s checks before it listens (bridge/preflight.py), in process, against real sockets:
a real redis-server, a real HTTP server standing in for ARI, real listening sockets."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bridge.preflight import Problem, StartRefused, preflight
from bridge.settings import Settings, load_settings
from orchestrator.cache.redis_cache import RedisAudioCache
from orchestrator.cache.redis_settings import RedisSettings
from orchestrator.domain.errors import ConfigError
from testkit.fakes import clip
from testkit.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "dialogue_maps" / "cleaning_quote.ru.json"


def _settings(**env: str) -> Settings:
    """Settings that pass, with `env` (VOICEBRIDGE_* names without the prefix) on top."""
    base = {
        "YANDEX__API_KEY": "test-key",
        "OPENAI__API_KEY": "test-key",
        "ARI__URL": f"http://127.0.0.1:{free_port()}/",  # nobody there: a warning only
        "AUDIOSOCKET__BIND_PORT": "0",
    }
    return load_settings(environ={f"VOICEBRIDGE_{k}": v for k, v in {**base, **env}.items()})


def _named(problems: list[Problem]) -> dict[str, str]:
    return {".".join(p.setting): str(p) for p in problems}


@pytest.fixture
async def ari_server() -> AsyncIterator[str]:
    """An HTTP server answering /ari/asterisk/info: 200 for voicebridge:voicebridge, else 401."""

    async def info(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if auth != "Basic dm9pY2VicmlkZ2U6dm9pY2VicmlkZ2U=":  # voicebridge:voicebridge
            return web.Response(status=401)
        return web.json_response({"system": {"version": "22"}})

    app = web.Application()
    app.router.add_get("/ari/asterisk/info", info)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def test_a_complete_configuration_passes(ari_server: str) -> None:
    assert await preflight(_settings(ARI__URL=ari_server)) == []


async def test_no_credentials_names_both_settings_and_the_standins() -> None:
    problems = await preflight(load_settings(environ={"VOICEBRIDGE_AUDIOSOCKET__BIND_PORT": "0"}))
    named = _named(problems)
    assert set(named) == {"yandex.api_key", "openai.api_key"}
    assert named["yandex.api_key"].startswith("[yandex] api_key (VOICEBRIDGE_YANDEX__API_KEY): ")
    assert "VOICEBRIDGE_YANDEX__SERVICE_ACCOUNT_KEY_FILE" in named["yandex.api_key"]
    assert named["openai.api_key"].startswith("[openai] api_key (VOICEBRIDGE_OPENAI__API_KEY): ")
    message = str(StartRefused(problems))
    assert message.splitlines()[0] == "cannot start, 2 problems:"
    assert message.splitlines()[-1].endswith("voicebridge serve --standins")


async def test_the_standins_need_no_speechkit_credential() -> None:
    problems = await preflight(_settings(YANDEX__API_KEY="", YANDEX__TLS="false"))
    assert problems == []


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read the service account key"),
        ("{not json", "not valid JSON"),
        ("{}", "'id' is missing"),
    ],
)
async def test_a_service_account_key_file_must_exist_and_parse(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    key = tmp_path / "sa-key.json"
    if content is not None:
        key.write_text(content, encoding="utf-8")
    problems = await preflight(_settings(YANDEX__API_KEY="", YANDEX__SERVICE_ACCOUNT_KEY_FILE=str(key)))
    named = _named(problems)
    assert list(named) == ["yandex.service_account_key_file"]
    assert expected in named["yandex.service_account_key_file"]


async def test_a_map_with_lint_errors_is_refused_with_its_json_paths(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    text = MAP.read_text(encoding="utf-8").replace('"agree": "ask_day"', '"agree": "nowhere"')
    broken.write_text(text, encoding="utf-8")
    problems = await preflight(_settings(DIALOGUE_MAP=str(broken)))
    assert [str(p) for p in problems] == [
        f"dialogue_map (VOICEBRIDGE_DIALOGUE_MAP): {broken}: $.states.quote.transitions.agree: "
        "unknown target state 'nowhere' (see `voicebridge map lint`)"
    ]


async def test_each_numbers_map_is_checked_and_named_by_its_number() -> None:
    problems = await preflight(_settings(NUMBERS__200="/nowhere/dental.json", NUMBERS__300=str(MAP)))
    assert list(_named(problems)) == ["numbers.200"]
    assert str(problems[0]).startswith("[numbers] 200 (VOICEBRIDGE_NUMBERS__200): /nowhere/dental.json")


def test_a_bad_dialled_number_is_refused_at_load() -> None:
    with pytest.raises(ConfigError, match=r"numbers .*'1 2' is not a dialled number"):
        _settings(**{"NUMBERS__1 2": "x.json"})


async def test_a_missing_map_is_named() -> None:
    problems = await preflight(_settings(DIALOGUE_MAP="/nowhere/map.json"))
    assert list(_named(problems)) == ["dialogue_map"]
    assert "/nowhere/map.json" in str(problems[0])


def _map_with_a_textless_key(tmp_path: Path) -> tuple[Path, str]:
    data = json.loads(MAP.read_text(encoding="utf-8"))
    key = "static:recorded_greeting"  # a studio recording, not synthesized: no text in $.audio
    data["states"][data["initial_state"]]["system_response"]["playlist"] = [{"type": "cache", "key": key}]
    path = tmp_path / "recorded.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path, key


async def test_a_key_without_text_must_be_in_redis_already(tmp_path: Path, redis_url: str) -> None:
    path, key = _map_with_a_textless_key(tmp_path)
    problems = await preflight(_settings(DIALOGUE_MAP=str(path), REDIS__URL=redis_url))
    assert [".".join(p.setting) for p in problems] == ["dialogue_map"]
    assert f"audio key {key!r} has no text in $.audio and is not in the cache" in str(problems[0])
    cache = RedisAudioCache(RedisSettings(url=redis_url))
    try:
        await cache.put(key, clip(5, 0.2))
        assert await preflight(_settings(DIALOGUE_MAP=str(path), REDIS__URL=redis_url)) == []
    finally:
        await cache.aclose()


async def test_redis_that_does_not_answer_is_a_warning_while_tts_can_say_every_phrase(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with caplog.at_level(logging.WARNING, logger="bridge.preflight"):
        assert await preflight(_settings(REDIS__URL=url)) == []
    said = [r.getMessage() for r in caplog.records if r.name == "bridge.preflight"]
    [redis] = [m for m in said if "Redis" in m]
    assert "does not answer" in redis and "serving anyway" in redis and "hunter2" not in redis


async def test_redis_that_does_not_answer_is_refused_when_no_tts_can_fill_in() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    problems = await preflight(_settings(REDIS__URL=url, ESPEAK__BINARY="no-such-espeak"))
    named = _named(problems)
    assert list(named) == ["redis.url", "espeak.binary"]
    assert "does not answer" in named["redis.url"] and "hunter2" not in named["redis.url"]


async def test_redis_that_does_not_answer_is_refused_for_a_key_only_redis_holds(tmp_path: Path) -> None:
    path, key = _map_with_a_textless_key(tmp_path)
    url = f"redis://127.0.0.1:{free_port()}/0"
    named = _named(await preflight(_settings(DIALOGUE_MAP=str(path), REDIS__URL=url)))
    assert list(named) == ["redis.url", "dialogue_map"]
    assert key in named["dialogue_map"]


async def test_phrases_to_synthesize_need_a_tts_that_can_run() -> None:
    problems = await preflight(_settings(ESPEAK__BINARY="no-such-espeak"))
    named = _named(problems)
    assert list(named) == ["espeak.binary"]
    assert "'no-such-espeak' is not on PATH" in named["espeak.binary"]


async def test_a_port_in_use_and_a_bad_bind_host_are_named() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        named = _named(await preflight(_settings(AUDIOSOCKET__BIND_PORT=str(port))))
    assert list(named) == ["audiosocket.bind_port"]
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in named["audiosocket.bind_port"]
    for host, expected in (
        ("10.255.255.77", "not an address of this machine"),
        ("no-such-host.invalid", "does not resolve"),
    ):
        named = _named(await preflight(_settings(AUDIOSOCKET__BIND_HOST=host)))
        assert list(named) == ["audiosocket.bind_host"], named
        assert expected in named["audiosocket.bind_host"]


async def test_ari_refusing_the_login_is_a_problem(ari_server: str) -> None:
    named = _named(await preflight(_settings(ARI__URL=ari_server, ARI__PASSWORD="wrong")))
    assert list(named) == ["ari.password"]
    assert "refused user 'voicebridge' (HTTP 401)" in named["ari.password"]
    assert "wrong" not in named["ari.password"]


async def test_ari_not_answering_is_only_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    with caplog.at_level(logging.WARNING, logger="bridge.preflight"):
        assert await preflight(_settings(ARI__URL=f"http://127.0.0.1:{port}/")) == []
    [record] = [r for r in caplog.records if r.name == "bridge.preflight"]
    assert f"ARI at http://127.0.0.1:{port}/ does not answer" in record.getMessage()
    assert "the controller retries every 0.5 to 2 s" in record.getMessage()


async def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{}", encoding="utf-8")
    problems = await preflight(
        load_settings(
            environ={
                "VOICEBRIDGE_DIALOGUE_MAP": str(broken),
                "VOICEBRIDGE_AUDIOSOCKET__BIND_HOST": "no-such-host.invalid",
            }
        )
    )
    settings = {p.setting[0] for p in problems}
    assert {"yandex", "openai", "dialogue_map", "audiosocket"} <= settings


async def test_ari_over_tls_is_checked_with_the_configured_ca(tmp_path: Path) -> None:
    from testkit.fake_ari import FakeAri
    from testkit.tls import make_ca_and_server_cert

    certs = make_ca_and_server_cert(tmp_path)
    fake = FakeAri(ssl_context=certs.server_context())
    await fake.start()
    try:
        url = fake.url
        assert await preflight(_settings(ARI__URL=url, ARI__CA_FILE=str(certs.ca_file))) == []
        # The system's CAs do not know the certificate: a problem to fix, not "ARI is down".
        named = _named(await preflight(_settings(ARI__URL=url)))
        assert list(named) == ["ari.ca_file"] and "TLS failed" in named["ari.ca_file"]
    finally:
        await fake.close()


async def test_a_vad_engine_that_does_not_load_is_named(
    ari_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bridge.vad_engines

    def missing(engine: str, aggressiveness: int = 2) -> bridge.vad_engines.SpeechClassifier:
        raise OSError("libc++.so.1: cannot open shared object file")

    monkeypatch.setattr(bridge.vad_engines, "classifier", missing)
    # TEN VAD (opt-in) without libc++1: the fix names the system package.
    problems = await preflight(_settings(ARI__URL=ari_server, VAD__ENGINE="ten"))
    assert [p.setting for p in problems] == [("vad", "engine")]
    assert "libc++1" in str(problems[0]) and '"webrtc"' in str(problems[0])
    # The default (Silero) missing: reinstall the package.
    problems = await preflight(_settings(ARI__URL=ari_server))
    assert [p.setting for p in problems] == [("vad", "engine")]
    assert '"silero"' in str(problems[0]) and "reinstall" in str(problems[0])
