"""Per-turn latency metrics: t1..t6 plus context attributes, one structured record per turn.

Timestamps come from the injected clock and are named by `Mark`, never by a string field name.
Each record also carries the stage durations derived from them, so a slow turn is explained
without arithmetic in the log viewer:
  stt_ms      t1 -> t2  caller speech onset to the STT final
  logic_ms    t2 -> t3  STT final to the classifier/FlowEngine request
  llm_wait_ms t4 -> t5  LLM request to the first TTS audio (unscripted turns)
  llm_first_token_ms    t4 -> the LLM's first chunk (unscripted turns)
  tts_first_chunk_ms    text handed to TTS -> its first audio (t5): from the LLM's first chunk
                        on unscripted turns, from t3 otherwise
  tts_ms      t3 -> t5  logic start to the first TTS audio
  play_ms     t5 -> t6  first TTS audio to the first bot frame queued to the caller
  response_ms t2 -> t6  end of the caller's words to the first bot audio (what the caller feels)
  intent_llm_ms         the constrained intent step on an unsure turn (request to answer), with
                        `intent_llm_status` and `intent_llm_pick` in the context

The logger keeps no dialogue state: whether a turn is open is the turn-taking machine's business
(`orchestrator.turns`), and context attributes are written, never read back to decide anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from orchestrator.contracts import Clock
from orchestrator.domain.models import ArbiterDecision, MetricsLog

log = logging.getLogger("voicebridge.metrics")

# Record fields holding what the caller said: logged at INFO only when the operator opts in.
TRANSCRIPT_FIELDS = frozenset({"text"})

# One record: JSON-able values (numbers, strings, None, lists of strings) by name.
MetricsRecord = dict[str, object]
MetricsSink = Callable[[MetricsRecord], None]
# A context attribute's value (model name, confidence, intent id, route, missing entities, ...).
MetricValue = str | int | float | bool | list[str] | None


class Mark(StrEnum):
    """A timestamp of the turn; the value is the record's field name."""

    T1_FIRST_USER_AUDIO = "t1_first_user_audio"
    T2_STT_FINAL = "t2_stt_final"
    T3_LOGIC_START = "t3_logic_start"
    T4_LLM_REQUEST = "t4_llm_request"
    T5_TTS_FIRST_CHUNK = "t5_tts_first_chunk"
    T6_FIRST_BOT_AUDIO = "t6_first_bot_audio"
    # Not in the spec's t1..t6: when the answer proper (not a filler) first reached the caller,
    # when the LLM stream ended, and when the caller cut the bot off.
    ANSWER_AUDIO = "answer_audio_at"
    LLM_FIRST_TOKEN = "llm_first_token_at"
    LLM_DONE = "llm_done_at"
    BARGE_IN = "barge_in_at"
    # The constrained intent step (issue 8): asked, and answered (or given up on).
    INTENT_LLM_REQUEST = "intent_llm_at"
    INTENT_LLM_DONE = "intent_llm_done_at"


@dataclass(slots=True, frozen=True)
class _Stage:
    name: str
    start: Mark
    end: Mark


_STAGES = (
    _Stage("stt_ms", Mark.T1_FIRST_USER_AUDIO, Mark.T2_STT_FINAL),
    _Stage("logic_ms", Mark.T2_STT_FINAL, Mark.T3_LOGIC_START),
    _Stage("llm_wait_ms", Mark.T4_LLM_REQUEST, Mark.T5_TTS_FIRST_CHUNK),
    _Stage("llm_first_token_ms", Mark.T4_LLM_REQUEST, Mark.LLM_FIRST_TOKEN),
    _Stage("tts_ms", Mark.T3_LOGIC_START, Mark.T5_TTS_FIRST_CHUNK),
    _Stage("play_ms", Mark.T5_TTS_FIRST_CHUNK, Mark.T6_FIRST_BOT_AUDIO),
    _Stage("response_ms", Mark.T2_STT_FINAL, Mark.T6_FIRST_BOT_AUDIO),
    _Stage("intent_llm_ms", Mark.INTENT_LLM_REQUEST, Mark.INTENT_LLM_DONE),
)
_SPEC_MARKS = (
    Mark.T1_FIRST_USER_AUDIO,
    Mark.T2_STT_FINAL,
    Mark.T3_LOGIC_START,
    Mark.T4_LLM_REQUEST,
    Mark.T5_TTS_FIRST_CHUNK,
    Mark.T6_FIRST_BOT_AUDIO,
)


def log_sink(record: MetricsRecord) -> None:
    """Default sink: one record per line on the `voicebridge.metrics` logger: the JSON text as the
    message, and the record itself as the log record's `metrics` attribute (a JSON log formatter
    writes its fields as the line's own)."""
    log.info("%s", json.dumps(record, ensure_ascii=False, default=str), extra={"metrics": record})


class MetricsLogger:
    """Collects one call's turn metrics; `trace_id` is the call id."""

    def __init__(self, trace_id: str, clock: Clock, sink: MetricsSink | None = None) -> None:
        self.clock = clock
        self.log = MetricsLog(trace_id=trace_id, clock=clock.now)
        self.context: dict[str, MetricValue] = {}
        self.records: list[MetricsRecord] = []
        self._extra: dict[Mark, float] = {}
        self._sink = sink or log_sink

    def start_turn(self, at: float | None = None) -> None:
        """Open a user turn; `at` is the caller's speech onset (t1), now if unknown."""
        self.log.start_turn(at)
        self._reset()

    def start_bot_only_turn(self) -> None:
        """Open a turn with no caller speech (greeting, reprompt, failure): t1..t4 stay empty."""
        self.log.start_turn()
        self.log.t1_first_user_audio = None
        self._reset()

    def mark(self, mark: Mark, at: float | None = None, *, keep_first: bool = True) -> None:
        """Stamp `mark` at `at` (now if None); by default only its first stamp in a turn counts."""
        if keep_first and self.get(mark) is not None:
            return
        when = self.clock.now() if at is None else at
        log_ = self.log
        if mark is Mark.T1_FIRST_USER_AUDIO:
            log_.t1_first_user_audio = when
        elif mark is Mark.T2_STT_FINAL:
            log_.t2_stt_final = when
        elif mark is Mark.T3_LOGIC_START:
            log_.t3_logic_start = when
        elif mark is Mark.T4_LLM_REQUEST:
            log_.t4_llm_request = when
        elif mark is Mark.T5_TTS_FIRST_CHUNK:
            log_.t5_tts_first_chunk = when
        elif mark is Mark.T6_FIRST_BOT_AUDIO:
            log_.t6_first_bot_audio = when
        else:
            self._extra[mark] = when

    def get(self, mark: Mark) -> float | None:
        """The stamp of `mark` in the open turn, None when not stamped."""
        log_ = self.log
        if mark is Mark.T1_FIRST_USER_AUDIO:
            return log_.t1_first_user_audio
        if mark is Mark.T2_STT_FINAL:
            return log_.t2_stt_final
        if mark is Mark.T3_LOGIC_START:
            return log_.t3_logic_start
        if mark is Mark.T4_LLM_REQUEST:
            return log_.t4_llm_request
        if mark is Mark.T5_TTS_FIRST_CHUNK:
            return log_.t5_tts_first_chunk
        if mark is Mark.T6_FIRST_BOT_AUDIO:
            return log_.t6_first_bot_audio
        return self._extra.get(mark)

    def set(self, **attrs: MetricValue) -> None:
        """Attach context attributes (model_name, confidence, intent, state, route, ...)."""
        self.context.update(attrs)

    def record_intent_step(self, decision: ArbiterDecision) -> None:
        """The constrained intent step of this turn: its times (`intent_llm_ms`), outcome and pick."""
        self.mark(Mark.INTENT_LLM_REQUEST, decision.started_at)
        self.mark(Mark.INTENT_LLM_DONE, decision.ended_at)
        self.set(
            intent_llm_status=decision.status,
            intent_llm_pick=decision.answer,
            intent_llm_best_local=round(decision.best_local_score, 3),
        )

    def emit_turn(self) -> MetricsRecord:
        """Emit the open turn's record: t1..t6, stage durations, extra marks, context."""
        record: MetricsRecord = {
            "event": "turn",
            "trace_id": self.log.trace_id,
            "turn_index": self.log.turn_index,
        }
        for mark in _SPEC_MARKS:
            record[mark.value] = self.get(mark)
        for stage in _STAGES:
            record[stage.name] = self._ms(self.get(stage.start), self.get(stage.end))
        first_token = self.get(Mark.LLM_FIRST_TOKEN)
        tts_from = first_token if first_token is not None else self.get(Mark.T3_LOGIC_START)
        record["tts_first_chunk_ms"] = self._ms(tts_from, self.get(Mark.T5_TTS_FIRST_CHUNK))
        record.update({mark.value: at for mark, at in self._extra.items()})
        record.update(self.context)
        self._publish(record)
        return record

    def emit_final(self, **attrs: MetricValue) -> MetricsRecord:
        """Emit the call's closing record (turn count, outcome, totals)."""
        record: MetricsRecord = {
            "event": "call_end",
            "trace_id": self.log.trace_id,
            "turns": self.log.turn_index,
            **attrs,
        }
        self._publish(record)
        return record

    @staticmethod
    def _ms(start: float | None, end: float | None) -> float | None:
        return round((end - start) * 1000, 1) if start is not None and end is not None else None

    def _reset(self) -> None:
        self.context = {}
        self._extra = {}

    def _publish(self, record: MetricsRecord) -> None:
        self.records.append(record)
        try:
            self._sink(record)
        except Exception:
            # Metrics must never break a call.
            log.exception("metrics sink failed")
