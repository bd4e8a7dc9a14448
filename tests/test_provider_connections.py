"""The providers' connections opened at start (`ProviderWiring.warm_connections`): a provider
that does not answer costs a warning and at most `[breaker] probe_timeout_s`, never the start.

The answering case (the stand-ins over real sockets) is in tests/test_observability_call.py.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from bridge.providers import ProviderWiring
from bridge.settings import Settings
from orchestrator.adapters.openai_settings import OpenAISettings
from orchestrator.adapters.speechkit import YandexSettings
from orchestrator.breaker import BreakerSettings
from orchestrator.clock import LoopClock


def _silent_listener() -> socket.socket:
    """A TCP port that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


async def test_providers_that_never_answer_cost_a_warning_and_the_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    silent = _silent_listener()
    port = silent.getsockname()[1]
    try:
        settings = Settings(
            openai=OpenAISettings(base_url=f"http://127.0.0.1:{port}/v1", api_key="k"),
            yandex=YandexSettings(stt_endpoint=f"127.0.0.1:{port}", tls=False, api_key="k"),
            breaker=BreakerSettings(probe_timeout_s=0.3),
        )
        wiring = ProviderWiring(settings, clock=LoopClock())
        wiring._openai_client()
        wiring._channel(settings.yandex.stt_endpoint)
        caplog.set_level(logging.INFO, logger="bridge.providers")
        async with asyncio.timeout(5):  # each waits at most 0.3 s: it returns, it does not hang
            await wiring.warm_connections()
        warnings = sorted(
            r.getMessage().split(": not connected")[0] for r in caplog.records if r.levelno == logging.WARNING
        )
        assert warnings == [f"LLM http://127.0.0.1:{port}/v1", f"SpeechKit 127.0.0.1:{port}"]
        await wiring.aclose()
    finally:
        silent.close()
