"""Shared fixtures: provider stand-ins, Redis, espeak speech (tests/conftest_providers.py); an
AudioSocket server, a fake ARI and a redis-server process on real sockets (below)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.pacer import Pacer
from testkit.fake_ari import FakeAri
from testkit.redis_server import RedisProcess

pytest_plugins = ["tests.conftest_providers"]


@pytest.fixture
async def audiosocket() -> AsyncIterator[AudioSocketServer]:
    """An AudioSocket server on a free loopback port, with its own running pacer."""
    pacer = Pacer()
    pacer.start()
    server = AudioSocketServer(AudioSocketSettings(bind_port=0), pacer=pacer)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
        pacer.stop()


@pytest.fixture
async def fake_ari() -> AsyncIterator[FakeAri]:
    """A fake Asterisk ARI (HTTP + events websocket) on a free loopback port."""
    ari = FakeAri()
    await ari.start()
    try:
        yield ari
    finally:
        await ari.close()


@pytest.fixture
async def redis_proc(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    """A redis-server process of the test's own (skips when the binary is missing)."""
    try:
        proc = RedisProcess(tmp_path)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    await proc.start()
    try:
        yield proc
    finally:
        proc.close()
