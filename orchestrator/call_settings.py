"""Settings of one call's dialogue that are the service's, not the dialogue map's."""

from __future__ import annotations

from typing import Annotated

import pydantic.dataclasses
from pydantic import ConfigDict, Field

__all__ = ["CallSettings"]

_Positive = Annotated[float, Field(gt=0)]


@pydantic.dataclasses.dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class CallSettings:
    """Bounds on one call (section `[call]`), in seconds.

    The dialogue's own timing (no-input timeout, operation timeout, thresholds) is in the map's
    `settings`; these are the service's bounds on the providers.
    """

    # The call's async setup (connecting its TTS stream): past this the caller hears the
    # emergency phrase and is hung up (`CallSetupError`).
    setup_timeout_s: _Positive = 5.0
    # Bound on one provider operation inside the call: opening the TTS synthesis stream of an LLM
    # answer; the intent classifier on a partial or a final, and the FAQ lookup; the LLM answer's
    # whole cleanup (its tasks, the answer and synthesis streams, together); each provider's
    # shutdown when the call ends (LLM, STT, TTS, one after another).
    provider_timeout_s: _Positive = 5.0
    # Bound on playing the emergency phrase before hanging up a call that cannot be served.
    apologise_timeout_s: _Positive = 10.0
    # Bound on one audio-cache read (a clip, a filler) during the call; past it the read fails
    # as a retryable `CacheError` (the caller hears the emergency filler, not silence).
    cache_timeout_s: _Positive = 2.0
    # Bound on a cancelled task's unwinding (a cut playback, the answer's tasks, the call's tasks
    # at its end; the service's own tasks at shutdown): past it the task is logged and abandoned.
    cancel_bound_s: _Positive = 5.0
    # Graceful drain (SIGTERM, `VoicebridgeApp.begin_drain()`): how long calls in progress may go
    # on finishing their dialogue; past it each hears the map's drain goodbye and is hung up. A
    # supervisor's stop grace (systemd TimeoutStopSec, Kubernetes terminationGracePeriodSeconds)
    # should exceed it by the goodbye's length plus a few seconds of teardown.
    drain_timeout_s: _Positive = 60.0
    # STT health: this much of the caller's speech (as the VAD hears it) with no recognition
    # result at all means STT is stalled (frozen, or reconnecting): the caller hears the emergency
    # phrase (not interruptible) and the STT circuit opens. Results coming back close it again.
    stt_stall_s: _Positive = 3.0
    # After a stall, how long STT may take to recover before the call ends ("stt_failure").
    stt_recovery_s: _Positive = 8.0
