"""IamTokenProvider against the IAM stand-in on 127.0.0.1: JWT, first token, refresh, retries, key files."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from orchestrator.adapters.speechkit import YandexSettings
from orchestrator.adapters.yandex_iam import (
    IAM_AUDIENCE,
    IamTokenError,
    IamTokenProvider,
    ServiceAccountKey,
    build_jwt,
    load_service_account_key,
)
from orchestrator.domain.errors import ConfigError
from testkit.standins.iam_server import IamStandin

KEY_ID = "ajeqqqqqqqqqqqqqqqqq"
SA_ID = "ajesssssssssssssssss"


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _key_json(key: rsa.RSAPrivateKey) -> dict[str, str]:
    """What `yc iam key create --output key.json` writes (newer yc puts a warning line first)."""
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "id": KEY_ID,
        "service_account_id": SA_ID,
        "created_at": "2026-11-25T10:00:00.000000000Z",
        "key_algorithm": "RSA_2048",
        "public_key": public.decode(),
        "private_key": f"PLEASE DO NOT REMOVE THIS LINE! Yandex.Cloud SA Key ID <{KEY_ID}>\n" + _pem(key),
    }


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return _rsa()


@pytest.fixture
def sa_key(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> ServiceAccountKey:
    path = tmp_path / "key.json"
    path.write_text(json.dumps(_key_json(rsa_key)))
    return load_service_account_key(path)


@pytest.fixture
async def iam(rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[IamStandin]:
    server = IamStandin(rsa_key.public_key(), key_id=KEY_ID, service_account_id=SA_ID)
    await server.start()
    yield server
    await server.close()


def _settings(endpoint: str, **iam: float) -> YandexSettings:
    """Settings reaching the stand-in at `endpoint`; `iam` sets `iam_<name>` (refresh_every_s ...)."""
    fields = {f"iam_{name}": value for name, value in iam.items()}
    return dataclasses.replace(YandexSettings(), iam_endpoint=endpoint, tls=False, **fields)


def _provider(
    key: ServiceAccountKey, iam: IamStandin, *, on_token: Callable[[str], None] | None = None, **kw: float
) -> IamTokenProvider:
    return IamTokenProvider(key, _settings(iam.endpoint, timeout_s=5.0, **kw), on_token=on_token)


def test_jwt_is_what_yandex_documents(sa_key: ServiceAccountKey, rsa_key: rsa.RSAPrivateKey) -> None:
    token = build_jwt(sa_key, 1_800_000_000.7)
    assert jwt.get_unverified_header(token) == {"alg": "PS256", "kid": KEY_ID, "typ": "JWT"}
    claims = jwt.decode(
        token,
        rsa_key.public_key(),
        algorithms=["PS256"],
        audience=IAM_AUDIENCE,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims == {"iss": SA_ID, "aud": IAM_AUDIENCE, "iat": 1_800_000_000, "exp": 1_800_003_600}


async def test_first_token_before_start_returns(sa_key: ServiceAccountKey, iam: IamStandin) -> None:
    provider = _provider(sa_key, iam)
    with pytest.raises(IamTokenError):
        _ = provider.token
    await provider.start()
    try:
        assert provider.token == "t1.standin.1"
        assert iam.requests == 1 and iam.rejected == []
        # 12 h token, hourly refresh.
        now = asyncio.get_running_loop().time()
        assert provider.refresh_at - now == pytest.approx(3600, abs=5)
        assert provider.expires_at - now == pytest.approx(12 * 3600, abs=5)
    finally:
        await provider.aclose()
    assert provider.token == "t1.standin.1"  # still readable after close


async def test_refresh_happens_before_expiry(sa_key: ServiceAccountKey, iam: IamStandin) -> None:
    # Tokens live 1 s; refresh_every_s is an hour, so refreshes come from the expiry (at half-life).
    iam.token_lifetime_s = 1.0
    got: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    provider = _provider(sa_key, iam, on_token=lambda t: got.put_nowait((t, loop.time())))
    await provider.start()
    try:
        assert got.get_nowait()[0] == "t1.standin.1"
        for n in (2, 3):
            expiry = provider.expires_at
            async with asyncio.timeout(5):
                token, at = await got.get()
            assert token == f"t1.standin.{n}" and provider.token == token
            assert at < expiry  # the new token came while the old one was still valid
    finally:
        await provider.aclose()
    assert iam.rejected == []


async def test_refresh_every_s_applies_to_long_lived_tokens(
    sa_key: ServiceAccountKey, iam: IamStandin
) -> None:
    got: asyncio.Queue[str] = asyncio.Queue()
    provider = _provider(sa_key, iam, refresh_every_s=0.1, on_token=got.put_nowait)
    await provider.start()
    try:
        async with asyncio.timeout(5):
            tokens = [await got.get() for _ in range(3)]
        assert tokens == ["t1.standin.1", "t1.standin.2", "t1.standin.3"]
    finally:
        await provider.aclose()
    # The task is gone: no further calls after close.
    assert provider._task is None


async def test_failed_refresh_keeps_old_token_and_retries(
    sa_key: ServiceAccountKey, iam: IamStandin, caplog: pytest.LogCaptureFixture
) -> None:
    got: asyncio.Queue[str] = asyncio.Queue()
    provider = _provider(
        sa_key,
        iam,
        refresh_every_s=0.1,
        retry_backoff_s=0.05,
        retry_backoff_max_s=0.1,
        on_token=got.put_nowait,
    )
    await provider.start()
    try:
        assert got.get_nowait() == "t1.standin.1"
        iam.fail_next(3)
        with caplog.at_level(logging.WARNING, logger="orchestrator.adapters.yandex_iam"):
            # Three refreshes fail; the old token stays in use meanwhile.
            await iam.wait_for(lambda: iam.requests == 4)
            assert provider.token == "t1.standin.1"
            async with asyncio.timeout(5):
                assert await got.get() == "t1.standin.2"
        assert iam.requests == 5  # 1 + 3 failed + 1
        warnings = [r for r in caplog.records if "refresh failed" in r.getMessage()]
        assert len(warnings) == 3 and all(r.levelno == logging.WARNING for r in warnings)
        assert "UNAVAILABLE" in warnings[0].getMessage()
    finally:
        await provider.aclose()


async def test_bad_signature_is_rejected(sa_key: ServiceAccountKey, rsa_key: rsa.RSAPrivateKey) -> None:
    other = IamStandin(_rsa().public_key(), key_id=KEY_ID, service_account_id=SA_ID)
    await other.start()
    try:
        provider = IamTokenProvider(sa_key, _settings(other.endpoint))
        with pytest.raises(IamTokenError) as info:
            await provider.start()
        assert info.value.retryable is False
        assert "UNAUTHENTICATED" in str(info.value) and "signature" in str(info.value)
        assert other.rejected == ["JWT signature does not match the key"] and other.issued == []
        await provider.aclose()  # harmless after a failed start
    finally:
        await other.close()


async def test_wrong_kid_and_issuer_are_rejected(rsa_key: rsa.RSAPrivateKey, iam: IamStandin) -> None:
    for key_id, sa_id, reason in (("other-key", SA_ID, "kid"), (KEY_ID, "other-sa", "issuer")):
        key = ServiceAccountKey(key_id, sa_id, rsa_key, "test")
        with pytest.raises(IamTokenError) as info:
            await IamTokenProvider(key, _settings(iam.endpoint)).start()
        assert reason in str(info.value).lower() and not info.value.retryable


async def test_unreachable_service_is_retryable(sa_key: ServiceAccountKey, iam: IamStandin) -> None:
    iam.fail_next(1)
    with pytest.raises(IamTokenError) as info:
        await _provider(sa_key, iam).start()
    assert info.value.retryable is True


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.pop("service_account_id"), "'service_account_id' is missing"),
        (lambda d: d.pop("id"), "'id' is missing"),
        (lambda d: d.update(private_key=""), "'private_key' must be a non-empty string"),
        (lambda d: d.update(private_key="-----BEGIN PRIVATE KEY-----\nnope\n"), "'private_key' is not"),
        (lambda d: d.update(id=42), "'id' must be a non-empty string"),
    ],
)
def test_malformed_key_file_names_the_field(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, mutate: Callable[[dict[str, object]], object], expected: str
) -> None:
    data: dict[str, object] = dict(_key_json(rsa_key))
    mutate(data)
    path = tmp_path / "key.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        load_service_account_key(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_unreadable_key_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        (tmp_path / "k.json").write_text("{")
        load_service_account_key(tmp_path / "k.json")
    with pytest.raises(ConfigError, match="cannot read"):
        load_service_account_key(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="JSON object"):
        (tmp_path / "l.json").write_text("[]")
        load_service_account_key(tmp_path / "l.json")
