"""End-of-turn bench on the split-utterance corpus (bench/split_corpus.py): one answer, one turn?

Each item's audio goes frame by frame (20 ms) through the bridge's `VoiceActivityDetector`; its
events, and one STT final per part arriving 0.3-0.8 s after the part ends (SpeechKit's
finalisation delay; seeded), go on virtual time to the Orchestrator's `EndOfTurn` with the hold
policy the Orchestrator gives it (`final_hold`: a final ending on a number, in a state expecting
one, waits `number_hold_s` after the speech ended; one whose words cannot end a sentence waits
`incomplete_hold_s`; digits joined as numbers in number states). Reported per configuration:

- split answers joined: one turn carrying every part, by kind: number states, other states
  (part one unfinished: "мне нужно" ... "к хирургу"), and "lead" (part one a whole answer:
  "да" ... "всё верно", reported apart, not in `joined`); for number answers, how many then mean
  the right number (`iter_numbers` of the joined text), and how many were taken with a number
  the caller did not mean (`wrong_num`: "100" released alone of "100" ... "20");
- added latency of unsplit answers: the turn's release minus its final's arrival (p50/p95 ms), by
  state kind; `held_other`: unsplit other-state answers the policy holds (false holds).

Target (issue #12): split utterances joined >= 95 %; wrong numbers 0.
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
from orchestrator.end_of_turn import VOICE_AFTER_S, EndOfTurn, final_hold, join_finals
from orchestrator.entities.numbers import iter_numbers
from orchestrator.text import normalize
from testkit.virtual_time import run_virtual

__all__ = ["EOT_CONFIGS", "EotConfig", "render_eot", "run_eot"]


@dataclass(frozen=True, slots=True)
class EotConfig:
    """`number_hold_s`: the map's `turn_number_hold_ms` / 1000; `incomplete_hold_s`: its
    `turn_incomplete_hold_ms` / 1000; `one_word_hold_s`: a what-if, not in the service: every
    one-word final ("да", "нет") held at least this long; `enabled`: False is the old way (every
    final a turn as it comes)."""

    name: str
    number_hold_s: float
    incomplete_hold_s: float = 0.0
    one_word_hold_s: float = 0.0
    enabled: bool = True
    voice_after_s: float = VOICE_AFTER_S

    def hold(self, text: str, *, numbers: bool) -> float:
        """The hold of a final with `text` (s from the speech end), as `state_policy` gives it."""
        hold = final_hold(
            text,
            number_state=numbers,
            number_hold_s=self.number_hold_s,
            incomplete_hold_s=self.incomplete_hold_s,
        )
        if len(normalize(text).split()) == 1:
            hold = max(hold, self.one_word_hold_s)
        return hold


EOT_CONFIGS = (
    EotConfig("finals as they come", 0.0, enabled=False),
    EotConfig("number hold 1.0 s only (before)", 1.0),
    EotConfig("+ incomplete hold 0.8 s", 1.0, 0.8),
    EotConfig("+ incomplete hold 0.9 s", 1.0, 0.9),
    EotConfig("+ incomplete hold 1.0 s (default)", 1.0, 1.0),
    EotConfig("+ incomplete hold 1.2 s", 1.0, 1.2),
    EotConfig("default + one-word finals held 0.5 s", 1.0, 1.0, one_word_hold_s=0.5),
    EotConfig("default + one-word finals held 1.0 s", 1.0, 1.0, one_word_hold_s=1.0),
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
            hold=lambda r: config.hold(r.text, numbers=numbers),
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
    items: Sequence[SplitItem],
    config: EotConfig,
    events: Sequence[Sequence[VadEvent]],
    *,
    seed: int = 12,
) -> dict[str, float | int | None]:
    """Joined rates, wrong numbers and added latency for one configuration (`events`: each
    item's VAD events; the same finals' delays for every configuration)."""
    rng = random.Random(seed)
    joined: dict[str, list[bool]] = {"number": [], "other": [], "lead": []}
    right_value: list[bool] = []
    wrong_value = 0
    added: dict[str, list[float]] = {"number": [], "other": []}
    held_other: list[bool] = []
    for item, item_events in zip(items, events, strict=True):
        delays = [rng.uniform(0.3, 0.8) for _ in item.parts]
        turns = replay(item, config, item_events, delays)
        if item.split:
            one = len(turns) == 1
            joined["lead" if item.lead_complete else item.kind].append(one)
            if item.value is not None:
                got = iter_numbers(turns[0].text) if one else []
                right_value.append(got == [item.value])
                # A turn taken with a number the caller did not mean ("100" of "100" ... "20").
                wrong_value += any(iter_numbers(t.text) not in ([], [item.value]) for t in turns)
        else:
            added[item.kind] += [t.at - t.final_at for t in turns]
            if item.kind == "other" and config.enabled:
                # A whole answer the hold policy takes for an unfinished one (a false hold).
                held_other.append(config.hold(item.parts[0][2], numbers=False) > 0)
    out: dict[str, float | int | None] = {
        "split_items": sum(len(v) for v in joined.values()),
        "whole_items": sum(len(v) for v in added.values()),
        "wrong_number": wrong_value,
    }
    must = joined["number"] + joined["other"]
    out["joined"] = _rate(must)
    out["joined_all"] = _rate(must + joined["lead"])
    for kind in ("number", "other", "lead"):
        out[f"joined_{kind}"] = _rate(joined[kind])
    for kind in ("number", "other"):
        out[f"added_{kind}_p50_ms"] = _p(added[kind], 50)
        out[f"added_{kind}_p95_ms"] = _p(added[kind], 95)
    out["right_number"] = _rate(right_value)
    out["held_other"] = _rate(held_other)
    return out


def _rate(values: Sequence[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def run_eot(
    items: Sequence[SplitItem], configs: Sequence[EotConfig] = EOT_CONFIGS
) -> dict[str, dict[str, float | int | None]]:
    """`evaluate` for each configuration, by name (the VAD runs once per item)."""
    settings = VadSettings()
    events = [vad_events(item, settings) for item in items]
    return {c.name: evaluate(items, c, events) for c in configs}


def render_eot(results: dict[str, dict[str, float | int | None]], corpus: str = "") -> str:
    """One plain-text table; `corpus` names the corpus in the title."""
    headers = (
        "config",
        "split",
        "joined",
        "joined_num",
        "joined_other",
        "joined_lead",
        "joined_all",
        "right_num",
        "wrong_num",
        "whole",
        "add_num50",
        "add_num95",
        "add_other50",
        "add_other95",
        "held_other",
    )
    rows = [
        [
            name,
            r["split_items"],
            pct(r["joined"]),
            pct(r["joined_number"]),
            pct(r["joined_other"]),
            pct(r["joined_lead"]),
            pct(r["joined_all"]),
            pct(r["right_number"]),
            r["wrong_number"],
            r["whole_items"],
            ms_or_dash(r["added_number_p50_ms"]),
            ms_or_dash(r["added_number_p95_ms"]),
            ms_or_dash(r["added_other_p50_ms"]),
            ms_or_dash(r["added_other_p95_ms"]),
            pct(r["held_other"]),
        ]
        for name, r in results.items()
    ]
    target = ["target", "", ">=95%", ">=95%", ">=95%", "", "", "", 0, "", "", "", "", "", ""]
    return table(
        headers,
        [*rows, target],
        title=(
            f"End of turn{f' ({corpus})' if corpus else ''}: split answers joined (joined: number"
            " and other states, target >= 95 %; lead: part one a whole answer, reported apart),"
            " added latency of unsplit answers (ms)"
        ),
    )
