"""`play_emergency`: the one emergency phrase before a hang-up, used by the Orchestrator (a bug in
the dialogue) and the service (a call that failed to set up): bounded, quiet for a caller already
gone, logged with the call id otherwise."""

from __future__ import annotations

import asyncio
import logging

import pytest

from orchestrator.domain.errors import AudioClosed
from orchestrator.domain.models import AudioChunk
from orchestrator.responses import play_emergency
from testkit.virtual_time import run_virtual

CLIP = AudioChunk(b"\x01\x00" * 800, 8000)


class _Outbound:
    def __init__(self, *, closed: bool = False) -> None:
        self.closed = closed
        self.written: list[AudioChunk] = []
        self.drained = False

    async def write(self, chunk: AudioChunk) -> None:
        if self.closed:
            raise AudioClosed("the caller hung up")
        self.written.append(chunk)

    async def drain(self) -> None:
        self.drained = True


class _Cache:
    def __init__(self, *, hang: bool = False) -> None:
        self.hang = hang

    async def get(self, key: str) -> AudioChunk | None:
        if self.hang:
            await asyncio.sleep(3600)
        return CLIP if key == "static:emergency" else None


async def _play(cache: _Cache, outbound: _Outbound) -> None:
    await play_emergency(
        cache,  # type: ignore[arg-type]
        outbound,  # type: ignore[arg-type]
        "static:emergency",
        call_id="call-7",
        bound_s=5.0,
        cache_timeout_s=0.5,
    )


def test_the_phrase_is_written_and_drained() -> None:
    outbound = _Outbound()
    run_virtual(lambda: _play(_Cache(), outbound))
    assert outbound.written == [CLIP] and outbound.drained


def test_a_caller_already_gone_is_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        run_virtual(lambda: _play(_Cache(), _Outbound(closed=True)))
    assert caplog.records == []


def test_a_frozen_cache_is_bounded_by_the_cache_timeout_and_named_with_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await _play(_Cache(hang=True), _Outbound())
        return loop.time() - started

    with caplog.at_level(logging.WARNING):
        took = run_virtual(main)
    assert took == pytest.approx(0.5)  # the cache bound, not the whole apology's 5 s
    [record] = caplog.records
    assert "call call-7" in record.getMessage() and "static:emergency" in record.getMessage()
