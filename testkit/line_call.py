"""A whole voicebridge call through the real Asterisk on a live RTP line (`testkit.rtp_line`).

Like `testkit.phone_call.run_phone_call`, but the caller's media is not a pre-recorded pcap: an
`RtpLine` answers Asterisk's RTP as it comes, so the caller can hear the bot and the line can
carry the echo of the bot's own voice back to it. The caller's speech is placed relative to the
first packet heard (the greeting's start). sipp only signals (`scenarios/uac_rtp_line.xml`).
"""

from __future__ import annotations

import asyncio
import gc
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.admin import AdminSettings
from bridge.app import VoicebridgeApp
from bridge.ari import AriSettings
from bridge.audiosocket.server import AudioSocketSettings
from bridge.settings import Settings
from orchestrator.audio import FRAME_BYTES
from orchestrator.orchestrator import CallEvent, Orchestrator
from testkit.phone_call import MAP, _clip_s
from testkit.ports import free_port
from testkit.rtp_line import RtpLine
from testkit.sip import (
    UAC_MEDIA_PORT,
    UAC_SIP_PORT,
    VOICED_RMS,
    SippResult,
    espeak_pcm,
    render_scenario,
    run_sipp,
)
from testkit.standins.launch import running_standins

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # stdlib audioop on 3.11/3.12
    import audioop

__all__ = ["LineCallResult", "run_line_call"]


@dataclass
class LineCallResult:
    """What happened on the call: the line (what the caller heard), the bridge's records."""

    sipp: SippResult
    line: RtpLine
    greeting_s: float  # the greeting clip's length
    greeting_voiced: int  # its 20 ms frames louder than RMS 200 (through u-law): what must arrive
    events: list[CallEvent] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[tuple[str, str]] = field(default_factory=list)
    orchestrators_left: int = 0

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def states(self) -> list[tuple[str, str]]:
        return [
            (str(e.data["from_state"]), str(e.data["to_state"])) for e in self.events if e.kind == "state"
        ]


async def run_line_call(
    work_dir: Path,
    caller: Sequence[tuple[float | str, str]],
    *,
    stt_lines: Sequence[str],
    echo_db: float | None = None,
    echo_delay_ms: int = 60,
    call_timeout_s: float = 45.0,
    hangup_after_s: float | None = None,
) -> LineCallResult:
    """Place one call; the caller says each (at, text) of `caller` (espeak-ng) at `at` s after
    the greeting's first voiced packet, or "after+N": N s after the greeting should have ended. The STT
    stand-in "recognises" each voiced stretch it hears as the next of `stt_lines`. The call ends
    with the bot's BYE, or the caller's `hangup_after_s` after it was answered."""
    port = free_port()
    (work_dir / "turns.jsonl").unlink(missing_ok=True)
    base = Settings(
        dialogue_map=MAP,
        metrics_file=str(work_dir / "turns.jsonl"),
        audiosocket=AudioSocketSettings(bind_port=port),
        ari=AriSettings(audiosocket_host=f"127.0.0.1:{port}"),
        admin=AdminSettings(port=0),
    )
    events: list[CallEvent] = []
    async with running_standins(base, caller_lines=stt_lines) as (settings, _, _):
        app = VoicebridgeApp(settings, observer=lambda _cid, event: events.append(event))
        await app.start()
        try:
            assert app.ari is not None
            async with asyncio.timeout(15):
                await app.ari.connected.wait()
            greeting_s = await _clip_s(app, "static:greeting")
            greeting_voiced = await _voiced_frames(app, "static:greeting")
            async with RtpLine(
                echo_db=echo_db, echo_delay_ms=echo_delay_ms, duration_s=call_timeout_s
            ) as line:
                for at, text in caller:
                    offset = greeting_s + float(at[6:]) if isinstance(at, str) else at
                    line.say_after_voice(offset, espeak_pcm(text))
                common: dict[str, str | int] = {
                    "exten": "100",
                    "caller": "79990001122",
                    "rtp_port": line.port,
                }
                if hangup_after_s is None:
                    scenario = render_scenario(
                        "uac_rtp_line", work_dir, bye_timeout_ms=int(call_timeout_s * 1000), **common
                    )
                else:
                    scenario = render_scenario(
                        "uac_rtp_line_hangup", work_dir, hangup_ms=int(hangup_after_s * 1000), **common
                    )
                sipp = await run_sipp(
                    scenario,
                    local_port=UAC_SIP_PORT,
                    media_port=UAC_MEDIA_PORT,
                    work_dir=work_dir,
                    timeout_s=call_timeout_s + 10,
                )
            async with asyncio.timeout(10):
                while app.calls_active or (app.audiosocket and app.audiosocket.connections):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            gc.collect()
            orchestrators_left = sum(1 for o in gc.get_objects() if type(o) is Orchestrator)
        finally:
            await app.close()
        outcomes = list(app.outcomes)
    result = LineCallResult(
        sipp=sipp,
        line=line,
        greeting_s=greeting_s,
        greeting_voiced=greeting_voiced,
        events=events,
        outcomes=outcomes,
        orchestrators_left=orchestrators_left,
    )
    metrics_path = work_dir / "turns.jsonl"
    if metrics_path.exists():
        result.metrics = [json.loads(x) for x in metrics_path.read_text().splitlines() if x]
    return result


async def _voiced_frames(app: VoicebridgeApp, key: str) -> int:
    assert app.services is not None
    clip = await app.services.audio_cache.get(key)
    pcm = b"" if clip is None else audioop.ulaw2lin(audioop.lin2ulaw(clip.pcm, 2), 2)
    frames = (pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES))
    return sum(1 for f in frames if audioop.rms(f, 2) >= VOICED_RMS)
