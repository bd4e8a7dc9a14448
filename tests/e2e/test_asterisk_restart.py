"""The real Asterisk restarted under the real service during calls (asterisk.sh down, then up).

Two sipp calls talk to the whole service (VoicebridgeApp with the SpeechKit/OpenAI stand-ins).
Asterisk stops: both calls end cleanly (no call task left, calls_active back to 0, a reason on
each), the controller reconnects once Asterisk is back, and a new call is answered and hears the
greeting. Measured and logged: time from `asterisk.sh up` returning (ARI answers) to the
controller's reconnection and to the first new call's answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from bridge.admin import AdminSettings
from bridge.ami import AmiSettings
from bridge.app import VoicebridgeApp
from bridge.ari import AriSettings
from bridge.audiosocket.server import AudioSocketSettings
from bridge.settings import Settings
from orchestrator.orchestrator import CallEvent
from testkit.phone_call import MAP
from testkit.ports import free_port
from testkit.sip import UAC_MEDIA_PORT, UAC_SIP_PORT, render_scenario, run_sipp, write_rtp_pcap
from testkit.standins.launch import running_standins
from tests.e2e.conftest import asterisk_sh, call_tasks, clear_leftovers

pytestmark = pytest.mark.asterisk
log = logging.getLogger(__name__)


async def _until(predicate: object, timeout: float) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - calls_active is a counter, no event
            await asyncio.sleep(0.02)


async def test_asterisk_restart_during_calls(asterisk: str, tmp_path: Path, caller_pcm: bytes) -> None:
    clear_leftovers()
    port = free_port()
    base = Settings(
        admin=AdminSettings(port=0),  # never the default 9180 another service may hold
        dialogue_map=MAP,
        audiosocket=AudioSocketSettings(bind_port=port),
        ami=AmiSettings(log_events=False),
        ari=AriSettings(audiosocket_host=f"127.0.0.1:{port}"),  # default reconnect backoff
    )
    first_play: dict[str, float] = {}
    greeted = asyncio.Event()

    def observe(call_id: str, event: CallEvent) -> None:
        if event.kind == "play" and call_id not in first_play:
            first_play[call_id] = time.monotonic()
            greeted.set()

    pcap = tmp_path / "caller.pcap"
    write_rtp_pcap(pcap, caller_pcm, total_s=60)
    scenario = render_scenario(
        "uac_wait_bye", tmp_path, exten="100", caller="79990001122", pcap=pcap, bye_timeout_ms=60000
    )
    async with running_standins(base) as (settings, _, _):
        app = VoicebridgeApp(settings, observer=observe)
        await app.start()
        sipp: asyncio.Task[object] | None = None
        try:
            assert app.ari is not None
            async with asyncio.timeout(15):
                await app.ari.connected.wait()
            sipp = asyncio.create_task(
                run_sipp(
                    scenario,
                    local_port=UAC_SIP_PORT,
                    media_port=UAC_MEDIA_PORT,
                    work_dir=tmp_path,
                    calls=2,
                    timeout_s=70,
                ),
                name="sipp-callers",
            )
            await _until(lambda: app.calls_active == 2 and len(first_play) == 2, 20)

            down = await asyncio.to_thread(asterisk_sh, "down", timeout_s=60)
            assert down.returncode == 0, down.stderr
            stopped = time.monotonic()
            await _until(lambda: app.calls_active == 0 and app.ari.active_calls == 0, 30)  # type: ignore[union-attr]
            ended_s = time.monotonic() - stopped
            assert call_tasks() == []
            reasons = [r for _, r in app.outcomes]
            assert len(reasons) == 2 and all(reasons), reasons
            sipp.cancel()  # the callers' Asterisk is gone; they never get their BYE
            await asyncio.gather(sipp, return_exceptions=True)

            connects = app.ari.connects
            up = await asyncio.to_thread(asterisk_sh, "up", timeout_s=300)
            assert up.returncode == 0, up.stdout + up.stderr
            back = time.monotonic()  # asterisk.sh up returns once ARI answers
            await _until(lambda: app.ari.connects == connects + 1, 30)  # type: ignore[union-attr]
            reconnected_s = time.monotonic() - back
            greeted.clear()
            before = set(first_play)
            sipp = asyncio.create_task(
                run_sipp(scenario, local_port=UAC_SIP_PORT, media_port=UAC_MEDIA_PORT, work_dir=tmp_path),
                name="sipp-caller-after-restart",
            )
            async with asyncio.timeout(20):
                await greeted.wait()
            new = [cid for cid in first_play if cid not in before]
            assert len(new) == 1
            answered_s = first_play[new[0]] - back
            log.warning(
                "Asterisk restart: calls ended %.2f s after asterisk.sh down returned; ARI reconnected "
                "%.2f s and the first new call was greeted %.2f s after asterisk.sh up returned "
                "(reasons %s)",
                ended_s,
                reconnected_s,
                answered_s,
                reasons,
            )
            print(
                f"RESTART ended_s={ended_s:.2f} reconnected_s={reconnected_s:.2f} "
                f"answered_s={answered_s:.2f} reasons={reasons}"
            )
        finally:
            if sipp is not None and not sipp.done():
                sipp.cancel()
                await asyncio.gather(sipp, return_exceptions=True)
            await app.close()
    assert app.calls_active == 0 and call_tasks() == []
