"""What a call tells its observers (tests, the text demo, logs), and how it ended.

`CallEvent.kind` is a `CallEventKind`, a `StrEnum`: observers may compare it with the plain
string (`event.kind == "barge_in"`), and a misspelt kind fails where it is emitted, not silently
at the reader.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

log = logging.getLogger(__name__)

# Why a call ended: END_CALL state, the caller hung up, STT failed for good, the caller stayed
# silent past the reprompts, a bug, or the service shut the call down.
EndReason = Literal["end_call", "caller_hangup", "stt_failed", "no_input", "error", "shutdown"]

# Payload values of an event (texts, keys, state ids, counts).
EventValue = str | int | float | bool | None


class CallEventKind(StrEnum):
    """Every kind of event a call emits; `data` keys per kind are listed with each."""

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
    PROVIDER_FAILURE = "provider_failure"  # stage, error
    LLM_UNSAFE = "llm_unsafe"  # reason, attempt
    LLM_SAID = "llm_said"  # text: what the LLM answer said, as spoken


@dataclass(slots=True, frozen=True)
class CallEvent:
    """Something that happened in a call, at clock time `at`."""

    kind: CallEventKind
    at: float
    data: dict[str, EventValue] = field(default_factory=dict)


Observer = Callable[[CallEvent], None]


class Observe(Protocol):
    """How the Orchestrator's parts report an event: kind and payload; the time is stamped for them."""

    def __call__(self, kind: CallEventKind, /, **data: EventValue) -> None:
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
        return self.reason != "caller_hangup"
