"""ari.conf `channelvars = VB_RECORD` on the real Asterisk 22: a call to `recorded` (whose
dialplan sets VB_RECORD=1 before Stasis) hands it to the handler in `AriCall.channel_vars`; a
call to another number has it unset."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.ari import AriCall
from bridge.recording import RECORD_VARIABLE, parse_record_flag
from testkit.sip import UAC_MEDIA_PORT, UAC_SIP_PORT, render_scenario, run_sipp, write_rtp_pcap
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.asterisk


@pytest.mark.parametrize(("exten", "record"), [("recorded", True), ("100", None)])
async def test_vb_record_reaches_the_call(
    stack: Stack, tmp_path: Path, caller_pcm: bytes, exten: str, record: bool | None
) -> None:
    seen: list[dict[str, str]] = []

    async def handler(call: AriCall) -> None:
        seen.append(call.channel_vars)  # returning hangs the caller up

    stack.handler = handler
    pcap = tmp_path / "caller.pcap"
    write_rtp_pcap(pcap, caller_pcm, total_s=10)
    scenario = render_scenario(
        "uac_wait_bye", tmp_path, exten=exten, caller="79990001122", pcap=pcap, bye_timeout_ms=10000
    )
    result = await run_sipp(scenario, local_port=UAC_SIP_PORT, media_port=UAC_MEDIA_PORT, work_dir=tmp_path)
    assert result.ok, result.describe()
    assert len(seen) == 1 and RECORD_VARIABLE in seen[0], seen
    assert parse_record_flag(seen[0][RECORD_VARIABLE]) is record
    await stack.wait_idle()
    await stack.assert_no_leftovers()
