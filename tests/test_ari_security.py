"""Secure defaults of the Asterisk side: ARI over TLS (verified by default), credentials only in an
Authorization header, and a WARNING at start for default credentials or plain HTTP off the host.

TLS runs against the fake ARI server (testkit.fake_ari) on a real socket, with a CA and server
certificate generated here (testkit.tls); like Asterisk 22 the fake says `http://` in its swagger
`basePath` even over TLS, so a call set up here also proves the bridge keeps https.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from pathlib import Path

import pydantic
import pytest

from bridge import asterisk_names
from bridge.ami import AmiError, AmiSettings, originate
from bridge.ari import AriCall, AriController, AriSettings
from bridge.audiosocket.server import AudioSocketServer
from testkit.fake_ari import FakeAri
from testkit.tls import Certs, make_ca_and_server_cert

T = 10.0


class LogWaiter(logging.Handler):
    """Sets `seen` when a record whose message contains `needle` is logged."""

    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle
        self.seen = asyncio.Event()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.needle in record.getMessage():
            self.seen.set()


@pytest.fixture
def log_waiter() -> Callable[[str], LogWaiter]:
    root = logging.getLogger()
    handlers: list[LogWaiter] = []

    def make(needle: str) -> LogWaiter:
        handler = LogWaiter(needle)
        root.addHandler(handler)
        handlers.append(handler)
        return handler

    yield make  # type: ignore[misc]
    for h in handlers:
        root.removeHandler(h)


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asterisk_names, "_warned", set())  # warn-once state per test


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_ca_and_server_cert(tmp_path)


class Controller:
    """An AriController running in a task, with a handler that records calls and returns."""

    def __init__(self, settings: AriSettings, audiosocket: AudioSocketServer) -> None:
        self.calls: list[AriCall] = []
        self.called = asyncio.Event()
        self.controller = AriController(settings, audiosocket, self._on_call)
        self.task = asyncio.create_task(self.controller.run(), name="test-ari-controller")

    async def _on_call(self, call: AriCall) -> None:
        self.calls.append(call)
        self.called.set()

    async def close(self) -> None:
        await self.controller.close()
        await asyncio.wait_for(self.task, T)


def _settings(fake: FakeAri, audiosocket: AudioSocketServer, **kw: object) -> AriSettings:
    return AriSettings(
        url=fake.url,
        audiosocket_host=f"127.0.0.1:{audiosocket.port}",
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
        **kw,  # type: ignore[arg-type]
    )


async def test_ari_over_tls_with_our_ca_serves_a_call_and_keeps_credentials_out_of_urls(
    certs: Certs, audiosocket: AudioSocketServer
) -> None:
    fake = FakeAri(ssl_context=certs.server_context(), username="vb", password="S3cret-pass")
    await fake.start()
    ctl = Controller(
        _settings(fake, audiosocket, ca_file=str(certs.ca_file), username="vb", password="S3cret-pass"),
        audiosocket,
    )
    try:
        assert fake.url.startswith("https://")
        async with asyncio.timeout(T):
            await ctl.controller.connected.wait()
        await fake.place_call()
        async with asyncio.timeout(T):
            await ctl.called.wait()  # answer, bridge, externalMedia over https; events over wss
        await fake.wait_for(lambda: not fake.channels and not fake.bridges, T)  # hung up, cleaned
    finally:
        await ctl.close()
        await fake.close()
    assert fake.ws_connects == 1
    assert fake.requests and all(r.auth == "basic" for r in fake.requests)
    assert not any("api_key" in r.query for r in fake.requests)


async def test_tls_certificate_is_verified_by_default(
    certs: Certs, audiosocket: AudioSocketServer, log_waiter: Callable[[str], LogWaiter]
) -> None:
    fake = FakeAri(ssl_context=certs.server_context())
    await fake.start()
    refused = log_waiter("CERTIFICATE_VERIFY_FAILED")
    ctl = Controller(_settings(fake, audiosocket), audiosocket)  # no ca_file: the system's CAs
    try:
        async with asyncio.timeout(T):
            await refused.seen.wait()
        assert not ctl.controller.connected.is_set() and fake.ws_connects == 0
    finally:
        await ctl.close()
        await fake.close()


async def test_tls_without_verification_connects_but_says_so(
    certs: Certs, audiosocket: AudioSocketServer, log_waiter: Callable[[str], LogWaiter]
) -> None:
    fake = FakeAri(ssl_context=certs.server_context())
    await fake.start()
    logs = log_waiter("without certificate checks")
    ctl = Controller(_settings(fake, audiosocket, verify_tls=False), audiosocket)
    try:
        async with asyncio.timeout(T):
            await ctl.controller.connected.wait()
        assert logs.seen.is_set()
    finally:
        await ctl.close()
        await fake.close()


@pytest.mark.parametrize("password", ["voicebridge", "An0ther-pass"])
async def test_default_ari_credentials_are_warned_about_at_start(
    password: str, audiosocket: AudioSocketServer, log_waiter: Callable[[str], LogWaiter]
) -> None:
    fake = FakeAri(password=password)
    await fake.start()
    logs = log_waiter("uses the default password")
    ctl = Controller(_settings(fake, audiosocket, password=password), audiosocket)
    try:
        async with asyncio.timeout(T):
            await ctl.controller.connected.wait()
    finally:
        await ctl.close()
        await fake.close()
    warned = [r for r in logs.records if "uses the default password" in r.getMessage()]
    if password == "voicebridge":
        assert len(warned) == 1 and warned[0].levelno == logging.WARNING
        assert "[ari] username/password" in warned[0].getMessage()
    else:
        assert warned == []


async def test_plain_http_to_another_host_is_warned_about(
    audiosocket: AudioSocketServer, log_waiter: Callable[[str], LogWaiter]
) -> None:
    logs = log_waiter("plain HTTP to another host")
    # 192.0.2.1 (TEST-NET-1) never answers; the warning comes before any attempt.
    controller = AriController(
        AriSettings(url="http://192.0.2.1:8088/", password="An0ther-pass", timeout_s=0.2),
        audiosocket,
        lambda call: asyncio.sleep(0),
    )
    task = asyncio.create_task(controller.run(), name="test-ari-controller")
    try:
        async with asyncio.timeout(T):
            await logs.seen.wait()
    finally:
        await controller.close()
        await asyncio.wait_for(task, T)


async def test_default_ami_secret_is_warned_about(log_waiter: Callable[[str], LogWaiter]) -> None:
    logs = log_waiter("AMI uses the default password")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens once the socket is closed
    with pytest.raises(AmiError):
        await originate(
            AmiSettings(port=closed_port, login_timeout_s=1.0), "100", app="voicebridge", timeout_s=1.0
        )
    warned = [r for r in logs.records if "AMI uses the default password" in r.getMessage()]
    assert len(warned) == 1 and "[ami] username/secret" in warned[0].getMessage()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("url", "ftp://127.0.0.1:8088/", "expected an http:// or https:// URL"),
        ("url", "127.0.0.1:8088", "expected an http:// or https:// URL"),
        ("ca_file", "/nonexistent/ca.pem", "/nonexistent/ca.pem: no such readable file"),
    ],
)
def test_bad_tls_settings_name_the_field(field: str, value: str, message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        AriSettings(**{field: value})  # type: ignore[arg-type]
    assert field in str(err.value) and message in str(err.value)
