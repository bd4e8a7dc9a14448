"""Service settings: a TOML file plus `VOICEBRIDGE_<SECTION>__<FIELD>` environment overrides.

`Settings` is composed of the components' own models, one per section, each defined next to the
code that uses it and handed to that component as is (no copies, no mirrors):

    [ari]          bridge.ari.AriSettings                  [yandex]  orchestrator.adapters.speechkit.YandexSettings
    [ami]          bridge.ami.AmiSettings                  [openai]  orchestrator.adapters.openai_settings.OpenAISettings
    [audiosocket]  bridge.audiosocket.server.AudioSocketSettings
    [vad]          bridge.vad.VadSettings                  [espeak]  orchestrator.adapters.tts.espeak_settings.EspeakSettings
    [pacer]        bridge.pacer.PacerSettings              [call]    orchestrator.call_settings.CallSettings
    [playout]      bridge.playout.PlayoutSettings          [providers]  ProvidersSettings (below)
    [redis]        orchestrator.cache.redis_settings.RedisSettings
    [breaker]      orchestrator.breaker.BreakerSettings
    [admin]        bridge.admin.AdminSettings              [log]     bridge.logs.LogSettings
    [service]      bridge.event_loop.ServiceSettings (the event loop: asyncio or uvloop)
    [registry]     bridge.registry.RegistrySettings
    [recording]    bridge.recording.RecordingSettings      [campaign]  bridge.campaign.CampaignSettings
    [echo]         bridge.echo_gate.EchoSettings
    [gc]           bridge.gc_policy.GcSettings (how often a full collection runs)
    [interruption] orchestrator.interruption_settings.InterruptionSettings (pause/resume/cancel over the bot)

plus the top-level `dialogue_map` and `metrics_file`, and the `[numbers]` table (dialled number ->
dialogue map, for one process serving several numbers); the top-level `redis_url` is still accepted
as `[redis] url`. Everything has a default that
runs offline on one machine (espeak-ng TTS, local intent classifier, in-memory cache).

An invalid value fails at start with `ConfigError` naming the setting and where it came from
(the file and its `[section] field`, or the environment variable), never later in a call.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bridge.admin import AdminSettings
from bridge.ami import AmiSettings
from bridge.ari import AriSettings
from bridge.audiosocket.server import AudioSocketSettings
from bridge.campaign import CampaignSettings
from bridge.echo_gate import EchoSettings
from bridge.event_loop import ServiceSettings
from bridge.gc_policy import GcSettings
from bridge.logs import LogSettings
from bridge.pacer import PacerSettings
from bridge.playout import PlayoutSettings
from bridge.recording import RecordingSettings
from bridge.registry import RegistrySettings
from bridge.vad import VadSettings
from orchestrator.adapters.openai_settings import OpenAISettings
from orchestrator.adapters.speechkit import YandexSettings
from orchestrator.adapters.tts.espeak_settings import EspeakSettings
from orchestrator.breaker import BreakerSettings
from orchestrator.cache.redis_settings import RedisSettings
from orchestrator.call_settings import CallSettings
from orchestrator.domain.errors import ConfigError
from orchestrator.interruption_settings import InterruptionSettings

__all__ = ["ENV_PREFIX", "ProvidersSettings", "Settings", "env_var", "load_settings", "setting_label"]

ENV_PREFIX = "VOICEBRIDGE_"
# VOICEBRIDGE_* variables that are not settings (used by the Asterisk scripts, see asterisk_conf/).
_NOT_SETTINGS = frozenset({"VOICEBRIDGE_CACHE"})
# Settings whose values never appear in an error message.
_SECRETS = frozenset({"password", "secret", "api_key", "iam_token"})
_UNKNOWN = frozenset({"extra_forbidden", "unexpected_keyword_argument"})
# A dialled number as the Stasis argument carries it (DID, extension, `s`).
_NUMBER = re.compile(r"[0-9A-Za-z+*#_.-]{1,64}")
# Settings as read, before validation: TOML tables / environment sections as nested dicts.
RawSettings = dict[str, object]


class ProvidersSettings(BaseModel):
    """Which implementation serves each role (section `[providers]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    stt: Literal["yandex"] = "yandex"
    tts: Literal["yandex", "espeak"] = "espeak"
    llm: Literal["openai"] = "openai"
    intents: Literal["local", "openai"] = "local"  # local: char n-grams; openai: embeddings


class Settings(BaseModel):
    """All settings of `voicebridge serve` (and `dial`, `cache warm`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dialogue_map: str = "dialogue_maps/cleaning_quote.ru.json"  # for calls to any other number
    # Several numbers in one process: dialled number (the Stasis argument: DID or extension) ->
    # its dialogue map; a call to a number not listed gets `dialogue_map`.
    numbers: dict[str, str] = Field(default_factory=dict)
    metrics_file: str | None = None  # JSON lines; None: the log only
    redis: RedisSettings = Field(default_factory=RedisSettings)  # no url: in-memory audio cache
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)  # TTS, STT, LLM circuits
    providers: ProvidersSettings = Field(default_factory=ProvidersSettings)
    ari: AriSettings = Field(default_factory=AriSettings)
    ami: AmiSettings = Field(default_factory=AmiSettings)
    audiosocket: AudioSocketSettings = Field(default_factory=AudioSocketSettings)
    vad: VadSettings = Field(default_factory=VadSettings)
    echo: EchoSettings = Field(default_factory=EchoSettings)
    gc: GcSettings = Field(default_factory=GcSettings)
    interruption: InterruptionSettings = Field(default_factory=InterruptionSettings)
    pacer: PacerSettings = Field(default_factory=PacerSettings)
    playout: PlayoutSettings = Field(default_factory=PlayoutSettings)
    call: CallSettings = Field(default_factory=CallSettings)
    yandex: YandexSettings = Field(default_factory=YandexSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    espeak: EspeakSettings = Field(default_factory=EspeakSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)  # with [redis] url only
    recording: RecordingSettings = Field(default_factory=RecordingSettings)  # off by default
    campaign: CampaignSettings = Field(default_factory=CampaignSettings)  # `voicebridge campaign`

    @model_validator(mode="before")
    @classmethod
    def _redis_url_alias(cls, data: object) -> object:
        """The top-level `redis_url` (the documented name before `[redis]`) is `[redis] url`."""
        if not isinstance(data, dict) or "redis_url" not in data:
            return data
        data = dict(data)
        url = data.pop("redis_url")
        redis = data.get("redis", {})
        if isinstance(redis, RedisSettings):
            redis = dataclasses.asdict(redis)
        if not isinstance(redis, dict):
            return data  # a wrong [redis] value: its own validation error names it
        if redis.get("url") is not None:
            raise ValueError("set the Redis URL once: [redis] url or the top-level redis_url, not both")
        data["redis"] = {**redis, "url": url}
        return data

    @field_validator("numbers")
    @classmethod
    def _numbers(cls, numbers: dict[str, str]) -> dict[str, str]:
        for number, path in numbers.items():
            if not _NUMBER.fullmatch(number):
                raise ValueError(
                    f"{number!r} is not a dialled number: 1 to 64 of digits, letters and + * # _ . -"
                )
            if not path.strip():
                raise ValueError(f"number {number!r}: the dialogue map path is empty")
        return numbers

    @property
    def redis_url(self) -> str | None:
        """The Redis URL (`[redis] url`), by its older top-level name."""
        return self.redis.url

    def secret_values(self) -> list[str]:
        """Every configured secret (passwords, keys, tokens, the Redis URL's password): what the
        log must never show (`bridge.logs.Redactor`)."""
        values = [
            self.ari.password,
            self.ami.secret,
            self.yandex.api_key,
            self.yandex.iam_token,
            self.openai.api_key,
        ]
        if self.redis.url:
            values.append(urllib.parse.urlsplit(self.redis.url).password)
        return [v for v in values if v]


def env_var(*path: str) -> str:
    """The environment variable of a setting: `env_var("vad", "min_speech_ms")` is
    `VOICEBRIDGE_VAD__MIN_SPEECH_MS`."""
    return ENV_PREFIX + "__".join(path).upper()


def setting_label(*path: str) -> str:
    """How messages name a setting, in the file and in the environment:
    `setting_label("yandex", "api_key")` is `[yandex] api_key (VOICEBRIDGE_YANDEX__API_KEY)`."""
    key = f"[{'.'.join(path[:-1])}] {path[-1]}" if len(path) > 1 else path[0]
    return f"{key} ({env_var(*path)})"


def _env_overrides(environ: Mapping[str, str]) -> RawSettings:
    """`VOICEBRIDGE_A__B=v` as {"a": {"b": "v"}} (pydantic converts the strings)."""
    out: RawSettings = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS:
            continue
        *sections, field = name[len(ENV_PREFIX) :].lower().split("__")
        node = out
        for part in sections:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):  # VOICEBRIDGE_X and VOICEBRIDGE_X__Y both set
                raise ConfigError(f"environment: {name}: {env_var(*sections)} is set too, as a value")
            node = child
        node[field] = value
    return out


def _merge(base: RawSettings, over: RawSettings) -> RawSettings:
    merged = dict(base)
    for key, value in over.items():
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged[key] = _merge(current, value)
        else:
            merged[key] = value
    return merged


def _setting_path(loc: tuple[int | str, ...]) -> tuple[str, ...]:
    """The setting an error location points at: pydantic appends union members or list indexes
    (`("redis_url", "str")`), which are not part of the name."""
    path: list[str] = []
    model: object = Settings
    for part in loc:
        if not isinstance(part, str):
            break
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(part)
            model = field.annotation if field is not None else None
        elif isinstance(model, type) and dataclasses.is_dataclass(model):
            model = None  # a component's field: the end of the name
        else:
            break
        path.append(part)
    return tuple(path)


def _in_data(data: Mapping[str, object], path: tuple[str, ...]) -> bool:
    node: object = data
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _where(
    path: tuple[str, ...], file_data: Mapping[str, object], env: Mapping[str, object], source: str | None
) -> str:
    if _in_data(env, path):
        return f"environment variable {env_var(*path)}"
    if source is not None and _in_data(file_data, path):
        key = f"[{'.'.join(path[:-1])}] {path[-1]}" if len(path) > 1 else path[0]
        return f"{source}: {key}"
    return "default"


_URL_USER_INFO = re.compile(r"(://)[^/@\s]*@")


def _shown(value: object) -> object:
    """A rejected value as an error message may quote it: a URL's user info masked."""
    return _URL_USER_INFO.sub(r"\1***@", value) if isinstance(value, str) else value


def load_settings(path: str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `path` (TOML, optional) with `VOICEBRIDGE_*` variables of `environ`
    (default: `os.environ`) on top.

    Raises `ConfigError` when the file cannot be read or parsed, or a value is invalid; the
    message names each bad setting (`vad.min_speech_ms`), where it came from (the environment
    variable, or the file and its `[section] field`) and what is wrong.
    """
    file_data: RawSettings = {}
    if path:
        try:
            file_data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read settings: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    env = _env_overrides(os.environ if environ is None else environ)
    try:
        return Settings.model_validate(_merge(file_data, env))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = _setting_path(err["loc"])
            if not name:  # a rule across settings (e.g. redis_url and [redis] url): its message names them
                problems.append(err["msg"])
                continue
            where = _where(name, file_data, env, path)
            value = "" if name[-1:] and name[-1] in _SECRETS else f" = {_shown(err['input'])!r}"
            what = "no such setting" if err["type"] in _UNKNOWN else err["msg"]
            problems.append(f"{'.'.join(name)}{value} ({where}): {what}")
        if len(problems) == 1:
            raise ConfigError(f"invalid settings: {problems[0]}") from exc
        raise ConfigError("invalid settings:\n" + "\n".join(f"  {p}" for p in problems)) from exc
