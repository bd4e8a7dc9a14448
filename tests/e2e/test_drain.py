"""Graceful drain on a real Asterisk 22 (issue 9's "Done when"): SIGTERM during a call lets that
call finish its dialogue, while a new call placed during the drain gets 503 at the SIP level.

The bridge runs in this process with the same signal handling as `voicebridge serve`
(`bridge.stop_signals`), and a real SIGTERM is sent to the process; sipp places both calls.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from bridge.admin import AdminSettings
from bridge.app import VoicebridgeApp
from bridge.ari import AriSettings
from bridge.audiosocket.server import AudioSocketSettings
from bridge.settings import Settings
from bridge.stop_signals import stop_signals
from orchestrator.call_settings import CallSettings
from orchestrator.orchestrator import CallEvent
from testkit.phone_call import MAP, plan_caller_lines
from testkit.ports import free_port
from testkit.sip import UAC_MEDIA_PORT, UAC_SIP_PORT, espeak_pcm, render_scenario, run_sipp, write_rtp_pcap
from testkit.standins.launch import DEMO_CALLER_LINES, running_standins

pytestmark = pytest.mark.asterisk

CALL_S = 90.0


async def test_sigterm_lets_the_call_finish_and_refuses_a_new_call_with_503(
    asterisk: str, tmp_path: Path
) -> None:
    port = free_port()
    base = Settings(
        admin=AdminSettings(port=0),  # never the default 9180 another service may hold
        dialogue_map=MAP,
        audiosocket=AudioSocketSettings(bind_port=port),
        ari=AriSettings(audiosocket_host=f"127.0.0.1:{port}"),
        call=CallSettings(drain_timeout_s=CALL_S),  # long enough: the call ends by its dialogue
    )
    events: list[CallEvent] = []
    greeting = asyncio.Event()

    def observe(_cid: str, event: CallEvent) -> None:
        events.append(event)
        if event.kind == "play":
            greeting.set()

    lines = list(DEMO_CALLER_LINES)
    async with running_standins(base, caller_lines=lines) as (settings, _, _):
        app = VoicebridgeApp(settings, observer=observe)
        stop = asyncio.Event()
        with stop_signals(app, stop):
            await app.start()
            serving = asyncio.create_task(app.run_until(stop), name="test-serving")
            try:
                assert app.ari is not None
                async with asyncio.timeout(15):
                    await app.ari.connected.wait()
                # Call A: the whole demo dialogue, to END_CALL and the bot's BYE.
                offsets = await plan_caller_lines(app, lines, None)
                pcm = bytearray()
                for at, line in zip(offsets, lines, strict=True):
                    pcm += bytes(max(int(at * 8000) * 2 - len(pcm), 0)) + espeak_pcm(line)
                pcap = tmp_path / "caller.pcap"
                write_rtp_pcap(pcap, bytes(pcm), lead_silence_s=0, total_s=CALL_S)
                scenario_a = render_scenario(
                    "uac_wait_bye",
                    tmp_path,
                    exten="100",
                    caller="79990001122",
                    pcap=pcap,
                    bye_timeout_ms=int(CALL_S * 1000),
                )
                call_a = asyncio.create_task(
                    run_sipp(
                        scenario_a,
                        local_port=UAC_SIP_PORT,
                        media_port=UAC_MEDIA_PORT,
                        work_dir=tmp_path,
                        timeout_s=CALL_S + 10,
                    ),
                    name="test-call-a",
                )
                async with asyncio.timeout(30):
                    await greeting.wait()  # call A is in its dialogue
                os.kill(os.getpid(), signal.SIGTERM)  # a deploy
                async with asyncio.timeout(5):
                    while not app.draining:  # noqa: ASYNC110 - the handler runs on this loop
                        await asyncio.sleep(0.01)

                # Call B during the drain: refused with 503, which a proxy would retry elsewhere.
                scenario_b = render_scenario("uac_refused_503", tmp_path, exten="100", caller="79990003344")
                refused = await run_sipp(
                    scenario_b,
                    local_port=UAC_SIP_PORT + 1,
                    media_port=UAC_MEDIA_PORT + 100,
                    work_dir=tmp_path,
                    timeout_s=20,
                )
                assert refused.ok, refused.describe()
                assert app.ari.refused == 1

                sipp_a = await call_a
                assert sipp_a.ok, sipp_a.describe()  # call A got the bot's BYE at its END_CALL
                async with asyncio.timeout(30):
                    await serving  # the drain ended with the last call
                assert not stop.is_set(), "the service stopped by a stop, not by the drain"
            finally:
                await app.close()
                if not serving.done():
                    serving.cancel()
                    await asyncio.gather(serving, return_exceptions=True)
    # Call A finished its dialogue: every line heard and routed, ended by the map's END_CALL.
    assert [e.data["text"] for e in events if e.kind == "user_said"] == lines
    assert [reason for _cid, reason in app.outcomes] == ["end_call"]
