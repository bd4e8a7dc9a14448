"""Per-turn latency metrics: t1..t6 plus context attributes, one structured record per turn.

Timestamps come from the injected clock. Each record also carries the stage durations derived
from them, so a slow turn is explained without arithmetic in the log viewer:
  stt_ms      t1 -> t2  caller speech onset to the STT final
  logic_ms    t2 -> t3  STT final to the classifier/FlowEngine request
  llm_wait_ms t4 -> t5  LLM request to the first TTS audio (unscripted turns)
  tts_ms      t3 -> t5  logic start to the first TTS audio
  play_ms     t5 -> t6  first TTS audio to the first bot frame queued to the caller
  response_ms t2 -> t6  end of the caller's words to the first bot audio (what the caller feels)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from orchestrator.contracts import Clock
from orchestrator.domain.models import MetricsLog

log = logging.getLogger("voicebridge.metrics")

MetricsSink = Callable[[dict[str, Any]], None]

_STAGES = (
    ("stt_ms", "t1_first_user_audio", "t2_stt_final"),
    ("logic_ms", "t2_stt_final", "t3_logic_start"),
    ("llm_wait_ms", "t4_llm_request", "t5_tts_first_chunk"),
    ("tts_ms", "t3_logic_start", "t5_tts_first_chunk"),
    ("play_ms", "t5_tts_first_chunk", "t6_first_bot_audio"),
    ("response_ms", "t2_stt_final", "t6_first_bot_audio"),
)


def log_sink(record: dict[str, Any]) -> None:
    """Default sink: one JSON line per record on the `voicebridge.metrics` logger."""
    log.info("%s", json.dumps(record, ensure_ascii=False, default=str))


class MetricsLogger:
    """Collects one call's turn metrics; `trace_id` is the call id."""

    def __init__(self, trace_id: str, clock: Clock, sink: MetricsSink | None = None) -> None:
        self.clock = clock
        self.log = MetricsLog(trace_id=trace_id)
        self.context: dict[str, Any] = {}
        self.records: list[dict[str, Any]] = []
        self._sink = sink or log_sink
        self._turn_open = False

    @property
    def turn_open(self) -> bool:
        """Whether a user turn has started and not been emitted yet."""
        return self._turn_open

    def start_turn(self, at: float | None = None) -> None:
        """Open a user turn; `at` is the caller's speech onset (t1), now if unknown."""
        self.log.start_turn(self.clock.now() if at is None else at)
        self.context = {}
        self._turn_open = True

    def start_bot_only_turn(self) -> None:
        """Open a turn with no caller speech (the greeting): t1..t4 stay empty."""
        self.log.start_turn(self.clock.now())
        self.log.t1_first_user_audio = None
        self.context = {}
        self._turn_open = True

    def mark(self, field: str, at: float | None = None) -> None:
        """Set timestamp `field` (e.g. "t5_tts_first_chunk") unless already set this turn."""
        if getattr(self.log, field) is None:
            setattr(self.log, field, self.clock.now() if at is None else at)

    def set(self, **attrs: Any) -> None:
        """Attach context attributes (model_name, confidence, intent, state, route, ...)."""
        self.context.update(attrs)

    def emit_turn(self) -> dict[str, Any]:
        """Emit the open turn's record and close the turn."""
        record: dict[str, Any] = {"event": "turn", **asdict(self.log)}
        for name, start, end in _STAGES:
            a, b = getattr(self.log, start), getattr(self.log, end)
            record[name] = round((b - a) * 1000, 1) if a is not None and b is not None else None
        record.update(self.context)
        self._turn_open = False
        self._publish(record)
        return record

    def emit_final(self, **attrs: Any) -> dict[str, Any]:
        """Emit the call's closing record (turn count, outcome, totals)."""
        record: dict[str, Any] = {
            "event": "call_end",
            "trace_id": self.log.trace_id,
            "turns": self.log.turn_index,
            **attrs,
        }
        self._publish(record)
        return record

    def _publish(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        try:
            self._sink(record)
        except Exception:
            # Metrics must never break a call.
            log.exception("metrics sink failed")
