"""Transfer through ARI on the real Asterisk 22, with sipp as the caller.

The handler stands in for the Orchestrator (the dialogue side is tested on virtual time in
tests/test_transfer_dtmf.py): it asks `AriCall.transfer` to dial a stand-in operator of
asterisk_conf/extensions.conf `[voicebridge-operators]`. The operator extension answers only when
VB_INTENT reached its side of the Local channel, then plays a 1 kHz tone: the caller (sipp)
receiving that tone after the bot left is the proof that it was bridged with the operator.

`PJSIP/operator` (asterisk_conf/pjsip.conf) is a second sipp, a UAS that rings before it answers:
its INVITE must carry the X-VB-* headers, the caller must hear ringback (425 Hz) while it rings,
and the caller's own tone (600 Hz) must reach it once bridged.
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
from bridge.ringback import RingbackControl, ringback_frames
from orchestrator.domain.models import TransferOutcome, TransferRequest
from testkit.sip import (
    UAC_MEDIA_PORT,
    UAC_SIP_PORT,
    UAS_MEDIA_PORT,
    UAS_SIP_PORT,
    Capture,
    analyse,
    near_tone,
    render_scenario,
    run_sipp,
    tone_pcm,
    write_rtp_pcap,
)
from tests.e2e.conftest import ARI, Stack, ari_get, udp_port_bound

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
    stack: Stack, tmp_path: Path, caller_pcm: bytes, request: TransferRequest, *, uas: Path | None = None
) -> tuple[list[TransferOutcome], Path]:
    """One call from the sipp caller that the handler transfers with `request` (ringback as the
    bridge plays it); `uas`: a sipp UAS scenario run meanwhile on UAS_SIP_PORT (the operator)."""
    outcomes: list[TransferOutcome] = []

    async def handler(call: AriCall) -> None:
        playout = Playout(call.conn)  # paced silence, as the real bridge sends
        stack.pacer.add(playout)
        try:
            outcomes.append(await RingbackControl(call, playout, ringback_frames()).transfer(request))
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
    operator = None
    if uas is not None:
        operator = asyncio.create_task(
            run_sipp(
                uas,
                local_port=UAS_SIP_PORT,
                media_port=UAS_MEDIA_PORT,
                work_dir=tmp_path,
                remote=None,
                timeout_s=40,
            ),
            name="sipp-operator",
        )
    capture = tmp_path / "capture.pcap"
    ports = (UAC_MEDIA_PORT, UAC_SIP_PORT, UAS_MEDIA_PORT)
    try:
        if uas is not None:
            await udp_port_bound(UAS_SIP_PORT)
        async with Capture(capture, "udp and (" + " or ".join(f"dst port {p}" for p in ports) + ")"):
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
            if operator is not None:
                operated = await operator
                assert operated.ok, operated.describe()  # the operator got a BYE too
    finally:
        for task in (sipp, operator):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(sipp, *([operator] if operator else []), return_exceptions=True)
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


async def test_transfer_to_a_pjsip_operator_sends_headers_rings_back_and_carries_the_callers_voice(
    stack: Stack, tmp_path: Path
) -> None:
    ring_s = 2.5  # one 1 s burst of ringback (its stop at the answer is timed in tests/test_ringback.py)
    operator_pcap = tmp_path / "operator.pcap"
    write_rtp_pcap(operator_pcap, tone_pcm(20, hz=1000), total_s=20, src_port=UAS_MEDIA_PORT)
    uas = render_scenario(
        "uas_operator", tmp_path, ring_ms=int(ring_s * 1000), pcap=operator_pcap, bye_timeout_ms=30000
    )
    request = TransferRequest(
        endpoint="PJSIP/operator",
        timeout_s=10,
        variables={
            "VB_INTENT": "operator",
            "VB_STATE": "greeting",
            "VB_TRANSCRIPT": "user: позовите оператора | bot: соединяю",
            "VB_VAR_ORDER_ID": "A-17",
        },
        sip_headers=True,
    )
    outcomes, capture = await _transfer_call(stack, tmp_path, tone_pcm(29, hz=600), request, uas=uas)
    assert outcomes == ["answered"]

    # What the bot collected arrived as SIP headers in the operator's INVITE.
    log_text = (tmp_path / "uas_operator.messages.log").read_text(encoding="utf-8", errors="replace")
    log_text = log_text.replace("\r\n", "\n")
    invite = log_text[log_text.index("INVITE sip:") :].split("\n\n", 1)[0]
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in invite.splitlines()[1:])
    }
    assert "79990001122" in headers.get("from", ""), invite  # the caller's number (callerId)
    assert headers.get("x-vb-intent") == "operator", invite
    assert headers.get("x-vb-state") == "greeting", invite
    assert headers.get("x-vb-var-order-id") == "A-17", invite
    assert headers.get("x-vb-transcript") == "user: позовите оператора | bot: соединяю", invite

    # The caller heard ringback (425 Hz) while the operator rang, then the operator (1 kHz) only.
    heard = analyse(capture, media_port=UAC_MEDIA_PORT, sip_port=UAC_SIP_PORT)
    ringback, voice = near_tone(heard.voiced, 425), near_tone(heard.voiced, 1000)
    assert len(ringback) >= 45, f"{len(ringback)} ringback packets"  # the first 1 s burst: 50
    assert len(voice) >= int((TONE_S - 1.0) / 0.02), f"{len(voice)} operator packets"
    assert ringback[-1].t < voice[0].t, "ringback went on after the operator answered"
    # The operator heard the caller (600 Hz), through the bridge, after the bot left.
    operator_heard = analyse(capture, media_port=UAS_MEDIA_PORT, sip_port=UAS_SIP_PORT)
    assert len(near_tone(operator_heard.voiced, 600)) >= int((TONE_S - 1.0) / 0.02)
    assert not near_tone(operator_heard.voiced, 425)  # the ringback stayed on the caller's side
    await stack.wait_idle()
    await stack.assert_no_leftovers()
