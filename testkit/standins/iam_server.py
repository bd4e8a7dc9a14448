"""Yandex IAM stand-in (test/demo only): `IamTokenService.Create` on the real protos, 127.0.0.1.

It checks a JWT the way the service does for a service account's authorized key: PS256 signature
against the public key it was given, header kid, claims iss, aud, iat and exp (present, not expired,
living at most an hour). A good JWT gets "t1.standin.<n>" with `expires_at` = now + `token_lifetime_s`;
a bad one gets UNAUTHENTICATED with the reason. Other methods answer UNIMPLEMENTED.

For tests: `requests` counts every Create call, `issued` lists the tokens given out, `rejected` the
reasons JWTs were refused, `fail_next(n, code)` fails the next n calls (UNAVAILABLE by default),
and `wait_for(predicate)` waits until a call made `predicate()` true.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from google.protobuf.timestamp_pb2 import Timestamp
from yandex.cloud.iam.v1 import iam_token_service_pb2, iam_token_service_pb2_grpc

from testkit.standins import Progress, start_grpc_server

IAM_AUDIENCE = "https://iam.api.cloud.yandex.net/iam/v1/tokens"
MAX_JWT_LIFETIME_S = 3600


class _IamTokenService(iam_token_service_pb2_grpc.IamTokenServiceServicer):
    def __init__(self, server: IamStandin) -> None:
        self.server = server

    async def Create(  # noqa: N802 - the gRPC method name
        self, request: iam_token_service_pb2.CreateIamTokenRequest, context: Any
    ) -> iam_token_service_pb2.CreateIamTokenResponse:
        srv = self.server
        srv.requests += 1
        try:
            if srv._fail_left > 0:
                srv._fail_left -= 1
                await context.abort(srv._fail_code, "stand-in fault injected")
            if request.WhichOneof("identity") != "jwt":
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "only jwt identities are supported")
            problem = srv.check_jwt(request.jwt)
            if problem is not None:
                srv.rejected.append(problem)
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)
            srv._serial += 1
            token = f"t1.standin.{srv._serial}"
            srv.issued.append(token)
            expires_at = Timestamp()
            expires_at.FromNanoseconds(int((srv.wall_clock() + srv.token_lifetime_s) * 1e9))
            return iam_token_service_pb2.CreateIamTokenResponse(iam_token=token, expires_at=expires_at)
        finally:
            srv._notify()

    async def CreateForServiceAccount(self, request: Any, context: Any) -> Any:  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the stand-in")

    async def Revoke(self, request: Any, context: Any) -> Any:  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the stand-in")


class IamStandin(Progress):
    """A local Yandex IAM token service for one service account key (test stand-in)."""

    def __init__(
        self,
        public_key: RSAPublicKey,
        *,
        key_id: str,
        service_account_id: str,
        token_lifetime_s: float = 12 * 3600,
        audience: str = IAM_AUDIENCE,
        port: int = 0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.public_key = public_key
        self.key_id = key_id
        self.service_account_id = service_account_id
        self.token_lifetime_s = token_lifetime_s  # may be changed between calls
        self.audience = audience
        self.wall_clock = wall_clock
        self.requests = 0
        self.issued: list[str] = []
        self.rejected: list[str] = []
        self._fail_left = 0
        self._fail_code = grpc.StatusCode.UNAVAILABLE
        self._serial = 0
        self._tick = asyncio.Event()
        self._port = port
        self._server: grpc.aio.Server | None = None

    def fail_next(self, n: int = 1, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        """Fail the next `n` Create calls with `code`, before looking at the JWT."""
        self._fail_left, self._fail_code = n, code

    def check_jwt(self, token: str) -> str | None:
        """Why `token` is refused, or None when it is good."""
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "PS256":
                return f"JWT alg must be PS256, got {header.get('alg')!r}"
            if header.get("kid") != self.key_id:
                return f"JWT kid {header.get('kid')!r} is not a known key"
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["PS256"],
                audience=self.audience,
                issuer=self.service_account_id,
                options={"require": ["iss", "aud", "iat", "exp"]},
            )
        except jwt.InvalidSignatureError:
            return "JWT signature does not match the key"
        except jwt.PyJWTError as e:
            return f"JWT invalid: {e}"
        if claims["exp"] - claims["iat"] > MAX_JWT_LIFETIME_S:
            return f"JWT lifetime exceeds {MAX_JWT_LIFETIME_S} s"
        return None

    async def start(self) -> int:
        """Listen on 127.0.0.1; returns the port."""

        def register(server: grpc.aio.Server) -> None:
            iam_token_service_pb2_grpc.add_IamTokenServiceServicer_to_server(_IamTokenService(self), server)

        self._server, self._port = await start_grpc_server(register, self._port)
        return self._port

    @property
    def endpoint(self) -> str:
        """host:port for `IamTokenProvider(..., endpoint=..., tls=False)`."""
        return f"127.0.0.1:{self._port}"

    async def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            await self._server.stop(grace=0.5)
            self._server = None
