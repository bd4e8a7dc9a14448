"""What a `RecognitionStream` (`orchestrator.contracts`) may also tell the Orchestrator.

Optional capabilities, checked with `isinstance` once per call, not per frame: a stream that
lacks one gets the Orchestrator's default (said on each protocol).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["AudioOrigin", "ResendAccounting"]


@runtime_checkable
class AudioOrigin(Protocol):
    """A `RecognitionStream` that says where its results' audio times start on the call's clock.

    `SttResult.audio_start_ms`/`audio_end_ms` count the audio fed to the stream; a stream whose
    times start again from 0 (a new session on a reconnect that does not carry them on) must
    report this, else the Orchestrator takes the time it fed the stream its first frame. Derive
    it from frames, not per frame on the hot path: the time of the first frame after a (re)start.
    """

    @property
    def audio_origin(self) -> float | None:
        """The call-clock time (s) of the audio at the results' 0 ms: when the current
        session's first 20 ms frame was pushed, minus its 20 ms (a frame is pushed once heard);
        None: no audio fed yet."""
        ...


@runtime_checkable
class ResendAccounting(Protocol):
    """A `RecognitionStream` that resends unconfirmed audio after a reconnect and counts what it
    could not (SpeechKit v3: `orchestrator.adapters.stt.yandex`; exported in the call's final
    record as `stt_resend_dropped_ms`)."""

    @property
    def resend_dropped_ms(self) -> int:
        """Audio ms sent on failed connections that no final covered and no reconnect resent
        (held beyond the stream's resend bound), over the whole recognition."""
        ...
