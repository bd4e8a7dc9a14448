"""Service settings: a TOML file plus `VOICEBRIDGE_<SECTION>__<FIELD>` environment overrides.

Everything has a default that runs offline on one machine (espeak-ng TTS, local intent
classifier, in-memory cache, the SpeechKit/OpenAI stand-ins only where a test or the demo starts
them). Switching to Yandex SpeechKit and OpenAI is a matter of these settings only (README).
An invalid value fails at start with the setting's name, never later in a call.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.domain.errors import ConfigError

ENV_PREFIX = "VOICEBRIDGE_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AriSection(_Section):
    url: str = "http://127.0.0.1:8088/"
    username: str = "voicebridge"
    password: str = Field("voicebridge", pattern=r"^[A-Za-z0-9]+$")  # aioari does not URL-encode it
    app: str = "voicebridge"
    # Where Asterisk connects for AudioSocket (host:port as Asterisk sees us).
    audiosocket_host: str = "127.0.0.1:9092"


class AmiSection(_Section):
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "voicebridge"
    secret: str = "voicebridge"
    log_events: bool = True  # `serve` logs hangup causes and call events from AMI


class AudioSocketSection(_Section):
    bind_host: str = "127.0.0.1"
    bind_port: int = 9092


class VadSection(_Section):
    aggressiveness: int = Field(2, ge=0, le=3)
    min_speech_ms: int = Field(200, ge=20)
    hangover_ms: int = Field(400, ge=20)


class YandexSection(_Section):
    api_key: str | None = None
    iam_token: str | None = None  # static: expires within 12 h, prefer the key file below
    # Authorized key of a service account (`yc iam key create` JSON): IAM tokens fetched and refreshed.
    service_account_key_file: str | None = None
    iam_endpoint: str = "iam.api.cloud.yandex.net:443"
    folder_id: str | None = None
    stt_endpoint: str = "stt.api.cloud.yandex.net:443"
    tts_endpoint: str = "tts.api.cloud.yandex.net:443"
    tls: bool = True
    stt_model: str = "general"
    voice: str = "marina"
    role: str | None = None
    speed: float = 1.0


class OpenAISection(_Section):
    base_url: str = "https://api.openai.com/v1"
    api_key: str | None = None
    model: str = "gpt-4o-mini"
    embeddings_model: str = "text-embedding-3-small"
    moderation: bool = True
    timeout_s: float = 10.0


class ProvidersSection(_Section):
    stt: Literal["yandex"] = "yandex"
    tts: Literal["yandex", "espeak"] = "espeak"
    llm: Literal["openai"] = "openai"
    intents: Literal["local", "openai"] = "local"


class Settings(_Section):
    """All settings of `voicebridge serve`."""

    dialogue_map: str = "dialogue_maps/cleaning_quote.ru.json"
    redis_url: str | None = None  # None: in-memory audio cache
    metrics_file: str | None = None  # JSON lines; None: the log only
    ari: AriSection = AriSection()
    ami: AmiSection = AmiSection()
    audiosocket: AudioSocketSection = AudioSocketSection()
    vad: VadSection = VadSection()
    providers: ProvidersSection = ProvidersSection()
    yandex: YandexSection = YandexSection()
    openai: OpenAISection = OpenAISection()


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(path: str | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Settings from `path` (TOML, optional) with environment overrides on top."""
    data: dict[str, Any] = {}
    where = "environment"
    if path:
        where = path
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read settings: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    data = _merge(data, _env_overrides(dict(os.environ if environ is None else environ)))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])} ({ENV_PREFIX}{'__'.join(str(p) for p in err['loc']).upper()}): {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{where}: invalid settings: {problems}") from exc
