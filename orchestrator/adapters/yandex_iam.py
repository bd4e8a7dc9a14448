"""Yandex Cloud IAM tokens from a service account's authorized key, kept fresh in the background.

A static IAM token lives at most 12 h, so a long-running bridge gets its own. The flow is the one
Yandex documents ("Getting an IAM token for a service account"):

1. `yc iam key create --service-account-id ... --output key.json` writes the authorized key:
   {"id": key id, "service_account_id": ..., "private_key": PEM (newer `yc` puts a
   "PLEASE DO NOT REMOVE THIS LINE! ..." line before it), "key_algorithm", "public_key", ...}.
2. A JWT signed PS256 with that private key: header kid = key id; claims iss = service account id,
   aud = "https://iam.api.cloud.yandex.net/iam/v1/tokens", iat = now, exp = iat + 3600 (at most an hour).
3. gRPC `yandex.cloud.iam.v1.IamTokenService.Create(CreateIamTokenRequest(jwt=...))` answers
   `CreateIamTokenResponse{iam_token, expires_at: google.protobuf.Timestamp}`.

`IamTokenProvider` fetches the first token in `start()` and refreshes it every `refresh_every_s`
(Yandex recommends hourly) or at half the remaining lifetime, whichever comes first, so a failed
refresh still leaves half the lifetime for retries. Failed refreshes are retried with bounded
exponential backoff while the old token stays in use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from yandex.cloud.iam.v1 import iam_token_service_pb2, iam_token_service_pb2_grpc

from orchestrator.adapters.speechkit import IAM_ENDPOINT, YandexSettings, map_rpc_error, speechkit_channel
from orchestrator.clock import LoopClock
from orchestrator.contracts import Clock
from orchestrator.domain.errors import ConfigError, ProviderError
from orchestrator.tasks import TaskOwner, cancel_and_wait

__all__ = [
    "IAM_AUDIENCE",
    "IAM_ENDPOINT",
    "IamTokenError",
    "IamTokenProvider",
    "ServiceAccountKey",
    "build_jwt",
    "load_service_account_key",
]

log = logging.getLogger(__name__)

IAM_AUDIENCE = "https://iam.api.cloud.yandex.net/iam/v1/tokens"
JWT_LIFETIME_S = 3600  # Yandex rejects JWTs that live longer than an hour
MAX_TOKEN_LIFETIME_S = 12 * 3600  # assumed when a response lacks expires_at (the documented maximum)
PROVIDER = "yandex-iam"


class IamTokenError(ProviderError):
    """An IAM token could not be obtained."""


@dataclass(frozen=True, slots=True)
class ServiceAccountKey:
    """An authorized key of a service account, as `yc iam key create` writes it."""

    key_id: str
    service_account_id: str
    private_key: RSAPrivateKey
    source: str  # where it came from, for messages

    def __repr__(self) -> str:  # never print key material
        return f"ServiceAccountKey(key_id={self.key_id!r}, service_account_id={self.service_account_id!r})"


def load_service_account_key(path: str | Path) -> ServiceAccountKey:
    """Read and check an authorized-key JSON file.

    Raises:
        ConfigError: the file is unreadable, not a JSON object, or a field is missing or invalid;
            the message names the file and the field.
    """
    where = str(path)
    try:
        data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{where}: cannot read the service account key: {e.strerror or e}") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{where}: the service account key is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the service account key must be a JSON object")

    def text_field(name: str) -> str:
        value = data.get(name)
        if value is None:
            raise ConfigError(f"{where}: field {name!r} is missing (expected `yc iam key create` output)")
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: field {name!r} must be a non-empty string")
        return value.strip()

    key_id = text_field("id")
    sa_id = text_field("service_account_id")
    pem = text_field("private_key")
    try:
        # cryptography skips the "PLEASE DO NOT REMOVE THIS LINE!" preamble newer `yc` writes.
        private_key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: field 'private_key' is not an unencrypted PEM private key: {e}") from e
    if not isinstance(private_key, RSAPrivateKey):
        raise ConfigError(f"{where}: field 'private_key' must be an RSA key (PS256 needs RSA)")
    return ServiceAccountKey(key_id, sa_id, private_key, where)


def build_jwt(key: ServiceAccountKey, now: float, *, audience: str = IAM_AUDIENCE) -> str:
    """The signed JWT Yandex IAM exchanges for a token; `now` is Unix time in seconds."""
    iat = int(now)
    claims = {"iss": key.service_account_id, "aud": audience, "iat": iat, "exp": iat + JWT_LIFETIME_S}
    return jwt.encode(claims, key.private_key, algorithm="PS256", headers={"kid": key.key_id})


class IamTokenProvider:
    """Keeps a current IAM token for a service account; read it from `token`.

    Lifecycle: `await start()` (raises IamTokenError if the first token cannot be had), then
    `token` is always a token the service issued, refreshed by the task "yandex-iam:refresh";
    `await aclose()` stops the task and closes the channel.
    """

    def __init__(
        self,
        key: ServiceAccountKey,
        settings: YandexSettings,
        *,
        clock: Clock | None = None,
        wall_clock: Callable[[], float] = time.time,
        audience: str = IAM_AUDIENCE,
        on_token: Callable[[str], None] | None = None,
    ) -> None:
        """`settings`: `iam_endpoint`, `tls` and the `iam_*` timing (validated positive there)."""
        self._key = key
        self._endpoint = settings.iam_endpoint
        self._tls = settings.tls
        self._clock = clock or LoopClock()
        # The JWT's iat/exp and the response's expires_at are Unix time, so a wall clock is needed
        # for those two conversions; all scheduling uses the monotonic `clock`.
        self._wall = wall_clock
        self._refresh_every_s = settings.iam_refresh_every_s
        self._timeout_s = settings.iam_timeout_s
        self._backoff_s = settings.iam_retry_backoff_s
        self._backoff_max_s = max(settings.iam_retry_backoff_max_s, settings.iam_retry_backoff_s)
        self._audience = audience
        self._on_token = on_token
        self._token: str | None = None
        self._expires_at = 0.0  # on `clock`
        self._refresh_at = 0.0  # on `clock`
        self._channel: grpc.aio.Channel | None = None
        self._tasks = TaskOwner("yandex-iam")
        self._task: asyncio.Task[None] | None = None

    @property
    def token(self) -> str:
        """The current IAM token (for ("authorization", f"Bearer {token}")).

        Raises:
            IamTokenError: before `start()` succeeded.
        """
        if self._token is None:
            raise IamTokenError("no IAM token yet: start() has not succeeded", provider=PROVIDER)
        return self._token

    @property
    def expires_at(self) -> float:
        """When the current token expires, on the provider's clock."""
        return self._expires_at

    @property
    def refresh_at(self) -> float:
        """When the next refresh is due, on the provider's clock."""
        return self._refresh_at

    async def start(self) -> None:
        """Fetch the first token, then start refreshing in the background.

        Raises:
            IamTokenError: the token could not be had; `retryable` says whether trying again may help
                (the service was unreachable or slow) or not (key rejected, access denied).
        """
        if self._task is not None:
            raise RuntimeError("IamTokenProvider.start() called twice")
        self._channel = speechkit_channel(self._endpoint, tls=self._tls)
        try:
            await self._fetch()
        except BaseException:
            await self._channel.close()
            self._channel = None
            raise
        self._task = self._tasks.spawn(self._refresh_loop(), "refresh")

    async def aclose(self) -> None:
        """Stop refreshing and close the channel; the last token stays readable."""
        task, self._task = self._task, None
        if task is not None:
            # Bounded; a CancelledError aimed at *us* (not the task) still propagates.
            await cancel_and_wait(task)
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("IAM refresh task had failed", exc_info=task.exception())
        await self._tasks.aclose()
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def _fetch(self) -> None:
        """One Create call; on success the token, expiry and next refresh time are updated."""
        assert self._channel is not None
        stub = iam_token_service_pb2_grpc.IamTokenServiceStub(self._channel)
        request = iam_token_service_pb2.CreateIamTokenRequest(
            jwt=build_jwt(self._key, self._wall(), audience=self._audience)
        )
        try:
            response = await stub.Create(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as e:
            raise map_rpc_error(
                e, IamTokenError, f"IamTokenService.Create ({self._key.source})", PROVIDER
            ) from e
        if not response.iam_token:
            raise IamTokenError(
                "IamTokenService.Create answered without iam_token", provider=PROVIDER, retryable=True
            )
        if response.HasField("expires_at"):
            lifetime = response.expires_at.ToNanoseconds() / 1e9 - self._wall()
        else:
            lifetime = MAX_TOKEN_LIFETIME_S
        now = self._clock.now()
        if lifetime <= 0:
            # Our wall clock is ahead of Yandex's: the expiry is unknown, refresh soon but not in a loop.
            log.warning(
                "IAM token arrived already expired by our clock (%.0f s); is the clock right?", lifetime
            )
            lifetime = 2 * self._backoff_max_s
        self._token = response.iam_token
        self._expires_at = now + lifetime
        self._refresh_at = now + min(self._refresh_every_s, lifetime / 2)
        log.info("IAM token obtained for %s, valid for %.0f s", self._key.service_account_id, lifetime)
        if self._on_token is not None:
            self._on_token(self._token)

    async def _refresh_loop(self) -> None:
        backoff = self._backoff_s
        while True:
            await asyncio.sleep(max(0.0, self._refresh_at - self._clock.now()))
            try:
                await self._fetch()
                backoff = self._backoff_s
            except Exception as e:  # any failure: keep the old token and retry
                left = self._expires_at - self._clock.now()
                if left > 0:
                    log.warning("IAM token refresh failed (%s); the current token has %.0f s left", e, left)
                else:
                    log.error("IAM token refresh failed (%s); the current token has EXPIRED", e)
                self._refresh_at = self._clock.now() + backoff
                backoff = min(backoff * 2, self._backoff_max_s)
