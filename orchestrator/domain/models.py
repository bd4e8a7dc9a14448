"""Domain data model of the Orchestrator specification (section 3), plus the streaming types.

The first five types are the spec's own (`IntentResult`, `FlowResult`, `FlowStatus`,
`SessionState`, `MetricsLog`). Two deliberate changes: `FlowResult.updated_session` is a typed
`SessionUpdate` instead of a dict (applied field by field, no setattr by name), and `MetricsLog`
reads an injectable clock (`time.monotonic` by default, as in the spec), so `start_turn()` works
with no argument and turn timing is still testable on virtual time (style-anchors practice 12).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

# --- Status types ---
FlowStatus = Literal["SUCCESS", "EXECUTION_ERROR", "MISSING_ENTITY"]
TurnState = Literal["BOT_TURN", "USER_TURN"]


# --- IntentClassifier ---
@dataclass(slots=True)
class IntentResult:
    """A successful classification of the caller's words into one of the map's intents."""

    intent_id: str
    score: float
    entities: dict[str, Any] | None
    current_leader: str  # id of the leading intent at this step (stability check)


@dataclass(slots=True, frozen=True)
class FaqAnswer:
    """A knowledge-base hit: which FAQ entry of the map answers the caller, and how sure we are."""

    faq_id: str
    score: float


# --- The intent arbiter: a constrained second opinion on unsure turns (issue 8) ---
@dataclass(slots=True, frozen=True)
class ArbiterOption:
    """One answer the arbiter may give: an intent or a FAQ entry, shown by example phrases."""

    label: str  # "intent:<id>" or "faq:<id>"
    examples: tuple[str, ...]


# picked: a label of the closed set; none: the arbiter said none; invalid: it answered something
# outside the set (taken as none); timeout / error: no answer in time, or a failure (none).
ArbiterStatus = Literal["picked", "none", "invalid", "timeout", "error"]


@dataclass(slots=True, frozen=True)
class ArbiterDecision:
    """What the constrained step made of one unsure turn (times on the call's clock, seconds)."""

    choice: IntentResult | FaqAnswer | None  # None: fall back to the free LLM answer
    status: ArbiterStatus
    answer: str | None  # what the arbiter said, as said (for the metrics), None if nothing
    best_local_score: float  # the local classifier's best score among the options
    started_at: float
    ended_at: float


# --- FlowEngine ---
@dataclass(slots=True, frozen=True)
class SessionUpdate:
    """The session fields one FlowEngine step changes (the spec's `updated_session`)."""

    current_state_id: str
    variables: dict[str, Any]
    state_history: list[str]

    def apply_to(self, session: SessionState) -> None:
        """Write these fields into `session` (the Orchestrator's one source of truth)."""
        session.current_state_id = self.current_state_id
        session.variables = dict(self.variables)
        session.state_history = list(self.state_history)


@dataclass(slots=True)
class FlowResult:
    """What the FlowEngine made of one event."""

    status: FlowStatus
    updated_session: SessionUpdate | None = None  # only with status SUCCESS
    detail: str | None = None  # why, when status is not SUCCESS (for logs and metrics)


# --- Orchestrator ---
@dataclass(slots=True, frozen=True)
class TransferRequest:
    """What the Orchestrator asks the telephony side to dial when a map transfers the caller."""

    endpoint: str  # an ARI dial string: "PJSIP/operator", "Local/100@operators"
    timeout_s: float  # ring at most this long
    # Channel variables for the operator's leg (`VB_INTENT`, `VB_STATE`, `VB_TRANSCRIPT`, ...);
    # values are bounded strings.
    variables: dict[str, str]
    sip_headers: bool  # also send them as `X-VB-*` SIP headers (a PJSIP endpoint target)
    # Seconds beyond `timeout_s` for originating and bridging: the control finishes the dial
    # within `bound_s` (then only hangs up an operator channel that did not answer).
    setup_s: float = 5.0

    @property
    def bound_s(self) -> float:
        """The whole dial's bound in seconds (originate + ring + bridging): `timeout_s + setup_s`."""
        return self.timeout_s + self.setup_s


# How a transfer ended: the target answered (the caller is now joined to it), was busy, did not
# answer within the timeout, or anything else (unreachable, ARI failure, no call control).
TransferOutcome = Literal["answered", "busy", "no_answer", "failed"]


@dataclass(slots=True, frozen=True)
class TranscriptEntry:
    """One line of the call's conversation, kept for the LLM's context."""

    role: Literal["user", "bot"]
    text: str


@dataclass
class SessionState:
    """The whole state of one call: the Orchestrator's single source of truth."""

    call_id: str
    current_state_id: str = "start"
    variables: dict[str, Any] = field(default_factory=dict)
    state_history: list[str] = field(default_factory=list)  # for "go back" logic
    previous_intent_leader: str | None = None
    turn_state: TurnState = "BOT_TURN"
    # Not in the spec's table: the conversation so far, which the LLM fallback needs as history.
    transcript: list[TranscriptEntry] = field(default_factory=list)


@dataclass
class MetricsLog:
    """Per-turn latency timestamps t1..t6 (seconds on `clock`, a monotonic clock)."""

    trace_id: str
    turn_index: int = 0
    # t1: first user audio of the turn (speech onset)
    t1_first_user_audio: float | None = None
    # t2: final text from STT
    t2_stt_final: float | None = None
    # t3: request sent to the IntentClassifier/FlowEngine
    t3_logic_start: float | None = None
    # t4: request sent to the LLM (if any)
    t4_llm_request: float | None = None
    # t5: first audio chunk received from TTS
    t5_tts_first_chunk: float | None = None
    # t6: first audio chunk sent to the caller
    t6_first_bot_audio: float | None = None
    # Where the timestamps come from: the spec's time.monotonic, or the call's injected clock.
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def start_turn(self, at: float | None = None) -> None:
        """Open the next turn: t1 = `at` (the caller's speech onset) or now; clear the other timers."""
        self.turn_index += 1
        self.t1_first_user_audio = self.clock() if at is None else at
        self.t2_stt_final = self.t3_logic_start = self.t4_llm_request = None
        self.t5_tts_first_chunk = self.t6_first_bot_audio = None


# --- Streaming types ---
SttKind = Literal["partial", "final", "final_refinement"]


@dataclass(slots=True, frozen=True)
class SttResult:
    """One recognition update from the STT stream."""

    text: str
    is_final: bool
    confidence: float = 0.0
    kind: SttKind = "partial"
    # Position in the recognised audio (ms from the start of the stream), when the provider says.
    audio_start_ms: int | None = None
    audio_end_ms: int | None = None
    # When the result reached us, on the injected clock.
    received_at: float = 0.0


@dataclass(slots=True, frozen=True)
class LLMStreamChunk:
    """One piece of a streamed LLM answer with its safety verdict."""

    text_chunk: str
    is_safe: bool = True
    is_final: bool = False
    finish_reason: str | None = None
    model: str | None = None
    safety_reason: str | None = None  # why it was judged unsafe


@dataclass(slots=True, frozen=True)
class AudioChunk:
    """Mono signed 16-bit little-endian PCM at `sample_rate` Hz."""

    pcm: bytes
    sample_rate: int = 8000

    @property
    def duration_s(self) -> float:
        """Length of the audio in seconds."""
        return len(self.pcm) / (2 * self.sample_rate)
