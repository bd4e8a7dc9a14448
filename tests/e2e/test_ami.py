"""AMI against the real Asterisk: originate to a sipp callee; the answered call lands in Stasis."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bridge.ami import AmiError, AmiEventLogger, AmiSettings, OriginateError, originate
from bridge.ari import AriCall
from bridge.playout import Playout
from orchestrator.domain.models import AudioChunk
from testkit.sip import (
    UAS_MEDIA_PORT,
    UAS_SIP_PORT,
    render_scenario,
    run_sipp,
    tone_pcm,
    write_rtp_pcap,
)
from tests.e2e.conftest import Stack, call_tasks, udp_port_bound

pytestmark = pytest.mark.asterisk


async def test_originate_lands_in_stasis(
    stack: Stack, tmp_path: Path, caller_pcm: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[AriCall] = []

    async def handler(call: AriCall) -> None:
        calls.append(call)
        playout = Playout(call.conn)
        stack.pacer.add(playout)
        try:
            await playout.write(AudioChunk(tone_pcm(0.5)))
            await playout.drain()
        finally:
            stack.pacer.remove(playout)

    stack.handler = handler
    pcap = tmp_path / "callee.pcap"
    write_rtp_pcap(pcap, caller_pcm, total_s=20)
    scenario = render_scenario("uas", tmp_path, pcap=pcap, bye_timeout_ms=15000)
    sipp = asyncio.create_task(
        run_sipp(
            scenario,
            local_port=UAS_SIP_PORT,
            media_port=UAS_MEDIA_PORT,
            work_dir=tmp_path,
            remote=None,
            timeout_s=25,
        ),
        name="sipp-uas",
    )
    events = AmiEventLogger(AmiSettings())
    caplog.set_level(logging.INFO, logger="bridge.ami")
    try:
        await udp_port_bound(UAS_SIP_PORT)
        await events.start()
        assert events.connected
        channel_id = await originate(AmiSettings(), "79990001122", app="voicebridge", timeout_s=10)
        result = await sipp
    finally:
        if not sipp.done():
            sipp.cancel()
        await asyncio.gather(sipp, return_exceptions=True)
        await events.close()
    assert result.ok, result.describe()
    assert len(calls) == 1
    assert calls[0].channel_id == channel_id
    assert calls[0].exten == "79990001122"
    await stack.wait_idle()
    assert call_tasks() == []
    await stack.assert_no_leftovers()
    # The event logger saw the call end with its cause.
    assert any("AMI Hangup" in r.getMessage() and "cause=16" in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]


async def test_originate_unanswered_raises() -> None:
    # Nobody listens on the trunk's contact (no sipp UAS): the call fails, clearly.
    with pytest.raises(OriginateError, match="originate 79990001122"):
        await originate(AmiSettings(), "79990001122", app="voicebridge", timeout_s=3)


async def test_bad_credentials_and_bad_number() -> None:
    with pytest.raises(AmiError, match="login refused"):
        await originate(AmiSettings(secret="wrong"), "79990001122", app="voicebridge", timeout_s=3)
    with pytest.raises(ValueError, match="number="):
        await originate(AmiSettings(), "7999;rm", app="voicebridge", timeout_s=3)
