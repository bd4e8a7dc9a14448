"""Checks before `voicebridge serve` listens: refuse a start that cannot work.

`preflight(settings)` collects every problem it finds instead of stopping at the first, so one
run tells the operator everything to fix:

- SpeechKit (STT always, TTS with `[providers] tts = "yandex"`): a credential (`api_key`,
  `service_account_key_file` that exists and parses, or `iam_token`) unless `tls = false`
  (the local stand-ins);
- OpenAI: an `api_key` (every map sends what it cannot route to the LLM; the intent step and
  `intents = "openai"` use it too);
- each dialogue map (`dialogue_map` and the `[numbers]` ones): loads and has no lint errors (`voicebridge map lint`);
- audio: every cache key the map plays is in the cache already or has text in `$.audio` and a
  TTS that can run at warm (espeak-ng found on PATH, or SpeechKit with a credential). Redis not
  answering when `[redis] url` is set is only a warning when every phrase can still be produced
  (memory and live TTS serve the calls, Redis is re-filled once it answers); a problem when not;
- the VAD engine (`[vad] engine`) loads: its wheel is installed and, for TEN VAD, Debian's libc++1;
- the AudioSocket address can be listened on (a bad `bind_host`, a port in use);
- ARI (with `[ari] ca_file`/`verify_tls`, as the controller connects): a refused login or a TLS
  certificate that is not trusted is a problem; ARI unreachable is only a warning, because the
  controller keeps reconnecting and takes calls once Asterisk answers.

Addresses, URLs and finite positive durations are checked earlier, when the settings load.
Each `Problem` names the setting (TOML `[section] key` and the environment variable) and the fix.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import shutil
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from bridge.logs import public_url
from bridge.settings import Settings, setting_label
from orchestrator.cache.audio_format import CacheValueError
from orchestrator.contracts import AudioCache
from orchestrator.domain.errors import ConfigError, VoicebridgeError

__all__ = ["Problem", "StartRefused", "listen_error", "listen_problem", "preflight"]

log = logging.getLogger(__name__)

STANDINS_HINT = "To try a map without keys or cloud services: voicebridge serve --standins"


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason the service cannot work: the setting it is about (a settings path such as
    `("yandex", "api_key")`; empty for none) and what is wrong with the fix."""

    setting: tuple[str, ...]
    message: str

    def __str__(self) -> str:
        return f"{setting_label(*self.setting)}: {self.message}" if self.setting else self.message


class StartRefused(ConfigError):
    """`serve` will not start; the message lists every problem, one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        count = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
        lines = [f"cannot start, {count}:", *(f"  {p}" for p in problems)]
        if any(p.setting[:1] in (("yandex",), ("openai",)) for p in problems):
            lines.append(STANDINS_HINT)
        super().__init__("\n".join(lines))


async def preflight(settings: Settings) -> list[Problem]:
    """Every problem that would make `serve` fail at start or fail every call (see the module
    docstring); an empty list when it can start. Logs a warning when ARI or Redis does not answer."""
    warnings: list[str] = []
    problems = _speechkit(settings) + _openai(settings) + _vad_engine(settings)
    for path, setting in _map_settings(settings).items():
        problems += await _dialogue_map_and_audio(settings, path, setting, warnings)
    listen = await listen_problem(settings)
    if listen is not None:
        problems.append(listen)
    ari_problems, ari_warning = await _ari(settings)
    problems += ari_problems
    if ari_warning:
        warnings.append(ari_warning)
    if not problems:  # beside a refusal they would only distract
        for warning in warnings:
            log.warning("%s", warning)
    return problems


def _speechkit(s: Settings) -> list[Problem]:
    y = s.yandex
    problems: list[Problem] = []
    if y.service_account_key_file:
        from orchestrator.adapters.yandex_iam import load_service_account_key

        try:
            load_service_account_key(y.service_account_key_file)
        except ConfigError as exc:
            problems.append(
                Problem(("yandex", "service_account_key_file"), f"{exc}; fix the file or the path")
            )
    elif y.tls and not (y.api_key or y.iam_token):
        uses = "speech recognition" + (" and synthesis" if s.providers.tts == "yandex" else "")
        problems.append(
            Problem(
                ("yandex", "api_key"),
                f"Yandex SpeechKit ({uses}) needs a credential: set it, or "
                f"{setting_label('yandex', 'service_account_key_file')} (a `yc iam key create` JSON "
                f"file; tokens are refreshed), or {setting_label('yandex', 'iam_token')} (expires in 12 h)",
            )
        )
    return problems


def _vad_engine(s: Settings) -> list[Problem]:
    from bridge.vad_engines import classifier

    engine = s.vad.engine
    try:
        classifier(engine, s.vad.aggressiveness).close()
    except Exception as exc:  # ImportError/OSError, or ONNX Runtime's own error on the model
        fix = "install Debian's libc++1 (make system-deps)" if engine == "ten" else "reinstall the package"
        return [Problem(("vad", "engine"), f'"{engine}" does not load ({exc}): {fix}, or choose "webrtc"')]
    return []


def _openai(s: Settings) -> list[Problem]:
    if s.openai.api_key:
        return []
    uses = ["the LLM answers what the map does not script"]
    if s.providers.intents == "openai":
        uses.append('the intent classifier ([providers] intents = "openai") embeds with it')
    return [
        Problem(
            ("openai", "api_key"),
            f"{' and '.join(uses)} at {s.openai.base_url}: set the key "
            "(any non-empty value for an OpenAI-compatible server that takes none)",
        )
    ]


def _map_settings(s: Settings) -> dict[str, tuple[str, ...]]:
    """Each map the service loads, once, with the setting that names it first."""
    out: dict[str, tuple[str, ...]] = {s.dialogue_map: ("dialogue_map",)}
    for number, path in s.numbers.items():
        out.setdefault(path, ("numbers", number))
    return out


async def _dialogue_map_and_audio(
    s: Settings, path: str, setting: tuple[str, ...], warnings: list[str]
) -> list[Problem]:
    from orchestrator.dialogue_map.lint import lint_map
    from orchestrator.dialogue_map.loader import audio_key_uses, load_dialogue_map

    try:
        dmap = load_dialogue_map(path)
    except VoicebridgeError:
        dmap = None
    # Keys the map plays without text in $.audio: fine if the cache has them already (checked
    # below), so the lint's error about them is left to that check.
    textless = {p: k for p, k in audio_key_uses(dmap) if k not in dmap.audio} if dmap is not None else {}
    problems = [
        Problem(setting, f"{path}: {issue.json_path}: {issue.message} (see `voicebridge map lint`)")
        for issue in lint_map(path)
        if issue.severity == "error" and issue.json_path not in textless
    ]
    if dmap is None:
        return problems
    cache, cache_problem = _audio_cache(s)
    if cache_problem is not None:
        return [*problems, cache_problem]
    try:
        present = {key: await _cached(cache, key) for key in dict.fromkeys([*textless.values(), *dmap.audio])}
    except VoicebridgeError as exc:
        # Redis down: the calls are served from memory and live TTS, so every phrase must be
        # synthesizable now; a key without text could only come from Redis.
        missing = [
            _textless_problem(setting, path, json_path, key, where="the cache (Redis does not answer)")
            for json_path, key in textless.items()
        ]
        tts = _tts_for_warm(s, len(dmap.audio))
        if missing or tts:
            return [*problems, _redis_problem(s, exc), *missing, *tts]
        warnings.append(f"{_redis_problem(s, exc)}; serving anyway from memory and live TTS")
        return problems
    finally:
        aclose = getattr(cache, "aclose", None)
        if aclose is not None:
            await aclose()
    for json_path, key in textless.items():
        if not present[key]:
            problems.append(_textless_problem(setting, path, json_path, key, where="the cache"))
    to_synthesize = [k for k in dmap.audio if not present[k]]
    if to_synthesize:
        problems += _tts_for_warm(s, len(to_synthesize))
    return problems


def _textless_problem(
    setting: tuple[str, ...], path: str, json_path: str, key: str, *, where: str
) -> Problem:
    return Problem(
        setting,
        f"{path}: {json_path}: audio key {key!r} has no text in $.audio and is not in "
        f"{where}: add its text to $.audio (it is synthesized at start) or store it in Redis",
    )


async def _cached(cache: AudioCache, key: str) -> bool:
    try:
        return await cache.get(key) is not None
    except CacheValueError:
        return False  # undecodable: warming replaces it


def _audio_cache(s: Settings) -> tuple[AudioCache, Problem | None]:
    from bridge.providers import build_audio_cache

    try:
        return build_audio_cache(s), None
    except ValueError as exc:  # redis-py refusing the URL
        from orchestrator.cache.memory import InMemoryAudioCache

        return InMemoryAudioCache(), Problem(("redis", "url"), f"not a Redis URL redis-py accepts: {exc}")


def _redis_problem(s: Settings, exc: BaseException) -> Problem:
    url = urlsplit(s.redis.url or "")
    where = url.path if url.scheme == "unix" else f"{url.hostname}:{url.port or 6379}"  # no password
    return Problem(
        ("redis", "url"),
        f"Redis at {where} does not answer ({exc}): start it, fix the URL, "
        "or leave [redis] url unset for the in-memory cache",
    )


def _tts_for_warm(s: Settings, count: int) -> list[Problem]:
    """The TTS that synthesizes the `count` phrases missing from the cache at start."""
    if s.providers.tts == "espeak":
        if shutil.which(s.espeak.binary) is None:
            return [
                Problem(
                    ("espeak", "binary"),
                    f"{s.espeak.binary!r} is not on PATH, and {count} phrases of the map must be "
                    "synthesized at start: install espeak-ng (apt-get install espeak-ng), set the "
                    'path, or use [providers] tts = "yandex"',
                )
            ]
        return []
    return []  # SpeechKit: its credential is checked with the speech recognition


def _listen_message(exc: OSError, host: str, port: int) -> tuple[str, str]:
    """(the setting to blame, the message) for a failed listen on host:port."""
    where = f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return "bind_host", f"cannot listen on {where}: the host name does not resolve ({exc.strerror})"
    if exc.errno == errno.EADDRINUSE:
        return "bind_port", (
            f"cannot listen on {where}: the port is in use (another voicebridge?): stop that "
            "process or pick a free port (and set the same port in [ari] audiosocket_host)"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return "bind_host", (
            f"cannot listen on {where}: not an address of this machine: use one of its "
            "addresses, 127.0.0.1 or 0.0.0.0"
        )
    if exc.errno == errno.EACCES:
        return "bind_port", f"cannot listen on {where}: permission denied (ports below 1024 need root)"
    return "bind_host", f"cannot listen on {where}: {exc.strerror or exc}"


def listen_error(exc: OSError, host: str, port: int) -> ConfigError:
    """The `ConfigError` for the AudioSocket server failing to listen (at start, after preflight)."""
    field, message = _listen_message(exc, host, port)
    return ConfigError(str(Problem(("audiosocket", field), message)))


async def listen_problem(s: Settings) -> Problem | None:
    """Whether the AudioSocket server can listen where configured (listens and closes at once)."""
    host, port = s.audiosocket.bind_host, s.audiosocket.bind_port
    try:
        server = await asyncio.get_running_loop().create_server(asyncio.Protocol, host, port)
    except OSError as exc:
        field, message = _listen_message(exc, host, port)
        return Problem(("audiosocket", field), message)
    server.close()
    await server.wait_closed()
    return None


async def _ari(s: Settings) -> tuple[list[Problem], str | None]:
    """A refused ARI login is a problem; ARI not answering is a warning (the controller retries)."""
    from bridge.ari.http import basic_auth_header, tls_context

    a = s.ari
    url = a.url.rstrip("/") + "/ari/asterisk/info"
    try:
        tls = tls_context(a)  # [ari] ca_file and verify_tls, as the controller will use them
    except (ssl.SSLError, OSError) as exc:
        return [Problem(("ari", "ca_file"), f"cannot load {a.ca_file}: {exc}")], None
    try:
        async with (
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=a.timeout_s),
                connector=aiohttp.TCPConnector(ssl=tls or True),
                headers=basic_auth_header(a),
            ) as http,
            http.get(url) as response,
        ):
            status = response.status
    except aiohttp.ClientSSLError as exc:
        # Not "Asterisk is down": a certificate that is not trusted never becomes so by retrying.
        problem = Problem(
            ("ari", "ca_file"),
            f"ARI at {public_url(a.url)}: TLS failed ({exc}): set [ari] ca_file to the CA that "
            "signed Asterisk's certificate (or verify_tls = false on a trusted network)",
        )
        return [problem], None
    except (aiohttp.ClientError, TimeoutError) as exc:
        return [], (
            f"ARI at {public_url(a.url)} does not answer ({str(exc) or type(exc).__name__}): serving "
            f"anyway; the controller retries every {a.reconnect_min_s:g} to {a.reconnect_max_s:g} s "
            "and takes calls once Asterisk answers"
        )
    if status in (401, 403):
        problem = Problem(
            ("ari", "password"),
            f"ARI at {public_url(a.url)} refused user {a.username!r} (HTTP {status}): set [ari] username "
            "and password as in Asterisk's ari.conf (asterisk_conf/ari.conf)",
        )
        return [problem], None
    if status != 200:
        return (
            [],
            f"ARI at {public_url(a.url)} answered HTTP {status} to {public_url(url)}: is [ari] url right?",
        )
    return [], None
