"""`voicebridge demo`: a real call end to end, or `--text` to type the caller's words.

The phone demo needs root (sipp plays RTP from a pcap through a raw socket) and brings up
everything itself: the Asterisk 22 chroot (`asterisk_conf/asterisk.sh up`), the SpeechKit and
OpenAI stand-ins on loopback (the offline stand-ins for Yandex and OpenAI: no keys, no internet),
`voicebridge serve` in this process, and a sipp caller that dials the SIP trunk and speaks
Russian phrases made with espeak-ng. It prints the dialogue as the bot hears and answers it, the
per-turn latency table, and writes what the caller heard to var/demo/caller_heard.wav.
"""

from __future__ import annotations

import asyncio
import sys

from orchestrator.dialogue_map.loader import load_dialogue_map
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.orchestrator import CallEvent


def describe(event: CallEvent, dmap: DialogueMap) -> str | None:
    """One human line for a call event, or None for events not worth printing."""
    d = event.data
    if event.kind == "play" and d.get("key"):
        prefix = "бот (филлер)" if d.get("kind") == "filler" else "бот"
        return f"  {prefix}: {dmap.audio.get(d['key'], d['key'])}  [{d['key']}]"
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
    if event.kind == "user_said":
        return f"звонящий: {d['text']}"
    return None


async def run_text_demo(map_path: str) -> int:
    """Type the caller's words; the real Orchestrator answers (audio is silent, timing is real)."""
    from orchestrator.textmode import run_text_call

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


async def run_demo(*, text: bool, map_path: str) -> int:
    """Entry point of `voicebridge demo`."""
    if text:
        return await run_text_demo(map_path)
    from bridge.phone_demo import run_phone_demo

    return await run_phone_demo(map_path)
