"""What a call tells its observers (tests, the text demo, logs), and how it ended.

`CallEvent.kind` is a `CallEventKind`, a `StrEnum`: observers may compare it with the plain
string (`event.kind == "barge_in"`), and a misspelt kind fails where it is emitted, not silently
at the reader.

Each kind's payload is a `TypedDict` (`PAYLOADS`): emitters are type-checked against it through
the overloads of `Observe`, and `CallEvent` refuses, when it is made, a payload with a missing or
unknown key, so a misspelt key also fails where it is emitted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol, TypedDict, get_args, overload

log = logging.getLogger(__name__)

# Why a call ended: the one taxonomy. The call's `call_end` metrics record and the service's
# "call ... ended: <reason>" log line carry the same value (`CallOutcome.reason`); the gateway, the
# service and the Orchestrator all pick from this list, nothing else.
EndReason = Literal[
    # completed: the map reached an END_CALL state and its goodbye was played
    "end_call",
    # handed over to a person: an `action: TRANSFER` state's target answered (the caller's line
    # stays up, joined to the operator; only the bot's leg ends)
    "transferred",
    # an outbound call answered by an answering machine (`orchestrator.machine_check`): the map's
    # voicemail message was left, if it has one, and the bot hung up
    "machine",
    # the caller hung up
    "caller_hangup",
    # the caller stayed silent past the map's reprompts (and heard its goodbye)
    "no_input",
    # provider failures, named by provider: STT heard nothing while the caller spoke and did not
    # recover within `[call] stt_recovery_s`, gave up, or its circuit was open when the call came
    # (the caller heard the emergency phrase first)
    "stt_failure",
    # (reserved) LLM / TTS failures that end a call; today an LLM or TTS failure is heard as the
    # emergency phrase and the call goes on
    "llm_failure",
    "tts_failure",
    # the call's setup raised or overran `[call] setup_timeout_s` (a bug or a misconfigured
    # adapter; a TTS provider being down is not one: its circuit breaker covers that and the call
    # goes on with cached audio): emergency phrase, hang-up
    "setup_failed",
    # the bridge cut the media leg: a malformed AudioSocket message, or no media past the timeout
    "protocol_error",
    "media_timeout",
    # internal error: a bug nothing in the dialogue handled
    "error",
    # the service stopped the call (shutdown), or its drain deadline passed
    "shutdown",
    "drain_timeout",
]
END_REASONS: tuple[str, ...] = get_args(EndReason)

# Payload values of an event (texts, keys, state ids, counts).
EventValue = str | int | float | bool | None


class CallEventKind(StrEnum):
    """Every kind of event a call emits; `PAYLOADS` gives each one's `data` (listed here too)."""

    LISTENING = "listening"  # state: the bot now waits for the caller
    USER_SAID = "user_said"  # text: an STT final taken as the caller's turn
    STT_DROPPED = "stt_dropped"  # text: heard while the bot spoke uninterrupted (echo, backchannel)
    DTMF = "dtmf"  # digit
    BARGE_IN = "barge_in"  # (none): the caller cut the bot off
    NO_INPUT = "no_input"  # count: silent turns in a row
    STATE = "state"  # from_state, to_state
    END_CALL = "end_call"  # state: an END_CALL state was reached
    PLAY = "play"  # kind ("answer" | "filler" | "tts" | "llm"), key or text
    MISSING_AUDIO = "missing_audio"  # key: not in the audio cache
    FILLER_CUT = "filler_cut"  # (none): a filler was cut because the answer is ready
    FILLER_SKIPPED = "filler_skipped"  # key: the answer was ready before the filler's turn
    PROVIDER_FAILURE = "provider_failure"  # stage, error, provider, kind
    LLM_UNSAFE = "llm_unsafe"  # reason, attempt
    LLM_SAID = "llm_said"  # text: what the LLM answer said, as spoken
    TRANSFER = "transfer"  # target, outcome ("answered" | "busy" | "no_answer" | "failed")
    MACHINE_CHECK = "machine_check"  # verdict ("human" | "machine" | "silent")


# What a PLAY event played: a scripted clip, a filler, a synthesized playlist item, the LLM answer.
PlayKind = Literal["answer", "filler", "tts", "llm"]


class NoPayload(TypedDict):
    """BARGE_IN, FILLER_CUT."""


class StatePayload(TypedDict):
    """LISTENING, END_CALL: the dialogue state at the time."""

    state: str


class TextPayload(TypedDict):
    """USER_SAID, STT_DROPPED, LLM_SAID: what was said."""

    text: str


class DtmfPayload(TypedDict):
    digit: str


class CountPayload(TypedDict):
    """NO_INPUT: silent turns in a row."""

    count: int


class TransitionPayload(TypedDict):
    from_state: str
    to_state: str


class _PlayKind(TypedDict):
    kind: PlayKind


class PlayPayload(_PlayKind, total=False):
    # (total=False rather than NotRequired: with postponed annotations, 3.11 cannot see the latter)
    key: str  # a cached clip
    text: str  # a synthesized playlist item


class KeyPayload(TypedDict):
    """MISSING_AUDIO, FILLER_SKIPPED: the audio key."""

    key: str


class FailurePayload(TypedDict):
    stage: str  # "playback", "stt", "classifier"
    error: str
    provider: str  # the failing provider ("redis", "llm", ...; the stage when it does not say)
    kind: str  # the error's class ("STTError", "TimeoutError", ...): a small, fixed set


class UnsafePayload(TypedDict):
    reason: str | None
    attempt: int  # 0 for the first answer


class VerdictPayload(TypedDict):
    verdict: str  # a `machine_check.Verdict`


class TransferPayload(TypedDict):
    target: str  # the dial string ("PJSIP/operator", "Local/100@operators")
    outcome: str  # a `TransferOutcome`


K = CallEventKind
PAYLOADS: Mapping[CallEventKind, type] = {
    K.LISTENING: StatePayload,
    K.USER_SAID: TextPayload,
    K.STT_DROPPED: TextPayload,
    K.DTMF: DtmfPayload,
    K.BARGE_IN: NoPayload,
    K.NO_INPUT: CountPayload,
    K.STATE: TransitionPayload,
    K.END_CALL: StatePayload,
    K.PLAY: PlayPayload,
    K.MISSING_AUDIO: KeyPayload,
    K.FILLER_CUT: NoPayload,
    K.FILLER_SKIPPED: KeyPayload,
    K.PROVIDER_FAILURE: FailurePayload,
    K.LLM_UNSAFE: UnsafePayload,
    K.LLM_SAID: TextPayload,
    K.TRANSFER: TransferPayload,
    K.MACHINE_CHECK: VerdictPayload,
}


@dataclass(slots=True, frozen=True)
class CallEvent:
    """Something that happened in a call, at clock time `at`; `data` is the kind's payload.

    Raises ValueError when `data` does not fit the kind's payload (`PAYLOADS`): a missing or an
    unknown key.
    """

    kind: CallEventKind
    at: float
    data: dict[str, EventValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = PAYLOADS[self.kind]
        required: frozenset[str] = getattr(spec, "__required_keys__")  # noqa: B009 - TypedDict
        allowed = required | getattr(spec, "__optional_keys__")  # noqa: B009
        keys = self.data.keys()
        if not required <= keys or not keys <= allowed:
            raise ValueError(
                f"{self.kind.value} event: payload keys {sorted(keys)}, expected {spec.__name__}"
            )


Observer = Callable[[CallEvent], None]


class Observe(Protocol):
    """How the Orchestrator's parts report an event: kind and payload; the time is stamped for them.

    One overload per kind, so an emitter with a wrong or missing payload key fails the type check.
    """

    @overload
    def __call__(self, event: Literal[K.BARGE_IN, K.FILLER_CUT], /) -> None: ...
    @overload
    def __call__(self, event: Literal[K.LISTENING, K.END_CALL], /, *, state: str) -> None: ...
    @overload
    def __call__(self, event: Literal[K.USER_SAID, K.STT_DROPPED, K.LLM_SAID], /, *, text: str) -> None: ...
    @overload
    def __call__(self, event: Literal[K.DTMF], /, *, digit: str) -> None: ...
    @overload
    def __call__(self, event: Literal[K.NO_INPUT], /, *, count: int) -> None: ...
    @overload
    def __call__(self, event: Literal[K.STATE], /, *, from_state: str, to_state: str) -> None: ...
    @overload
    def __call__(
        self, event: Literal[K.PLAY], /, *, kind: PlayKind, key: str = ..., text: str = ...
    ) -> None: ...
    @overload
    def __call__(self, event: Literal[K.MISSING_AUDIO, K.FILLER_SKIPPED], /, *, key: str) -> None: ...
    @overload
    def __call__(
        self, event: Literal[K.PROVIDER_FAILURE], /, *, stage: str, error: str, provider: str, kind: str
    ) -> None: ...
    @overload
    def __call__(self, event: Literal[K.LLM_UNSAFE], /, *, reason: str | None, attempt: int) -> None: ...
    @overload
    def __call__(self, event: Literal[K.TRANSFER], /, *, target: str, outcome: str) -> None: ...
    @overload
    def __call__(self, event: Literal[K.MACHINE_CHECK], /, *, verdict: str) -> None: ...
    def __call__(self, event: CallEventKind, /, **data: EventValue) -> None:
        """Report one event."""
        ...


def notify(observer: Observer | None, event: CallEvent) -> None:
    """Hand `event` to `observer`; an observer's failure is logged, never raised into the call."""
    if observer is None:
        return
    try:
        observer(event)
    except Exception:
        log.exception("call observer failed")


@dataclass(slots=True, frozen=True)
class CallOutcome:
    """How a call ended; the bridge hangs the caller up when `hang_up` is true."""

    reason: EndReason
    turns: int

    @property
    def hang_up(self) -> bool:
        """Whether the bot side should end the phone call."""
        return self.reason not in ("caller_hangup", "transferred")
