"""What the voice activity detector tells its call (`bridge.vad.VoiceActivityDetector`): a change
of the caller's speaking state, with the arrival time of the audio that shows it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["VadEvent", "VadEventKind"]


class VadEventKind(enum.Enum):
    """What changed."""

    SPEECH_ONSET = "speech_onset"  # a starting run reached pause_after_ms: maybe speech
    SPEECH_REJECTED = "speech_rejected"  # that run was not speech after all
    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"


@dataclass(frozen=True, slots=True)
class VadEvent:
    """A change of speaking state.

    `at` is the arrival time of the first voiced frame of the run (onset, rejected, start), or of
    the last voiced frame before the hangover ran out (end). `detected_at` is when the event was
    emitted.
    """

    kind: VadEventKind
    at: float
    detected_at: float
