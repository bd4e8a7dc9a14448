"""`AriHttpClient`: the HTTP side of ARI for aioari: Basic auth in a header, TLS, https kept.

Two facts of Asterisk 22 (res/res_ari.c, `authenticate_user` and `ast_ari_get_docs`; checked in
the 22.10.1 binary) shape it:

- Every `/ari/...` request, the events websocket upgrade included, is authenticated from the
  HTTP Basic `Authorization` header first and only then from an `api_key` query parameter, so a
  session-wide Basic header authenticates the websocket too and the password never goes into a
  URL (aioswagger11's own authenticators put it into the websocket's query string).
- Asterisk rewrites every API declaration's `basePath` to `http://<Host header>/ari`, also when
  served over TLS: aioari would then send its requests (and open the websocket) in the clear to
  the TLS port. Requests to our own host and port are therefore sent with the configured scheme.
"""

from __future__ import annotations

import base64
import logging
import ssl
import urllib.parse
from typing import Any

import aiohttp
from aioswagger11.http_client import AsynchronousHttpClient  # type: ignore[import-untyped]

from bridge.ari.settings import AriSettings

__all__ = ["AriHttpClient", "basic_auth_header", "tls_context"]

log = logging.getLogger(__name__)


def basic_auth_header(settings: AriSettings) -> dict[str, str]:
    """`{"Authorization": "Basic ..."}` for `[ari] username`/`password`. Built by hand: aiohttp's
    `BasicAuth` is deprecated in new versions, its replacement absent in old ones."""
    credentials = f"{settings.username}:{settings.password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")}


def tls_context(settings: AriSettings) -> ssl.SSLContext | None:
    """The TLS context for an https ARI URL (None for http).

    Verifies the certificate and host name against `ca_file` (or the system's CAs) unless
    `verify_tls` is off. Raises `ssl.SSLError`/`OSError` if `ca_file` cannot be loaded.
    """
    if urllib.parse.urlsplit(settings.url).scheme != "https":
        return None
    ctx = ssl.create_default_context(cafile=settings.ca_file)
    if not settings.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class AriHttpClient(AsynchronousHttpClient):  # type: ignore[misc]  # aioswagger11 is untyped
    """aioswagger11's client with Basic auth on every request and the configured URL scheme.

    One instance per ARI connection; `close()` closes its websockets and session.
    """

    def __init__(self, settings: AriSettings) -> None:
        # Not super().__init__(): that builds a session without our auth header and TLS context.
        self.authenticator = None
        self.websockets: set[aiohttp.ClientWebSocketResponse] = set()
        base = urllib.parse.urlsplit(settings.url)
        self._tls = base.scheme == "https"
        self._netloc = base.netloc.rpartition("@")[2].lower()
        self.session = aiohttp.ClientSession(
            headers=basic_auth_header(settings),
            connector=aiohttp.TCPConnector(ssl=tls_context(settings) or True),
        )

    def _fix_scheme(self, url: str) -> str:
        """`url` with https/wss instead of http/ws when ARI is configured with an https URL."""
        if not self._tls:
            return url
        parts = urllib.parse.urlsplit(url)
        if parts.netloc.lower() != self._netloc or parts.scheme not in ("http", "ws"):
            return url
        return urllib.parse.urlunsplit(parts._replace(scheme=parts.scheme + "s"))

    async def request(self, method: str, url: str, **kwargs: Any) -> Any:
        return await super().request(method, self._fix_scheme(url), **kwargs)

    async def ws_connect(self, url: str, params: dict[str, str] | None = None) -> Any:
        return await super().ws_connect(self._fix_scheme(url), params=params)
