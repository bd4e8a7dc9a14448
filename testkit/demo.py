"""`voicebridge demo`: a real call end to end, or `--text` to type the caller's words.

The phone demo needs root (sipp plays RTP from a pcap through a raw socket) and brings up
everything itself: the Asterisk 22 chroot (`asterisk_conf/asterisk.sh up`), the SpeechKit and
OpenAI stand-ins on loopback (the offline stand-ins for Yandex and OpenAI: no keys, no internet),
`voicebridge serve` in this process, and a sipp caller that dials the SIP trunk and speaks
Russian phrases made with espeak-ng. It prints the dialogue as the bot hears and answers it, the
per-turn latency table, and writes what the caller heard to var/demo/caller_heard.wav.

The caller ends by asking for an operator: the map transfers the call to the stand-in operator of
asterisk_conf/extensions.conf (`[voicebridge-operators]` operator), which rings 2 s (the caller
hears ringback), answers, plays a 1 kHz tone for 8 s in place of a person, and hangs up.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from bridge.ringback import RINGBACK_HZ
from orchestrator.dialogue_map.loader import load_dialogue_map
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.orchestrator import CallEvent

# What the demo caller says, one line per turn: a quote, an off-script question, then a person.
DEMO_LINES = (
    "у нас квартира шестьдесят метров",
    "а вы работаете по воскресеньям",
    "соедините с оператором",
)
OPERATOR_HZ = 1000.0  # the stand-in operator's tone


def describe(event: CallEvent, dmap: DialogueMap) -> str | None:
    """One human line for a call event, or None for events not worth printing."""
    d = event.data
    key = d.get("key")
    if event.kind == "play" and isinstance(key, str) and key:
        prefix = "бот (филлер)" if d.get("kind") == "filler" else "бот"
        return f"  {prefix}: {dmap.audio.get(key, key)}  [{key}]"
    if event.kind == "play" and d.get("kind") == "tts":
        return f"  бот (tts): {d.get('text')}"
    if event.kind == "llm_said":
        return f"  бот (llm): {d.get('text')}"
    if event.kind == "state":
        return f"  -- состояние: {d['from_state']} -> {d['to_state']}"
    if event.kind == "filler_cut":
        return "  -- филлер оборван: ответ готов"
    if event.kind == "barge_in":
        return "  -- перебивание: бот замолчал"
    if event.kind == "provider_failure":
        return f"  -- сбой {d.get('stage')}: {d.get('error')}"
    if event.kind == "end_call":
        return "  -- END_CALL: бот кладёт трубку"
    if event.kind == "transfer":
        return f"  -- TRANSFER: перевод на {d.get('target')}: {d.get('outcome')}"
    if event.kind == "user_said":
        return f"звонящий: {d['text']}"
    return None


async def run_text_demo(map_path: str) -> int:
    """Type the caller's words; the real Orchestrator answers (audio is silent, timing is real)."""
    from testkit.textmode import run_text_call

    dmap = load_dialogue_map(map_path)
    loop = asyncio.get_running_loop()
    interactive = sys.stdin.isatty()

    async def next_utterance() -> str | None:
        if interactive:
            print("вы> ", end="", flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return None
        return line.strip() or "..."

    def on_event(event: CallEvent) -> None:
        line = describe(event, dmap)
        if line and not (event.kind == "user_said" and interactive):
            print(line, flush=True)

    print(f"Текстовый режим: карта {map_path}. Пустой ввод/EOF (Ctrl-D) кладёт трубку.")
    call = await run_text_call(dmap, next_utterance, on_event=on_event, seconds_per_char=0.01)
    print(f"Звонок окончен: {call.outcome.reason}, ходов: {call.outcome.turns}")
    return 0


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _work_dir(path: str) -> Path:
    """An absolute directory (sipp runs inside it, so relative paths would break)."""
    work = Path(os.path.realpath(path))
    work.mkdir(parents=True, exist_ok=True)
    return work


def _ms(turn: dict[str, object], key: str) -> str:
    v = turn.get(key)
    return f"{v:.0f}" if isinstance(v, int | float) else "-"


async def run_phone_demo(map_path: str) -> int:
    """A real SIP call through Asterisk 22 to the example map; prints what happened."""
    if os.geteuid() != 0:
        print("voicebridge demo: needs root (sipp plays RTP through a raw socket; Asterisk runs in a chroot)")
        return 2
    from testkit.phone_call import MAP, run_phone_call
    from testkit.sip import UAC_MEDIA_PORT, near_tone

    if not _same_file(map_path, MAP):
        print(f"voicebridge demo: the phone demo scripts its caller for {MAP}; use --text for other maps")
        return 2
    up = await asyncio.create_subprocess_exec("bash", "asterisk_conf/asterisk.sh", "up")
    if await up.wait() != 0:
        print("voicebridge demo: Asterisk did not come up (see above)")
        return 1
    work = _work_dir("var/demo")
    dmap = load_dialogue_map(map_path)
    print(
        "Звонок: sipp -> SIP-транк Asterisk 22 -> ARI -> AudioSocket -> voicebridge (стенды SpeechKit/OpenAI)"
    )
    result = await run_phone_call(work, list(DEMO_LINES))
    for event in result.events:
        line = describe(event, dmap)
        if line:
            print(line)
    print()
    header = f"{'turn':>4} {'route':<9} {'intent':<12} {'stt_ms':>7} {'logic_ms':>8} {'tts_ms':>7} {'response_ms':>11}"
    print(header)
    for t in result.turns():
        print(
            f"{t['turn_index']:>4} {t.get('route', ''):<9} {str(t.get('intent') or '-'):<12} "
            f"{_ms(t, 'stt_ms'):>7} {_ms(t, 'logic_ms'):>8} {_ms(t, 'tts_ms'):>7} {_ms(t, 'response_ms'):>11}"
        )
    pacing = result.analysis.pacing()
    print()
    print(
        f"RTP to the caller (port {UAC_MEDIA_PORT}): {pacing.packets} packets over {pacing.span_s:.1f} s, "
        f"{pacing.packets_per_s:.1f}/s, max gap {pacing.max_gap_s * 1000:.0f} ms, {pacing.burst_packets} bursts"
    )
    transfers = [e.data for e in result.events if e.kind == "transfer"]
    voiced = result.analysis.voiced
    ringback = near_tone(voiced, RINGBACK_HZ)
    operator = near_tone(voiced, OPERATOR_HZ)
    for t in transfers:
        print(
            f"Transfer to {t.get('target')}: {t.get('outcome')}; the caller heard {len(ringback) * 0.02:.1f} s "
            f"of ringback (425 Hz) while it rang, then {len(operator) * 0.02:.1f} s of the operator (1 kHz)"
        )
    print(f"BYE from Asterisk: {'yes' if result.analysis.bye_seen else 'NO'}; outcome: {result.outcomes}")
    print(f"What the caller heard: {result.heard_wav}; per-turn metrics: {work / 'turns.jsonl'}")
    ok = (
        result.sipp.ok
        and result.analysis.bye_seen
        and bool(result.outcomes)
        and result.outcomes[0][1] == "transferred"
        and len(operator) > 0
    )
    return 0 if ok else 1


async def run_demo(*, text: bool, map_path: str) -> int:
    """Entry point of `voicebridge demo`."""
    if text:
        return await run_text_demo(map_path)
    return await run_phone_demo(map_path)
