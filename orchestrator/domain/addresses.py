"""Checks of the network addresses settings hold, for pydantic `AfterValidator`s.

Each takes the string as written and returns it unchanged, or raises `ValueError` saying what
form is expected (pydantic turns it into a validation error naming the setting).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

__all__ = ["HostPort", "HttpUrl", "RedisUrl", "check_host_port", "check_http_url", "check_redis_url"]

_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


def _port_ok(port: str) -> bool:
    return port.isdigit() and 0 < int(port) < 65536


def check_host_port(value: str) -> str:
    """`host:port` (`[::1]:443` for IPv6), port 1..65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not host.strip("[]") or any(c in host for c in " /@") or not _port_ok(port):
        raise ValueError("expected host:port, e.g. stt.api.cloud.yandex.net:443")
    return value


def check_http_url(value: str) -> str:
    """An absolute `http://` or `https://` URL with a host (and a valid port, if any), without
    user info: credentials have settings of their own (`[ari] username`/`password`), and a
    `user:pass@` would be logged with the URL and clash with the Authorization header."""
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ValueError("expected an http:// or https:// URL with a host, e.g. http://127.0.0.1:8088/")
    if "@" in parts.netloc:
        raise ValueError(
            "no user:password@ in the URL: set the credentials in their own settings "
            "([ari] username and password; [openai] api_key)"
        )
    return value


def check_redis_url(value: str) -> str:
    """A `redis://`, `rediss://` (TLS) or `unix://` (socket path) URL, as redis-py reads them."""
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    where_ok = bool(parts.path) if parts.scheme == "unix" else bool(parts.hostname)
    if parts.scheme not in _REDIS_SCHEMES or not where_ok or not port_ok:
        raise ValueError("expected redis://host:port/db, rediss://... (TLS) or unix:///path/to/socket")
    return value


HostPort = Annotated[str, AfterValidator(check_host_port)]
HttpUrl = Annotated[str, AfterValidator(check_http_url)]
RedisUrl = Annotated[str, AfterValidator(check_redis_url)]
