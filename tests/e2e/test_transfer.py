"""Transfer through ARI on the real Asterisk 22, with sipp as the caller.

The handler stands in for the Orchestrator (the dialogue side is tested on virtual time in
tests/test_transfer_dtmf.py): it asks `AriCall.transfer` to dial a stand-in operator of
asterisk_conf/extensions.conf `[voicebridge-operators]`. The operator extension answers only when
VB_INTENT reached its side of the Local channel, then plays a 1 kHz tone: the caller (sipp)
receiving that tone after the bot left is the proof that it was bridged with the operator.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import urllib.request
from pathlib import Path

import pytest

from bridge.ari import AriCall
from bridge.playout import Playout
from orchestrator.domain.models import TransferOutcome, TransferRequest
from testkit.sip import (
    UAC_MEDIA_PORT,
    UAC_SIP_PORT,
    Capture,
    analyse,
    render_scenario,
    run_sipp,
    write_rtp_pcap,
)
from tests.e2e.conftest import ARI, Stack, ari_get

pytestmark = pytest.mark.asterisk
log = logging.getLogger(__name__)

OPERATORS = "voicebridge-operators"
TONE_S = 3.0  # how long the test lets the operator's tone reach the caller


def _request(exten: str, timeout_s: float = 10.0) -> TransferRequest:
    return TransferRequest(
        endpoint=f"Local/{exten}@{OPERATORS}",
        timeout_s=timeout_s,
        variables={"VB_INTENT": "operator", "VB_STATE": "greeting", "VB_TRANSCRIPT": "user: оператора"},
        sip_headers=False,
    )


def _ari_delete(path: str) -> None:
    req = urllib.request.Request(f"{ARI.url.rstrip('/')}/ari/{path}", method="DELETE")
    token = base64.b64encode(f"{ARI.username}:{ARI.password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    urllib.request.urlopen(req, timeout=2).close()


async def _transfer_call(
    stack: Stack, tmp_path: Path, caller_pcm: bytes, request: TransferRequest
) -> tuple[list[TransferOutcome], Path]:
    outcomes: list[TransferOutcome] = []

    async def handler(call: AriCall) -> None:
        playout = Playout(call.conn)  # paced silence, as the real bridge sends
        stack.pacer.add(playout)
        try:
            outcomes.append(await call.transfer(request))
        finally:
            stack.pacer.remove(playout)

    stack.handler = handler
    pcap = tmp_path / "caller.pcap"
    write_rtp_pcap(pcap, caller_pcm, total_s=30)
    scenario = render_scenario(
        "uac_wait_bye", tmp_path, exten="100", caller="79990001122", pcap=pcap, bye_timeout_ms=25000
    )
    sipp = asyncio.create_task(
        run_sipp(scenario, local_port=UAC_SIP_PORT, media_port=UAC_MEDIA_PORT, work_dir=tmp_path), name="sipp"
    )
    capture = tmp_path / "capture.pcap"
    try:
        async with Capture(capture, f"udp and (dst port {UAC_MEDIA_PORT} or dst port {UAC_SIP_PORT})"):
            async with asyncio.timeout(request.timeout_s + 15):
                while not outcomes:  # noqa: ASYNC110 - the handler's result, polled
                    await asyncio.sleep(0.05)
            if outcomes == ["answered"]:
                await asyncio.sleep(TONE_S)  # the caller talks to the operator (hears the tone)
                # Our side of the Local channel pair (the bridge named it); its ;2 side goes with it.
                ops = [
                    c for c in _channels() if str(c["id"]).startswith("vb-op-") and ";" not in str(c["id"])
                ]
                assert len(ops) == 1, f"the operator's channel: {ops}"
                _ari_delete(f"channels/{ops[0]['id']}")  # the operator hangs up
            result = await sipp
    finally:
        if not sipp.done():
            sipp.cancel()
        await asyncio.gather(sipp, return_exceptions=True)
    assert result.ok, result.describe()  # the caller got a BYE in the end
    return outcomes, capture


def _channels() -> list[dict[str, object]]:
    items = ari_get("channels")
    assert isinstance(items, list)
    return items


async def test_transfer_to_an_operator_bridges_the_caller_and_ends_with_the_operator(
    stack: Stack, tmp_path: Path, caller_pcm: bytes
) -> None:
    outcomes, capture = await _transfer_call(stack, tmp_path, caller_pcm, _request("operator"))
    assert outcomes == ["answered"]
    a = analyse(capture, media_port=UAC_MEDIA_PORT, sip_port=UAC_SIP_PORT)
    # The bot sent only silence: every voiced packet is the operator's tone, through the bridge.
    assert len(a.voiced) >= int((TONE_S - 1.0) / 0.02), len(a.voiced)
    assert a.bye_seen
    await stack.wait_idle()
    assert stack.controller is not None
    async with asyncio.timeout(5):
        while stack.controller.transferred_ended < 1:  # noqa: ASYNC110 - a counter, polled
            await asyncio.sleep(0.05)
    await stack.assert_no_leftovers()


@pytest.mark.parametrize(("exten", "expected"), [("busy", "busy"), ("noanswer", "no_answer")])
async def test_busy_or_unanswered_operator_leaves_the_caller_with_the_bot(
    stack: Stack, tmp_path: Path, caller_pcm: bytes, exten: str, expected: TransferOutcome
) -> None:
    outcomes, _ = await _transfer_call(stack, tmp_path, caller_pcm, _request(exten, timeout_s=3.0))
    assert outcomes == [expected]
    await stack.wait_idle()
    await stack.assert_no_leftovers()
