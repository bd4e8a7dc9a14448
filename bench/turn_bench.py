"""Turn-taking bench on the labelled corpus (bench/turn_corpus.py): does the bot stop when it should?

Each item is replayed frame by frame through the bridge's own detector, as the gateway runs it:
the bot's frame goes out (and to the `EchoGate`), then the inbound frame goes to the
`VoiceActivityDetector`. The bot "stops" at the first SPEECH_START while it is still speaking
(barge-in cancels the playback there today). Per configuration:

- interruption recall: true interruptions that stopped the bot, and the decision latency
  (caller's sound onset -> SPEECH_START emitted, ms; p50/p95);
- false stops: backchannels, non-speech, and echo alone (overall and at -15 dB or quieter),
  as a fraction of that category's items.

Targets are the issue's (#12): recall >= 0.98, backchannel <= 5 %, non-speech <= 2 %, echo at
-15 dB or quieter 0 %, onset -> pause p95 <= 60 ms.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import percentile, table
from bench.turn_corpus import ECHO_LEVELS_DB, TurnItem
from bridge.echo_gate import EchoGate, EchoSettings
from bridge.vad import VadEventKind, VadSettings, VoiceActivityDetector
from orchestrator.audio import FRAME_S

__all__ = ["CONFIGS", "TARGETS", "TurnConfig", "TurnResult", "evaluate", "render_turns", "run_turns"]


@dataclass(frozen=True, slots=True)
class TurnConfig:
    """One detector configuration under test; `echo` None: no echo gate."""

    name: str
    vad: VadSettings
    echo: EchoSettings | None


CONFIGS = (
    TurnConfig("vad (before)", VadSettings(), None),
    TurnConfig("vad+echo gate", VadSettings(), EchoSettings()),
)

TARGETS: dict[str, tuple[str, float]] = {
    "recall": (">=", 0.98),
    "false_backchannel": ("<=", 0.05),
    "false_nonspeech": ("<=", 0.02),
    "false_echo_15": ("<=", 0.0),
    "latency_p95_ms": ("<=", 60.0),
}


@dataclass(frozen=True, slots=True)
class TurnResult:
    """One item's outcome: `stopped_at` (s into the item) or None."""

    item: TurnItem
    stopped_at: float | None


def replay(item: TurnItem, config: TurnConfig) -> TurnResult:
    """Run one item through a fresh detector; where (if anywhere) the bot was stopped."""
    echo = EchoGate(config.echo) if config.echo is not None else None
    vad = VoiceActivityDetector(config.vad, echo)
    for i, (out, inb) in enumerate(item.frames()):
        now = i * FRAME_S
        if echo is not None:
            if now < item.bot_end_s:
                echo.sent(out)
            else:
                echo.sent_silence()
        event = vad.process(inb, now)
        if event is not None and event.kind is VadEventKind.SPEECH_START and now < item.bot_end_s:
            # The frame that confirmed the speech arrived at `now`; it was complete 20 ms later.
            return TurnResult(item, now + FRAME_S)
    return TurnResult(item, None)


def _rate(results: Sequence[TurnResult]) -> float | None:
    return sum(r.stopped_at is not None for r in results) / len(results) if results else None


def evaluate(items: Sequence[TurnItem], config: TurnConfig) -> dict[str, float | int | None]:
    """The bench's numbers for one configuration (rates 0..1, latencies ms)."""
    results = [replay(item, config) for item in items]
    by = {
        c: [r for r in results if r.item.category == c]
        for c in ("interruption", "backchannel", "nonspeech", "echo")
    }
    inter = by["interruption"]
    latencies = [
        (r.stopped_at - r.item.onset_s) * 1000
        for r in inter
        if r.stopped_at is not None and r.item.onset_s is not None and r.stopped_at >= r.item.onset_s
    ]
    early = sum(
        1
        for r in inter
        if r.stopped_at is not None and r.item.onset_s is not None and r.stopped_at < r.item.onset_s
    )
    out: dict[str, float | int | None] = {
        "items": len(items),
        "recall": _rate(inter),
        "stopped_before_onset": early,
        "latency_p50_ms": percentile(latencies, 50) if latencies else None,
        "latency_p95_ms": percentile(latencies, 95) if latencies else None,
        "false_backchannel": _rate(by["backchannel"]),
        "false_nonspeech": _rate(by["nonspeech"]),
        "false_echo": _rate(by["echo"]),
        "false_echo_15": _rate([r for r in by["echo"] if r.item.echo_db <= -15]),
    }
    for level in ECHO_LEVELS_DB:
        out[f"false_echo_{-level}db"] = _rate([r for r in by["echo"] if r.item.echo_db == level])
    return out


def run_turns(
    items: Sequence[TurnItem], configs: Sequence[TurnConfig] = CONFIGS
) -> dict[str, dict[str, float | int | None]]:
    """`evaluate` for each configuration, by name."""
    return {c.name: evaluate(items, c) for c in configs}


def _pct(v: float | int | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _ms(v: float | int | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def render_turns(results: dict[str, dict[str, float | int | None]]) -> str:
    """Two plain-text tables: the headline rates with targets, and false stops by echo level."""
    headers = (
        "config",
        "items",
        "recall",
        "early",
        "lat_p50",
        "lat_p95",
        "f_backch",
        "f_nonsp",
        "f_echo",
        "f_echo<=-15",
    )
    rows = [
        [
            name,
            r["items"],
            _pct(r["recall"]),
            r["stopped_before_onset"],
            _ms(r["latency_p50_ms"]),
            _ms(r["latency_p95_ms"]),
            _pct(r["false_backchannel"]),
            _pct(r["false_nonspeech"]),
            _pct(r["false_echo"]),
            _pct(r["false_echo_15"]),
        ]
        for name, r in results.items()
    ]
    targets = ", ".join(f"{k} {op} {v:g}" for k, (op, v) in TARGETS.items())
    main = table(headers, rows, title=f"Turn-taking on the corpus (targets: {targets})")
    eh = ("config", *(f"{lv}dB" for lv in ECHO_LEVELS_DB))
    erows = [
        [name, *(_pct(r[f"false_echo_{-lv}db"]) for lv in ECHO_LEVELS_DB)] for name, r in results.items()
    ]
    return (
        main + "\n\n" + table(eh, erows, title="False stops by echo alone, by echo level (dB under the bot)")
    )


def write_json(
    path: Path, results: dict[str, dict[str, float | int | None]], *, seed: int, per_category: int
) -> None:
    """The results with the corpus parameters and targets, as JSON."""
    doc = {"seed": seed, "per_category": per_category, "targets": TARGETS, "configs": results}
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
