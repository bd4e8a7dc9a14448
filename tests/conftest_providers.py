"""Fixtures for the provider adapters: stand-in servers on 127.0.0.1, a real redis-server, speech audio.

Loaded from tests/conftest.py (`pytest_plugins = ["tests.conftest_providers"]`), or with
`pytest -p tests.conftest_providers`.

- `redis_url` (session): a private redis-server on a free port, no persistence, stopped at the end.
- `make_speech` (session): text -> 8 kHz mono s16le PCM spoken by espeak-ng -v ru (WAV made by
  espeak-ng, converted by sox), cached per text.
- `speechkit_standin`: a started `SpeechKitStandin` (STT + TTS on the real protos).
- `speechkit_grpc_channel`: an insecure grpc.aio channel to it.
- `openai_standin`: a started `OpenAIStandin`.
- `openai_client`: `openai.AsyncOpenAI` pointed at it (no retries).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator

import grpc
import openai
import pytest

from orchestrator.adapters.speechkit import speechkit_channel
from orchestrator.adapters.tts.espeak import espeak_pcm_sync
from testkit.ports import free_port
from testkit.standins.openai_server import OpenAIStandin
from testkit.standins.speechkit_server import SpeechKitStandin


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a throwaway redis-server (skips when the binary is missing)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # wait until it accepts connections (a blocking fixture, not library code)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def make_speech() -> Callable[[str], bytes]:
    """text -> Russian speech as 8 kHz mono s16le PCM (espeak-ng), cached per text."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is needed (make system-deps)")
    cache: dict[str, bytes] = {}

    def make(text: str) -> bytes:
        if text not in cache:
            cache[text] = espeak_pcm_sync(text)
        return cache[text]

    return make


@pytest.fixture
async def speechkit_standin() -> AsyncIterator[SpeechKitStandin]:
    """A SpeechKit stand-in on 127.0.0.1 (default script empty: set `.script`)."""
    server = SpeechKitStandin()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def speechkit_grpc_channel(speechkit_standin: SpeechKitStandin) -> AsyncIterator[grpc.aio.Channel]:
    """An insecure channel to the stand-in."""
    channel = speechkit_channel(speechkit_standin.endpoint, tls=False)
    try:
        yield channel
    finally:
        await channel.close()


@pytest.fixture
async def openai_standin() -> AsyncIterator[OpenAIStandin]:
    """An OpenAI-compatible stand-in on 127.0.0.1."""
    server = OpenAIStandin()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def openai_client(openai_standin: OpenAIStandin) -> AsyncIterator[openai.AsyncOpenAI]:
    """An SDK client for the stand-in; no retries, so every fault is seen."""
    client = openai.AsyncOpenAI(base_url=openai_standin.base_url, api_key="test", max_retries=0, timeout=10)
    try:
        yield client
    finally:
        await client.close()
