"""Settings: one model per component, every knob reachable from TOML and the environment, each
component handed its own model object, bad values named with where they came from, one rule for
every ARI/AMI name and password."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from bridge import ami_events
from bridge import app as app_module
from bridge.ami import AmiError, AmiSettings, originate
from bridge.app import VoicebridgeApp
from bridge.ari import AriSettings
from bridge.asterisk_names import check_ami_secret, check_asterisk_name
from bridge.settings import ENV_PREFIX, Settings, env_var, load_settings
from orchestrator.cache.redis_settings import RedisSettings
from orchestrator.domain.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

# Every section that is a component's own settings model.
SECTIONS = [
    name
    for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, type) and dataclasses.is_dataclass(field.annotation)
]
# Values that a type alone does not tell (a valid non-default value for these fields).
SPECIAL = {
    ("ari", "audiosocket_host"): "10.0.0.7:4000",
    ("redis", "url"): "redis://10.0.0.7:6380/1",
    ("yandex", "stt_endpoint"): "10.0.0.7:4001",
    ("yandex", "tts_endpoint"): "10.0.0.7:4002",
    ("yandex", "iam_endpoint"): "10.0.0.7:4003",
    ("openai", "base_url"): "http://10.0.0.7:4004/v1",
    ("ari", "url"): "https://pbx.example:8089/",
    ("ari", "ca_file"): __file__,  # any readable file
    ("yandex", "speed"): 1.5,
    ("echo", "search_ms"): 320,  # whole 20 ms frames
    ("espeak", "speed_wpm"): 150,
    ("openai", "intent_arbiter_format"): "json_object",
    ("log", "format"): "json",
    ("campaign", "amd"): "bot",
    ("log", "level"): "DEBUG",
    ("service", "event_loop"): "uvloop",
    ("vad", "engine"): "webrtc",
    ("vad", "threshold"): 0.6,
}


def _knobs() -> list[tuple[str, str]]:
    return [(s, f.name) for s in SECTIONS for f in dataclasses.fields(Settings.model_fields[s].annotation)]  # type: ignore[arg-type]


def _other_value(section: str, field: dataclasses.Field[Any]) -> Any:
    """A valid value different from the default, for `field` of `section`."""
    if (section, field.name) in SPECIAL:
        return SPECIAL[(section, field.name)]
    default = field.default
    hint = typing.get_type_hints(Settings.model_fields[section].annotation, include_extras=True)[field.name]
    base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default + 0.5
    if isinstance(default, str) or default is None:
        assert base is str or (isinstance(base, types.UnionType) and str in typing.get_args(base)), (
            section,
            field,
        )
        return "x1"
    raise AssertionError(f"no test value for {section}.{field.name} ({hint})")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def test_sections_are_the_components_models() -> None:
    assert set(SECTIONS) == {
        "ari",
        "ami",
        "audiosocket",
        "echo",
        "gc",
        "interruption",
        "vad",
        "pacer",
        "playout",
        "call",
        "yandex",
        "openai",
        "espeak",
        "redis",
        "breaker",
        "admin",
        "log",
        "service",
        "registry",
        "recording",
        "campaign",
    }
    assert {m.__module__ for m in (Settings.model_fields[s].annotation for s in SECTIONS)} == {
        "bridge.ari.settings",
        "bridge.ami",
        "bridge.audiosocket.settings",
        "bridge.vad_settings",
        "bridge.echo_gate",
        "bridge.gc_policy",
        "orchestrator.interruption_settings",
        "bridge.pacer",
        "bridge.playout",
        "orchestrator.call_settings",
        "orchestrator.breaker",
        "orchestrator.adapters.speechkit",
        "orchestrator.adapters.openai_settings",
        "orchestrator.adapters.tts.espeak_settings",
        "orchestrator.cache.redis_settings",
        "bridge.admin",
        "bridge.recording",
        "bridge.campaign",
        "bridge.logs",
        "bridge.event_loop",
        "bridge.registry",
    }


@pytest.mark.parametrize(("section", "name"), _knobs())
def test_every_knob_loads_from_toml_and_from_the_environment(section: str, name: str, tmp_path: Path) -> None:
    field = next(f for f in dataclasses.fields(Settings.model_fields[section].annotation) if f.name == name)  # type: ignore[arg-type]
    value = _other_value(section, field)
    config = tmp_path / "voicebridge.toml"
    config.write_text(f"[{section}]\n{name} = {_toml(value)}\n", encoding="utf-8")
    from_file = load_settings(str(config), environ={})
    assert getattr(getattr(from_file, section), name) == value
    env_value = "false" if value is False else "true" if value is True else str(value)
    from_env = load_settings(None, environ={env_var(section, name): env_value})
    assert getattr(getattr(from_env, section), name) == value


def test_top_level_settings_and_providers_load_too(tmp_path: Path) -> None:
    config = tmp_path / "voicebridge.toml"
    config.write_text(
        'dialogue_map = "m.json"\nredis_url = "redis://r:6379/0"\n[providers]\ntts = "yandex"\n',
        encoding="utf-8",
    )
    s = load_settings(
        str(config),
        environ={
            "VOICEBRIDGE_METRICS_FILE": "/tmp/m.jsonl",
            "VOICEBRIDGE_PROVIDERS__INTENTS": "openai",
            "VOICEBRIDGE_CACHE": "/var/cache/x",  # the Asterisk scripts' variable: not a setting
        },
    )
    assert (s.dialogue_map, s.redis_url, s.metrics_file) == ("m.json", "redis://r:6379/0", "/tmp/m.jsonl")
    assert (s.providers.tts, s.providers.intents) == ("yandex", "openai")


def test_the_redis_url_is_accepted_at_the_top_level_and_in_its_section() -> None:
    top = load_settings(None, environ={"VOICEBRIDGE_REDIS_URL": "redis://a:6379/0"})
    assert top.redis == RedisSettings(url="redis://a:6379/0") and top.redis_url == "redis://a:6379/0"
    env = {"VOICEBRIDGE_REDIS__URL": "redis://b:6379/0", "VOICEBRIDGE_REDIS__TIMEOUT_S": "0.5"}
    assert load_settings(None, environ=env).redis == RedisSettings(url="redis://b:6379/0", timeout_s=0.5)
    assert Settings(redis_url="redis://c:6379/0").redis.url == "redis://c:6379/0"  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="set the Redis URL once"):
        load_settings(None, environ={**env, "VOICEBRIDGE_REDIS_URL": "redis://a:6379/0"})


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "voicebridge.toml"
    config.write_text("[vad]\nhangover_ms = 500\nmin_speech_ms = 300\n", encoding="utf-8")
    s = load_settings(str(config), environ={"VOICEBRIDGE_VAD__HANGOVER_MS": "600"})
    assert (s.vad.hangover_ms, s.vad.min_speech_ms) == (600, 300)


def test_readme_example_settings_load(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Settings") :]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    assert blocks
    for i, block in enumerate(blocks):
        path = tmp_path / f"readme-{i}.toml"
        path.write_text(block, encoding="utf-8")
        load_settings(str(path), environ={})


# --- bad values are named, with where they came from


def test_a_bad_value_in_the_file_names_file_section_and_field(tmp_path: Path) -> None:
    config = tmp_path / "voicebridge.toml"
    config.write_text("[audiosocket]\nuuid_timeout_s = 0\n[vad]\naggressiveness = 7\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(str(config), environ={})
    message = str(err.value)
    assert f"audiosocket.uuid_timeout_s = 0 ({config}: [audiosocket] uuid_timeout_s): " in message
    assert f"vad.aggressiveness = 7 ({config}: [vad] aggressiveness): " in message


def test_a_bad_value_in_the_environment_names_the_variable(tmp_path: Path) -> None:
    config = tmp_path / "voicebridge.toml"
    config.write_text("[pacer]\nmax_catchup = 2\n", encoding="utf-8")
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "pacer.max_catchup = 'lots' (environment variable VOICEBRIDGE_PACER__MAX_CATCHUP): Input should be a valid integer"
        ),
    ):
        load_settings(str(config), environ={"VOICEBRIDGE_PACER__MAX_CATCHUP": "lots"})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"VOICEBRIDGE_VAD__HANGOVR_MS": "300"},
            "vad.hangovr_ms = '300' (environment variable VOICEBRIDGE_VAD__HANGOVR_MS): no such setting",
        ),
        (
            {"VOICEBRIDGE_RADIS_URL": "x"},
            "radis_url = 'x' (environment variable VOICEBRIDGE_RADIS_URL): no such setting",
        ),
        ({"VOICEBRIDGE_PROVIDERS__TTS": "festival"}, "providers.tts = 'festival' (environment variable"),
        (
            {"VOICEBRIDGE_YANDEX__CHUNK_MS": "5"},
            "yandex.chunk_ms = '5' (environment variable VOICEBRIDGE_YANDEX__CHUNK_MS)",
        ),
    ],
)
def test_unknown_and_invalid_settings_are_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(None, environ=environ)


def test_a_typo_in_a_file_section_is_named(tmp_path: Path) -> None:
    config = tmp_path / "voicebridge.toml"
    config.write_text("[playout]\nhigh_water = 80\n", encoding="utf-8")
    with pytest.raises(
        ConfigError,
        match=re.escape(f"playout.high_water = 80 ({config}: [playout] high_water): no such setting"),
    ):
        load_settings(str(config), environ={})


def test_secrets_are_never_echoed() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(
            None, environ={"VOICEBRIDGE_AMI__SECRET": "top\nsecret", "VOICEBRIDGE_ARI__PASSWORD": "hunter 2"}
        )
    message = str(err.value)
    assert "top\nsecret" not in message and "hunter 2" not in message
    assert "ami.secret (environment variable VOICEBRIDGE_AMI__SECRET)" in message
    assert "ari.password (environment variable VOICEBRIDGE_ARI__PASSWORD)" in message


def test_unreadable_and_broken_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nowhere.toml: cannot read settings"):
        load_settings(str(tmp_path / "nowhere.toml"), environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[vad\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="broken.toml: invalid TOML"):
        load_settings(str(broken), environ={})


# --- one rule for every ARI/AMI name and password

GOOD = ["voicebridge", "Alnum123", "vb.user", "a-b_c~d"]
BAD = ["", "p&ss", "two words", "line\nbreak", "пароль", "a:b", "x" * 129]
CREDENTIALS = [
    ("ari", "username"),
    ("ari", "password"),
    ("ari", "app"),
    ("ami", "username"),
]


@pytest.mark.parametrize(("section", "name"), CREDENTIALS)
def test_the_password_rule_is_the_same_wherever_a_password_is_set(section: str, name: str) -> None:
    model = {"ari": AriSettings, "ami": AmiSettings}[section]
    for good in GOOD:
        assert getattr(model(**{name: good}), name) == good
        assert (
            getattr(getattr(load_settings(None, environ={env_var(section, name): good}), section), name)
            == good
        )
    messages = set()
    for bad in BAD:
        with pytest.raises(ValueError):
            check_asterisk_name(bad)
        with pytest.raises(ValueError):
            model(**{name: bad})
        with pytest.raises(ConfigError) as err:
            load_settings(None, environ={env_var(section, name): bad})
        messages.add(str(err.value).split("): ", 1)[1])
    assert messages == {
        "Value error, use 1 to 128 ASCII letters, digits and . _ ~ - only "
        "(it goes unencoded into ARI requests, the HTTP Basic header and AMI header lines)"
    }


def test_the_ami_secret_takes_anything_but_line_breaks() -> None:
    # Only a line break could inject an AMI header; these worked before the ARI rule was shared.
    for good in ("p@ss!word", "with space", "пароль#1", "a" * 128):
        assert AmiSettings(secret=good).secret == good
        assert load_settings(None, environ={env_var("ami", "secret"): good}).ami.secret == good
    for bad in ("", "a\r\nAction: Originate", "two\nlines", "a" * 129):
        with pytest.raises(ValueError, match="no line breaks"):
            check_ami_secret(bad)
        with pytest.raises(
            ConfigError, match="ami.secret \\(environment variable VOICEBRIDGE_AMI__SECRET\\)"
        ):
            load_settings(None, environ={env_var("ami", "secret"): bad})


async def test_originate_checks_the_app_name_with_the_same_rule() -> None:
    # Port 9 (discard) is never our AMI: the ValueError comes before any connection.
    with pytest.raises(ValueError, match="originate: app='a:b': use 1 to 128 ASCII letters"):
        await originate(AmiSettings(port=9), "100", app="a:b", timeout_s=1)


# --- each component gets its own model object, not a copy


class _RecordingAmiLogger:
    settings: list[AmiSettings] = []
    created: asyncio.Event

    def __init__(self, settings: AmiSettings) -> None:
        self.settings.append(settings)
        self.created.set()

    async def start(self) -> None:
        raise AmiError("no AMI in this test")

    async def close(self) -> None:
        return None


class _RecordingGateway:
    kwargs: dict[str, Any] = {}

    def __init__(self, conn: object, pacer: object, **kwargs: Any) -> None:
        type(self).kwargs = kwargs

    async def close(self, *, hang_up: bool = True) -> None:
        return None

    def stats(self) -> dict[str, int]:
        return {}


async def test_each_component_receives_its_own_settings_object(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(
        None,
        environ={
            "VOICEBRIDGE_AUDIOSOCKET__BIND_PORT": "0",
            "VOICEBRIDGE_ARI__URL": "http://127.0.0.1:9/",  # nothing there: the controller retries
            "VOICEBRIDGE_VAD__MAX_GAP_MS": "80",
            "VOICEBRIDGE_PLAYOUT__HIGH_WATER_MS": "100",
            "VOICEBRIDGE_ADMIN__PORT": "0",
        },
    )
    _RecordingAmiLogger.created = asyncio.Event()
    monkeypatch.setattr(ami_events, "AmiEventLogger", _RecordingAmiLogger)
    monkeypatch.setattr(app_module, "TelephonyGateway", _RecordingGateway)
    app = VoicebridgeApp(s)

    async def no_providers() -> Any:
        return types.SimpleNamespace(
            metrics_sink=lambda _record: None, dialogue_map=types.SimpleNamespace(recording=None)
        )

    monkeypatch.setattr(app.composition, "build_services", no_providers)

    async def setup_fails(*_: Any, **__: Any) -> Any:
        from orchestrator.domain.errors import CallSetupError

        raise CallSetupError("test: no orchestrator")

    async def no_apology(_call_id: str, _gateway: Any) -> None:
        return None

    monkeypatch.setattr(app_module, "create_orchestrator_instance", setup_fails)
    monkeypatch.setattr(app, "_apologise", no_apology)
    await app.start()
    try:
        assert app.composition.settings is s
        assert app.pacer.settings is s.pacer
        assert app.audiosocket is not None and app.audiosocket.settings is s.audiosocket
        assert app.ari is not None and app.ari._settings is s.ari
        call = types.SimpleNamespace(
            call_id="c1", channel_id="ch1", exten="100", caller_number=None, conn=object(), channel_vars={}
        )
        await app.on_call(call)  # type: ignore[arg-type]
        kwargs = _RecordingGateway.kwargs
        assert kwargs["vad_settings"] is s.vad
        assert kwargs["playout_settings"] is s.playout
        assert kwargs["close_wait_s"] == s.audiosocket.close_wait_s
        assert kwargs["recorder"] is None  # [recording] is off by default
        async with asyncio.timeout(5):
            await _RecordingAmiLogger.created.wait()
        assert _RecordingAmiLogger.settings[0] is s.ami
    finally:
        await app.close()


def test_models_passed_in_are_kept_not_copied() -> None:
    vad = load_settings(None, environ={}).vad
    assert Settings(vad=vad).vad is vad


def test_the_old_mirrors_are_gone() -> None:
    import bridge.settings

    for name in (
        "VadSection",
        "AriSection",
        "AmiSection",
        "AudioSocketSection",
        "YandexSection",
        "OpenAISection",
    ):
        assert not hasattr(bridge.settings, name)
    assert env_var("vad", "min_speech_ms") == f"{ENV_PREFIX}VAD__MIN_SPEECH_MS"


def _float_knobs() -> list[tuple[str, str]]:
    """Every float setting of every section (durations, ratios), found from the models."""
    out = []
    for section, name in _knobs():
        hint = typing.get_type_hints(Settings.model_fields[section].annotation, include_extras=True)[name]
        base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
        if base is float:
            out.append((section, name))
    return out


def test_the_float_knobs_are_found() -> None:
    knobs = _float_knobs()
    assert ("call", "setup_timeout_s") in knobs and ("yandex", "renew_grace_s") in knobs
    assert len(knobs) > 30


@pytest.mark.parametrize(("section", "name"), _float_knobs())
@pytest.mark.parametrize("bad", ["inf", "-inf", "nan", "-1"])
def test_every_float_setting_must_be_finite_and_not_negative(section: str, name: str, bad: str) -> None:
    variable = env_var(section, name)
    with pytest.raises(ConfigError) as err:
        load_settings(environ={variable: bad})
    message = str(err.value)
    assert f"{section}.{name} = '{bad}' (environment variable {variable})" in message
    expected = "finite number" if bad != "-1" else "greater than"
    assert expected in message, message


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("VOICEBRIDGE_ARI__URL", "127.0.0.1:8088", "expected an http:// or https:// URL"),
        ("VOICEBRIDGE_ARI__URL", "http://:8088/", "expected an http:// or https:// URL"),
        ("VOICEBRIDGE_OPENAI__BASE_URL", "api.openai.com/v1", "expected an http:// or https:// URL"),
        ("VOICEBRIDGE_OPENAI__BASE_URL", "http://localhost:99999/v1", "expected an http:// or https:// URL"),
        ("VOICEBRIDGE_YANDEX__STT_ENDPOINT", "stt.api.cloud.yandex.net", "expected host:port"),
        ("VOICEBRIDGE_YANDEX__TTS_ENDPOINT", "https://tts.api.cloud.yandex.net:443", "expected host:port"),
        ("VOICEBRIDGE_REDIS__URL", "127.0.0.1:6379", "expected redis://host:port/db"),
        ("VOICEBRIDGE_REDIS_URL", "http://127.0.0.1:6379/0", "expected redis://host:port/db"),
    ],
)
def test_addresses_are_checked_at_load(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_settings(environ={variable: value})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("VOICEBRIDGE_ARI__URL", "https://pbx.example.com/asterisk/"),
        ("VOICEBRIDGE_YANDEX__STT_ENDPOINT", "[::1]:50051"),
        ("VOICEBRIDGE_REDIS__URL", "rediss://user:pw@cache.example.com:6380/2"),
        ("VOICEBRIDGE_REDIS__URL", "unix:///run/redis/redis.sock"),
    ],
)
def test_good_addresses_load(variable: str, value: str) -> None:
    load_settings(environ={variable: value})


def test_the_event_loop_setting_picks_the_loop_and_names_itself_when_uvloop_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from bridge.event_loop import loop_factory

    assert loop_factory("asyncio") is asyncio.new_event_loop
    uvloop = pytest.importorskip("uvloop")
    loop = loop_factory("uvloop")()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"\[service\] event_loop"):
        loop_factory("uvloop")


def test_help_shows_a_dataclass_default_factory_as_its_value() -> None:
    from bridge.settings_help import _fields

    @dataclasses.dataclass
    class Section:
        hosts: list[str] = dataclasses.field(default_factory=lambda: ["a", "b"])
        port: int = 5
        name: str | None = None

    assert [(n, d) for n, _t, d in _fields(Section)] == [("hosts", ["a", "b"]), ("port", 5), ("name", None)]


def test_an_ari_url_with_user_info_is_refused_pointing_to_the_credential_settings() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"VOICEBRIDGE_ARI__URL": "http://asterisk:Pa55word@127.0.0.1:8088/"})
    message = str(err.value)
    assert "ari" in message and "[ari] username and password" in message
    assert "Pa55word" not in message
