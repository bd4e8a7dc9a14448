"""A small campaign against the real Asterisk: AMI Originate to sipp callees that answer, are
busy (486) and never answer (rings until the originate times out); the outcomes come from
Asterisk's own OriginateResponse Reason, and the answered call lands in our Stasis app on the
channel id the dialler chose."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bridge.ami import AmiSettings
from bridge.ari import AriCall
from bridge.campaign import AmiDial, Campaign, CampaignSettings, Contact
from bridge.playout import Playout
from orchestrator.domain.models import AudioChunk
from testkit.sip import UAS_MEDIA_PORT, UAS_SIP_PORT, render_scenario, run_sipp, tone_pcm, write_rtp_pcap
from tests.e2e.conftest import Stack, udp_port_bound

pytestmark = pytest.mark.asterisk


class StackWaiter:
    """The service side: the e2e stack's handler plays a tone, hangs up and reports the call."""

    def __init__(self, stack: Stack) -> None:
        self.futures: dict[str, asyncio.Future[tuple[str, str, float]]] = {}
        self.variables: dict[str, dict[str, str]] = {}
        self.calls: list[AriCall] = []
        stack.handler = self.handler
        self._stack = stack

    def expect_call(
        self, channel_id: str, variables: dict[str, str]
    ) -> asyncio.Future[tuple[str, str, float]]:
        future: asyncio.Future[tuple[str, str, float]] = asyncio.get_running_loop().create_future()
        self.futures[channel_id] = future
        self.variables[channel_id] = variables
        return future

    def forget_call(self, channel_id: str) -> None:
        self.futures.pop(channel_id, None)

    async def handler(self, call: AriCall) -> None:
        self.calls.append(call)
        playout = Playout(call.conn)
        self._stack.pacer.add(playout)
        try:
            await playout.write(AudioChunk(tone_pcm(0.5)))
            await playout.drain()
        finally:
            self._stack.pacer.remove(playout)
        future = self.futures.pop(call.channel_id, None)
        if future is not None:
            future.set_result((call.call_id, "end_call", 0.5))


async def one_contact(
    stack: Stack, tmp_path: Path, scenario: Path, contact: Contact, *, calls: int, attempts: int
) -> tuple[dict[str, object], StackWaiter]:
    settings = CampaignSettings(calls_per_s=5, max_attempts=attempts, retry_delay_s=0.5, answer_timeout_s=4)
    waiter = StackWaiter(stack)
    dial = AmiDial(AmiSettings(), settings, waiter, app="voicebridge", call_bound_s=20)
    sipp = asyncio.create_task(
        run_sipp(
            scenario,
            local_port=UAS_SIP_PORT,
            media_port=UAS_MEDIA_PORT,
            work_dir=tmp_path,
            remote=None,
            timeout_s=40,
            calls=calls,
        ),
        name="sipp-uas",
    )
    results = tmp_path / f"{scenario.stem}.jsonl"
    try:
        await udp_port_bound(UAS_SIP_PORT)
        async with asyncio.timeout(40):
            await Campaign([contact], settings, dial, results).run()
        async with asyncio.timeout(40):
            result = await sipp
    finally:
        if not sipp.done():
            sipp.cancel()
        await asyncio.gather(sipp, return_exceptions=True)
    (record,) = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    assert result.ok, f"{record}\n{result.describe()}"
    return record, waiter


async def test_answered_busy_and_unanswered_contacts(stack: Stack, tmp_path: Path, caller_pcm: bytes) -> None:
    pcap = tmp_path / "callee.pcap"
    write_rtp_pcap(pcap, caller_pcm, total_s=10)
    answering = render_scenario("uas", tmp_path, pcap=pcap, bye_timeout_ms=15000)
    record, waiter = await one_contact(
        stack, tmp_path, answering, Contact("79990000001", {"name": "Анна"}), calls=1, attempts=2
    )
    assert (record["outcome"], record["attempts"], record["end_reason"]) == ("answered", 1, "end_call")
    (call,) = waiter.calls
    assert record["call_id"] == call.call_id and waiter.variables[call.channel_id] == {"name": "Анна"}
    await stack.wait_idle()

    busy = render_scenario("uas_busy", tmp_path)
    record, waiter = await one_contact(stack, tmp_path, busy, Contact("79990000002"), calls=2, attempts=2)
    assert (record["outcome"], record["attempts"]) == ("busy", 2), record
    assert waiter.calls == []

    ringing = render_scenario("uas_noanswer", tmp_path)
    record, waiter = await one_contact(stack, tmp_path, ringing, Contact("79990000003"), calls=1, attempts=1)
    assert (record["outcome"], record["attempts"]) == ("no_answer", 1), record
    assert waiter.calls == []
