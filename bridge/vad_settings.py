"""The VAD's settings (section `[vad]`), apart from the detector (bridge/vad.py) to keep it short."""

from __future__ import annotations

from typing import Annotated

import pydantic.dataclasses
from pydantic import ConfigDict, Field

from bridge.vad_engines import Engine

__all__ = ["VadSettings"]


@pydantic.dataclasses.dataclass(
    frozen=True, slots=True, config=ConfigDict(extra="forbid", allow_inf_nan=False)
)
class VadSettings:
    """Tuning of the detector (section `[vad]`); the defaults suit 8 kHz telephone audio.

    `engine` defaults to Silero VAD (MIT). TEN VAD (`engine = "ten"`) is opt-in: its licence adds
    non-competition and deployment conditions to Apache 2.0 (see the field's comment).

    Invalid values raise `pydantic.ValidationError` (a `ValueError`) naming the field.
    """

    # Frame classifier: "silero" (Silero VAD, MIT), "webrtc" (webrtcvad, BSD; the fallback) or
    # "ten" (TEN VAD; needs Debian's libc++1). TEN is opt-in because of its licence: Apache 2.0
    # WITH additional conditions (its wheel's licenses/LICENSE: no deployment that competes with
    # Agora's offerings or lets third parties build or deploy applications), which an open
    # voice-agent system's users should choose knowingly, not inherit from a default.
    engine: Engine = "silero"
    # A neural engine judges frames only while the bot is audible on the line (its audio sent
    # within the echo window): the barge-in decisions, where telling a cough or an echo from a
    # caller matters; otherwise webrtcvad does, about a tenth of the CPU (a caller talking to a
    # quiet bot is heard by the STT anyway); a run that began while the bot was audible is judged
    # by it to its end, also once the bot paused. false: the neural engine judges every frame.
    neural_only_over_bot: bool = True
    # Silero: the calls' windows of one loop iteration run as one batch (bridge/vad_batch.py; ~134 us
    # a window alone, ~45 us in 16+). A frame completing a window is judged when the batch answers
    # (bridge/vad_defer.py): the same decisions as without, the events at the flush, same times.
    # Bench capacity, 5 runs each (noisy box): ms CPU per call-second, median, 150 calls 4.60 -> 3.35,
    # 250 calls 3.58 -> 3.16 (false -> true).
    batch_across_calls: bool = True
    # Speech probability at or above which a frame is voiced (the neural engines; webrtc gives 0/1).
    threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.7
    # webrtcvad mode: 0 (least) .. 3 (most eager to call audio noise "not speech").
    aggressiveness: Annotated[int, Field(ge=0, le=3)] = 2
    # Voiced audio needed before speech starts, ms (shorter runs are clicks and coughs).
    min_speech_ms: Annotated[int, Field(ge=20)] = 300
    # Silence needed before speech ends, ms (the pauses between words are shorter); at most 2000:
    # a longer one would outlast the end of turn's bound on a held final (4 s).
    hangover_ms: Annotated[int, Field(ge=20, le=2000)] = 400
    # Voiced audio after which a starting run is announced (SPEECH_ONSET: the bot pauses), ms;
    # 0, or not below min_speech_ms: no onset events.
    pause_after_ms: Annotated[int, Field(ge=0)] = 60
    # A starting run still undecided this long after its first voiced frame is rejected, ms (the
    # bot's echo can hide the caller's frames; a paused bot must not wait for ever).
    max_decision_ms: Annotated[int, Field(ge=20)] = 800
    # Unvoiced gap tolerated inside a starting run, ms.
    max_gap_ms: Annotated[int, Field(ge=0)] = 60
    # Frames below this RMS (s16) are silence without asking webrtcvad; 100 is about -50 dBFS, 0: off.
    energy_gate_rms: Annotated[int, Field(ge=0, le=32767)] = 100
    # A frame this much louder than the noise floor fires SPEECH_ONSET at once, dB; 0: off (onsets
    # only after pause_after_ms of voiced frames). Needs pause_after_ms > 0.
    onset_rise_db: Annotated[float, Field(ge=0.0, le=60.0)] = 10.0
    # After such an onset, the classifier must confirm (pause_after_ms of voiced frames) within
    # this, ms, or the run is rejected (the bot resumes).
    onset_confirm_ms: Annotated[int, Field(ge=20, le=2000)] = 200
