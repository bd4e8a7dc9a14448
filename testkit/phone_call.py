"""A whole voicebridge call through the real Asterisk: sipp dials the PJSIP trunk and speaks.

Used by the end-to-end tests and by `make demo`. The bridge is the real `VoicebridgeApp` (ARI
controller, AudioSocket server, pacer, gateway, one Orchestrator per call) with the real adapters
pointed at the local SpeechKit/OpenAI stand-ins. The caller's lines are placed on a timeline
computed from the bot's own cached phrases (how long the greeting and answers really are), so
the caller speaks when the bot listens; `barge_in_at` instead makes the caller talk over the
greeting. tcpdump records both directions of RTP and the SIP requests sent to the caller.
"""

from __future__ import annotations

import asyncio
import gc
import json
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bridge.admin import AdminSettings
from bridge.app import VoicebridgeApp
from bridge.ari import AriSettings
from bridge.audiosocket.server import AudioSocketSettings
from bridge.recording import RecordingSettings
from bridge.settings import Settings
from orchestrator.orchestrator import CallEvent, Orchestrator
from testkit.ports import free_port
from testkit.sip import (
    UAC_MEDIA_PORT,
    UAC_SIP_PORT,
    Analysis,
    Capture,
    RtpPacket,
    SippResult,
    analyse,
    espeak_pcm,
    render_scenario,
    rtp_from,
    run_sipp,
    write_rtp_pcap,
)
from testkit.standins.launch import DEMO_LLM_ANSWERS, running_standins

MAP = str(Path(__file__).resolve().parents[1] / "dialogue_maps" / "cleaning_quote.ru.json")
SLACK_S = 1.5  # caller waits this long after the bot's turn should have ended
EOU_S = 0.8  # STT end of utterance (500 ms of silence) plus classification and first frame


@dataclass
class PhoneCallResult:
    """What happened on the call, seen from both sides."""

    sipp: SippResult
    analysis: Analysis  # RTP Asterisk -> caller, SIP requests to the caller
    caller_rtp: list[RtpPacket]  # RTP caller -> Asterisk
    events: list[CallEvent] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[tuple[str, str]] = field(default_factory=list)
    caller_speech_at: list[float] = field(default_factory=list)  # planned offsets in the pcap, s
    heard_wav: Path | None = None
    orchestrators_left: int = 0  # Orchestrator objects alive after the call (must be 0)
    prometheus: str = ""  # the admin port's /metrics after the call

    def turns(self) -> list[dict[str, Any]]:
        return [m for m in self.metrics if m.get("event") == "turn"]

    def states(self) -> list[tuple[str, str]]:
        return [
            (str(e.data["from_state"]), str(e.data["to_state"])) for e in self.events if e.kind == "state"
        ]

    def caller_start(self) -> float:
        """Capture time of the caller's first RTP packet (pcap offset 0)."""
        return self.caller_rtp[0].t


async def _clip_s(app: VoicebridgeApp, key: str) -> float:
    assert app.services is not None
    clip = await app.services.audio_cache.get(key)
    return clip.duration_s if clip is not None else 0.0


async def plan_caller_lines(
    app: VoicebridgeApp, lines: Sequence[str], barge_in_at: float | None
) -> list[float]:
    """When (pcap offset, s) the caller says each line: after the bot's turn, from real durations."""
    greeting = await _clip_s(app, "static:greeting")
    quote = sum(
        [
            await _clip_s(app, k)
            for k in ("static:final_price_intro", "static:currency_rubles", "static:ask_booking")
        ]
    )
    quote += 1.0  # the price, synthesized per call
    llm_answer = len(espeak_pcm(DEMO_LLM_ANSWERS[0][1])) / 16000
    bot_turns = [quote, llm_answer + 1.0]  # + the filler cut by the answer
    at = [barge_in_at if barge_in_at is not None else greeting + SLACK_S]
    for line, bot_s in zip(lines, bot_turns, strict=False):
        at.append(at[-1] + len(espeak_pcm(line)) / 16000 + EOU_S + bot_s + SLACK_S)
    return at[: len(lines)]


async def run_phone_call(
    work_dir: Path,
    lines: Sequence[str],
    *,
    barge_in_at: float | None = None,
    call_timeout_s: float = 90.0,
    dtmf: Sequence[tuple[float, str]] = (),
    dialogue_map: str = MAP,
    exten: str = "100",
    sounds: Sequence[tuple[float, bytes]] = (),
    recording_dir: Path | None = None,
    heard_lines: Sequence[str] | None = None,
) -> PhoneCallResult:
    """Place one call through Asterisk and run it to its end (the bot's BYE or the timeout).

    `dtmf`: (s from the call's start, digit) keys the caller presses (RFC 4733 in its RTP).
    `sounds`: (s from the call's start, 8 kHz PCM) the caller plays besides its lines.
    `exten`: the number dialed (extensions.conf; "recorded" sets VB_RECORD=1).
    `recording_dir`: where the bridge writes recorded calls (`[recording] directory`).
    `heard_lines`: what the STT stand-in transcribes, one per utterance (default `lines`; a
    sound the VAD takes for speech is an utterance too)."""
    port = free_port()
    (work_dir / "turns.jsonl").unlink(missing_ok=True)  # this call's records only
    base = Settings(
        dialogue_map=dialogue_map,
        metrics_file=str(work_dir / "turns.jsonl"),
        audiosocket=AudioSocketSettings(bind_port=port),
        ari=AriSettings(audiosocket_host=f"127.0.0.1:{port}"),
        admin=AdminSettings(port=0),
        recording=RecordingSettings(directory=str(recording_dir or work_dir / "recordings")),
    )
    events: list[CallEvent] = []
    async with running_standins(base, caller_lines=lines if heard_lines is None else heard_lines) as (
        settings,
        _,
        _,
    ):
        app = VoicebridgeApp(settings, observer=lambda _cid, event: events.append(event))
        await app.start()
        try:
            assert app.ari is not None
            async with asyncio.timeout(15):
                await app.ari.connected.wait()
            offsets = await plan_caller_lines(app, lines, barge_in_at)
            pcm = bytearray()
            for at, line in zip(offsets, lines, strict=True):
                pad = int(at * 8000) * 2 - len(pcm)
                pcm += bytes(max(pad, 0)) + espeak_pcm(line)
            for at, sound in sounds:
                start = int(at * 8000) * 2
                pcm += bytes(max(start + len(sound) - len(pcm), 0))
                pcm[start : start + len(sound)] = sound
            pcap = work_dir / "caller.pcap"
            write_rtp_pcap(pcap, bytes(pcm), lead_silence_s=0, total_s=call_timeout_s, dtmf=dtmf)
            scenario = render_scenario(
                "uac_wait_bye",
                work_dir,
                exten=exten,
                caller="79990001122",
                pcap=pcap,
                bye_timeout_ms=int(call_timeout_s * 1000),
            )
            capture = work_dir / "call.pcap"
            bpf = f"udp and (port {UAC_MEDIA_PORT} or dst port {UAC_SIP_PORT})"
            async with Capture(capture, bpf):
                sipp = await run_sipp(
                    scenario,
                    local_port=UAC_SIP_PORT,
                    media_port=UAC_MEDIA_PORT,
                    work_dir=work_dir,
                    timeout_s=call_timeout_s + 10,
                )
            async with asyncio.timeout(10):
                # The app has no idle event, and the AudioSocket leg closes a moment after the
                # call's task ends; bounded.
                while app.calls_active or (app.audiosocket and app.audiosocket.connections):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            gc.collect()
            orchestrators_left = sum(1 for o in gc.get_objects() if type(o) is Orchestrator)
            assert app.admin is not None
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{app.admin.port}/metrics") as resp,
            ):
                prometheus = await resp.text()
        finally:
            await app.close()
        outcomes = list(app.outcomes)
    analysis = analyse(capture, media_port=UAC_MEDIA_PORT, sip_port=UAC_SIP_PORT)
    result = PhoneCallResult(
        sipp=sipp,
        analysis=analysis,
        caller_rtp=rtp_from(capture, src_port=UAC_MEDIA_PORT),
        events=events,
        outcomes=outcomes,
        caller_speech_at=offsets,
        orchestrators_left=orchestrators_left,
        prometheus=prometheus,
    )
    metrics_path = work_dir / "turns.jsonl"
    if metrics_path.exists():
        result.metrics = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    result.heard_wav = work_dir / "caller_heard.wav"
    _write_heard(result.heard_wav, analysis)
    return result


def _write_heard(path: Path, analysis: Analysis) -> None:
    """What the caller heard (u-law RTP decoded), as an 8 kHz WAV."""
    from testkit.sip import ulaw_to_pcm

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(ulaw_to_pcm(p.payload) for p in analysis.audio))
