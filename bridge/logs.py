"""The service's logging: text or JSON lines, the call's trace id on every line, secrets redacted.

- `TRACE_ID` is a context variable holding the call id while a call runs. The ARI controller sets
  it in the context each call's task is created with, so every line logged in that task, in the
  tasks it spawns (asyncio copies the context into them) and by the libraries they call carries
  it, without any logger being told.
- `configure_logging(settings, secrets)` installs one handler on the root logger: text
  (`time level logger [trace_id]: message`) or JSON lines through python-json-logger (fields
  `time`, `level`, `logger`, `message`, `trace_id`, the exception, and a metrics record's own
  fields, see `orchestrator.metrics.log_sink`).
- Whatever the format, each finished line goes through `Redactor`: the configured secrets and
  anything shaped like a credential (`api_key=`, `password=`, URL user info, `Authorization`
  headers, bearer tokens) are replaced by `***`. The sources should not log secrets at all; this
  is the backstop.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import urllib.parse
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import pydantic.dataclasses
from pydantic import ConfigDict, Field
from pythonjsonlogger.json import JsonFormatter

__all__ = ["TRACE_ID", "LogSettings", "Redactor", "configure_logging", "public_url"]

# The call id of the call this code runs for; None outside calls.
TRACE_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("voicebridge_trace_id", default=None)

MASK = "***"
# Secrets shorter than this, or equal to a well-known default, are not masked by value: masking
# "voicebridge" would blank out every logger name (the defaults are public anyway).
_MIN_SECRET_LEN = 6
_PUBLIC_DEFAULTS = frozenset({"voicebridge"})
_PATTERNS = (
    # key=value in query strings, forms and reprs: api_key=..., password: ..., "secret": "..."
    re.compile(
        r"(?i)((?:api[_-]?key|apikey|password|passwd|secret|iam[_-]?token|access[_-]?token|token)"
        r"[\"']?\s*[=:]\s*[\"']?)([^\s&\"',;)}\]]+)"
    ),
    re.compile(r"(?i)(authorization[\"']?\s*[=:]\s*[\"']?(?:basic|bearer|api-key)?\s*)([^\s\"',;]+)"),
    re.compile(r"(?i)(\b(?:bearer|api-key)\s+)([A-Za-z0-9._~+/=-]{8,})"),
    re.compile(r"(://[^/\s:@]*:)([^@\s/]+)(@)"),  # scheme://user:password@host
)


@pydantic.dataclasses.dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class LogSettings:
    """The service's log (section `[log]`)."""

    # "text": one human-readable line per record; "json": one JSON object per line; "auto": text
    # when stderr is a terminal, JSON otherwise (a service manager, a container).
    format: Literal["auto", "text", "json"] = "auto"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # What the caller said (transcripts) at INFO; off: DEBUG only. Caller numbers are always
    # logged at DEBUG only (the ARI controller, AMI events), whatever this says.
    transcripts: bool = False
    # A longer message is cut (a peer must not make us write megabytes per line), characters.
    max_message_chars: Annotated[int, Field(ge=200)] = 8000


class Redactor:
    """Masks `secrets` (literal values) and credential-shaped text in a string."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        values = {s for s in secrets if s and len(s) >= _MIN_SECRET_LEN and s not in _PUBLIC_DEFAULTS}
        # A secret is also masked as it appears in JSON or a repr (escaped), longest first.
        forms = {v for s in values for v in (s, s.encode("unicode_escape").decode("ascii"))}
        self._literal = (
            re.compile("|".join(re.escape(v) for v in sorted(forms, key=len, reverse=True)))
            if forms
            else None
        )

    def __call__(self, text: str) -> str:
        if self._literal is not None:
            text = self._literal.sub(MASK, text)
        for pattern in _PATTERNS:
            text = pattern.sub(_masked, text)
        return text


def public_url(url: str) -> str:
    """`url` without user info, query or fragment: what a log line may show of it."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _masked(match: re.Match[str]) -> str:
    groups = match.groups()
    return groups[0] + MASK + (groups[2] if len(groups) > 2 else "")


class _TraceFilter(logging.Filter):
    """Stamps `trace_id` (and its text form `trace`) on every record, from the context."""

    def filter(self, record: logging.LogRecord) -> bool:
        # A line about a call logged outside it (an ARI event on the websocket reader) names it
        # with `extra={"trace_id": ...}`; that wins.
        trace_id = getattr(record, "trace_id", None) or TRACE_ID.get()
        record.trace_id = trace_id
        record.trace = f" [{trace_id}]" if trace_id else ""
        return True


class _Bounded(logging.Filter):
    """Cuts a message longer than `limit` characters (formatted once, here)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if len(message) > self._limit:
            record.msg = f"{message[: self._limit]}... [{len(message) - self._limit} characters cut]"
            record.args = None
        return True


class _RedactingText(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(trace)s: %(message)s")
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


class _RedactingJson(JsonFormatter):
    """python-json-logger's formatter with our field names; a metrics record's fields become the
    line's own (`message` is then the record's `event`)."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(trace_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
            json_default=str,
            reserved_attrs=[*_RESERVED, "trace", "metrics"],
        )
        self._redact = redact

    def add_fields(
        self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_record, record, message_dict)
        metrics = getattr(record, "metrics", None)
        if isinstance(metrics, dict):
            log_record.update(metrics)
            log_record["message"] = str(metrics.get("event", "metrics"))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        # ISO 8601 with milliseconds and the UTC offset, what log shippers parse without a hint.
        from datetime import datetime

        return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


_RESERVED = [
    "args", "asctime", "created", "exc_info", "exc_text", "filename", "funcName", "levelname",
    "levelno", "lineno", "module", "msecs", "message", "msg", "name", "pathname", "process",
    "processName", "relativeCreated", "stack_info", "thread", "threadName", "taskName",
]  # fmt: skip


def json_mode(settings: LogSettings, stream: Any = None) -> bool:
    """Whether `settings` ask for JSON lines on `stream` (default stderr)."""
    if settings.format != "auto":
        return settings.format == "json"
    target = sys.stderr if stream is None else stream
    isatty = getattr(target, "isatty", None)
    return not (isatty is not None and isatty())


def configure_logging(
    settings: LogSettings,
    *,
    secrets: Iterable[str | None] = (),
    level: str | None = None,
    stream: Any = None,
) -> logging.Handler:
    """Replace the root logger's handlers with one that writes `settings.format` lines to `stream`
    (default stderr), stamped with the trace id and redacted; `level` overrides `settings.level`.

    Returns the handler (tests read or remove it).
    """
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    redact = Redactor(secrets)
    handler.setFormatter(_RedactingJson(redact) if json_mode(settings, stream) else _RedactingText(redact))
    handler.addFilter(_TraceFilter())
    handler.addFilter(_Bounded(settings.max_message_chars))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level or settings.level)
    logging.getLogger("pymorphy3").setLevel(logging.WARNING)  # dictionary-loading chatter
    return handler
