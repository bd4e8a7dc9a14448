"""ARI controller failure paths against the real Asterisk: one broken call never takes down others.

- The AudioSocket connection never arrives (Asterisk connects to a TCP "black hole" that never
  forwards the UUID): the bounded setup wait fails, the caller is hung up, nothing is left over.
- The caller hangs up while the setup is still waiting: the call is cleaned up without the
  handler ever being called.
- Three calls at once, the handler of one raises: that call is hung up, the others finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.ari import AriCall
from bridge.audiosocket.protocol import encode_audio
from bridge.playout import Playout
from orchestrator.audio import FRAME_S, SILENCE_FRAME
from orchestrator.domain.models import AudioChunk
from testkit.sip import UAC_MEDIA_PORT, UAC_SIP_PORT, render_scenario, run_sipp, tone_pcm, write_rtp_pcap
from tests.e2e.conftest import Stack, call_tasks

pytestmark = pytest.mark.asterisk


@pytest.fixture
async def black_hole() -> AsyncIterator[int]:
    """A TCP listener that accepts, never reads, and sends slin silence every 20 ms (a live
    line); yields its port.

    Silence, not nothing: Asterisk 22's AudioSocket read waits for a frame without a deadline
    holding its channel's lock (asterisk/asterisk#2089), which stalls a DELETE of that channel and
    ARI's lookups of channels by id (bridge/ari/legs.py `CallLegs.tear_down`), so a mute peer made our caller DELETE time out and the caller never got its BYE (1 of 12 runs
    under load): an Asterisk fault, not the missing connection these tests are about.
    """
    writers: list[asyncio.StreamWriter] = []
    closed = asyncio.Event()
    silence = encode_audio(SILENCE_FRAME)

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while not closed.is_set():
            writer.write(silence)
            # Pacing a line at 20 ms frames, not waiting for anything: a timeout is the point.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), FRAME_S)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        closed.set()
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
async def broken_stack(asterisk: str, black_hole: int) -> AsyncIterator[Stack]:
    s = Stack(timeout_s=2.0)
    await s.start(audiosocket_port=black_hole)
    try:
        yield s
    finally:
        await s.close()


def caller(tmp_path: Path, caller_pcm: bytes, name: str, **values: int) -> Path:
    pcap = tmp_path / "caller.pcap"
    write_rtp_pcap(pcap, caller_pcm, total_s=20)
    return render_scenario(name, tmp_path, exten="100", caller="79990001122", pcap=pcap, **values)


async def test_audiosocket_never_connects(
    broken_stack: Stack, tmp_path: Path, caller_pcm: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    called: list[AriCall] = []

    async def handler(call: AriCall) -> None:
        called.append(call)

    broken_stack.handler = handler
    caplog.set_level(logging.INFO, logger="bridge.ari")
    # The caller is hung up by the controller (BYE) after the bounded wait for AudioSocket.
    scenario = caller(tmp_path, caller_pcm, "uac_wait_bye", bye_timeout_ms=10000)
    result = await run_sipp(scenario, local_port=UAC_SIP_PORT, media_port=UAC_MEDIA_PORT, work_dir=tmp_path)
    assert result.ok, result.describe()
    assert called == []
    assert any("AudioSocket connection: no result within 2.0 s" in r.getMessage() for r in caplog.records)
    await broken_stack.wait_idle()
    await broken_stack.assert_no_leftovers()
    assert broken_stack.controller is not None and broken_stack.controller.connected.is_set()


async def test_caller_hangs_up_during_setup(
    broken_stack: Stack, tmp_path: Path, caller_pcm: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    called: list[AriCall] = []

    async def handler(call: AriCall) -> None:
        called.append(call)

    broken_stack.handler = handler
    caplog.set_level(logging.INFO, logger="bridge.ari")
    # Hang up after 0.5 s, well inside the 2 s wait for the AudioSocket connection.
    scenario = caller(tmp_path, caller_pcm, "uac_hangup", hangup_ms=500)
    result = await run_sipp(scenario, local_port=UAC_SIP_PORT, media_port=UAC_MEDIA_PORT, work_dir=tmp_path)
    assert result.ok, result.describe()
    await broken_stack.wait_idle()
    assert called == []
    assert any("caller hung up during setup" in r.getMessage() for r in caplog.records)
    await broken_stack.assert_no_leftovers()


async def test_one_failing_handler_does_not_affect_other_calls(
    stack: Stack, tmp_path: Path, caller_pcm: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    started: list[str] = []
    finished: list[str] = []

    async def handler(call: AriCall) -> None:
        started.append(call.call_id)
        if len(started) == 2:
            raise RuntimeError("broken dialogue map")  # this call only
        playout = Playout(call.conn)
        stack.pacer.add(playout)
        try:
            await playout.write(AudioChunk(tone_pcm(1.5)))
            await playout.drain()
        finally:
            stack.pacer.remove(playout)
        finished.append(call.call_id)

    stack.handler = handler
    caplog.set_level(logging.WARNING, logger="bridge.ari")
    scenario = caller(tmp_path, caller_pcm, "uac_wait_bye", bye_timeout_ms=10000)
    result = await run_sipp(
        scenario, local_port=UAC_SIP_PORT, media_port=UAC_MEDIA_PORT, work_dir=tmp_path, calls=3
    )
    # Every call got its BYE: the failing one at once, the others after their audio.
    assert result.ok, result.describe()
    assert len(set(started)) == 3
    assert len(finished) == 2 and started[1] not in finished
    await stack.wait_idle()
    assert call_tasks() == []
    # The failing call's silent AudioSocket leg once stalled Asterisk's ARI (legs.tear_down): a
    # request that timed out shows it even when the BYEs still came within sipp's bound.
    assert not [r.getMessage() for r in caplog.records if "no result within" in r.getMessage()]
    assert not [r.getMessage() for r in caplog.records if "failed: TimeoutError" in r.getMessage()]
    await stack.assert_no_leftovers()
