"""End-of-turn bench on the split-utterance corpus (bench/split_corpus.py): one answer, one turn?

Each item's audio goes frame by frame (20 ms) through the bridge's `VoiceActivityDetector`; its
events, and one STT final per part arriving 0.3-0.8 s after the part ends (SpeechKit's
finalisation delay; seeded), go on virtual time to the Orchestrator's `EndOfTurn` with the hold
policy the Orchestrator gives it (a final ending on a number, in a state expecting one, waits
`number_hold_s` after the speech ended; digits joined as numbers there). Reported per
configuration:

- split answers joined: one turn carrying every part, by state kind; for number answers, how many
  then mean the right number (`iter_numbers` of the joined text);
- added latency of unsplit answers: the turn's release minus its final's arrival (p50/p95 ms), by
  state kind ("other": no hold at all; "number": the hold after an answer ending on a number).

Target (issue #12): split utterances joined >= 95 %.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

from bench.common import percentile, table
from bench.split_corpus import SplitItem
from bench.turn_bench import ms_or_dash, pct
from bridge.vad import VadEvent, VadEventKind, VadSettings, VoiceActivityDetector
from orchestrator.audio import FRAME_S
from orchestrator.clock import LoopClock
from orchestrator.domain.models import SttResult
from orchestrator.end_of_turn import VOICE_AFTER_S, EndOfTurn, ends_on_number, join_finals
from orchestrator.entities.numbers import iter_numbers
from testkit.virtual_time import run_virtual

__all__ = ["EOT_CONFIGS", "EotConfig", "render_eot", "run_eot"]


@dataclass(frozen=True, slots=True)
class EotConfig:
    """`number_hold_s`: the map's `turn_number_hold_ms` / 1000; `enabled`: False is the old way
    (every final a turn as it comes)."""

    name: str
    number_hold_s: float
    enabled: bool = True
    voice_after_s: float = VOICE_AFTER_S


EOT_CONFIGS = (
    EotConfig("finals as they come (before)", 0.0, enabled=False),
    EotConfig("end of turn, number hold 0", 0.0),
    EotConfig("end of turn, number hold 0.8 s", 0.8),
    EotConfig("end of turn, number hold 1.0 s (default)", 1.0),
    EotConfig("end of turn, number hold 1.2 s", 1.2),
    EotConfig("number hold 1.0 s, voice after 0.4 s", 1.0, voice_after_s=0.4),
)


@dataclass(frozen=True, slots=True)
class Turn:
    """One released turn: when, its text, and when its last final arrived."""

    at: float
    text: str
    final_at: float


PARTIAL_AFTER_S = 0.3  # speech before a part's first partial arrives (bench/turn_partials.py's figure)


def vad_events(item: SplitItem, settings: VadSettings) -> list[VadEvent]:
    """The detector's events over the item (a frame arrives at the end of its 20 ms)."""
    vad = VoiceActivityDetector(settings)
    out: list[VadEvent] = []
    for i, frame in enumerate(item.frames()):
        event = vad.process(frame, (i + 1) * FRAME_S)
        if event is not None:
            out.append(event)
    return out


def replay(
    item: SplitItem, config: EotConfig, events: Sequence[VadEvent], delays: Sequence[float]
) -> list[Turn]:
    """The turns `EndOfTurn` releases for `item` (each part's final after its delay)."""
    numbers = item.kind == "number"

    async def main() -> list[Turn]:
        loop = asyncio.get_running_loop()
        turns: list[Turn] = []

        def forward(r: SttResult) -> None:
            if r.is_final:  # a partial passed on is no turn
                turns.append(Turn(loop.time(), r.text, r.received_at))

        eot = EndOfTurn(
            clock=LoopClock(),
            forward=forward,
            number_hold=lambda r: config.number_hold_s if numbers and ends_on_number(r.text) else 0.0,
            join=lambda a, b: join_finals(a, b, numbers=numbers),
            voice_after_s=config.voice_after_s,
        )
        handlers = {
            VadEventKind.SPEECH_ONSET: eot.speech_onset,
            VadEventKind.SPEECH_REJECTED: eot.speech_rejected,
            VadEventKind.SPEECH_START: eot.speech_start,
            VadEventKind.SPEECH_END: eot.speech_end,
        }
        for event in events:
            loop.call_at(event.detected_at, handlers[event.kind], event.at)
        previous_final = 0.0
        for (start, end, text), delay in zip(item.parts, delays, strict=True):
            if previous_final and config.enabled:
                # SpeechKit's first partial of a part: its first word about 0.3 s into it, never
                # before the previous part's final (one stream, in order).
                at = max(start + PARTIAL_AFTER_S, previous_final + 0.05)
                partial = SttResult(text.split()[0], False, 0.5, "partial", received_at=at)
                loop.call_at(at, eot.result, partial)
            t = previous_final = end + delay
            final = SttResult(text, True, 0.9, "final", received_at=t)
            loop.call_at(t, eot.result if config.enabled else forward, final)
        await asyncio.sleep(len(item.audio) / 16000 + 6.0)
        eot.close()
        return turns

    return run_virtual(main)


def _p(values: Sequence[float], q: float) -> float | None:
    return percentile(values, q) * 1000 if values else None


def evaluate(
    items: Sequence[SplitItem], config: EotConfig, *, seed: int = 12
) -> dict[str, float | int | None]:
    """Joined rates and added latency for one configuration (the same finals' delays for all)."""
    rng = random.Random(seed)
    settings = VadSettings()
    joined: dict[str, list[bool]] = {"number": [], "other": []}
    right_value: list[bool] = []
    added: dict[str, list[float]] = {"number": [], "other": []}
    for item in items:
        delays = [rng.uniform(0.3, 0.8) for _ in item.parts]
        turns = replay(item, config, vad_events(item, settings), delays)
        if item.split:
            one = len(turns) == 1
            joined[item.kind].append(one)
            if item.value is not None:
                got = iter_numbers(turns[0].text) if one else []
                right_value.append(got == [item.value])
        else:
            added[item.kind] += [t.at - t.final_at for t in turns]
    out: dict[str, float | int | None] = {
        "split_items": sum(len(v) for v in joined.values()),
        "whole_items": sum(len(v) for v in added.values()),
    }
    every = joined["number"] + joined["other"]
    out["joined"] = sum(every) / len(every) if every else None
    for kind in ("number", "other"):
        v = joined[kind]
        out[f"joined_{kind}"] = sum(v) / len(v) if v else None
        out[f"added_{kind}_p50_ms"] = _p(added[kind], 50)
        out[f"added_{kind}_p95_ms"] = _p(added[kind], 95)
    out["right_number"] = sum(right_value) / len(right_value) if right_value else None
    return out


def run_eot(
    items: Sequence[SplitItem], configs: Sequence[EotConfig] = EOT_CONFIGS
) -> dict[str, dict[str, float | int | None]]:
    """`evaluate` for each configuration, by name."""
    return {c.name: evaluate(items, c) for c in configs}


def render_eot(results: dict[str, dict[str, float | int | None]]) -> str:
    """One plain-text table."""
    headers = (
        "config",
        "split",
        "joined",
        "joined_num",
        "joined_other",
        "right_num",
        "whole",
        "add_num50",
        "add_num95",
        "add_other50",
        "add_other95",
    )
    rows = [
        [
            name,
            r["split_items"],
            pct(r["joined"]),
            pct(r["joined_number"]),
            pct(r["joined_other"]),
            pct(r["right_number"]),
            r["whole_items"],
            ms_or_dash(r["added_number_p50_ms"]),
            ms_or_dash(r["added_number_p95_ms"]),
            ms_or_dash(r["added_other_p50_ms"]),
            ms_or_dash(r["added_other_p95_ms"]),
        ]
        for name, r in results.items()
    ]
    return table(
        headers,
        rows,
        title="End of turn: split answers joined (target >= 95 %), added latency of unsplit answers (ms)",
    )
