"""Settings of the espeak-ng TTS (`orchestrator.adapters.tts.espeak.EspeakTTS`)."""

from __future__ import annotations

from typing import Annotated

import pydantic.dataclasses
from pydantic import ConfigDict, Field

__all__ = ["EspeakSettings"]


@pydantic.dataclasses.dataclass(
    frozen=True, slots=True, config=ConfigDict(extra="forbid", allow_inf_nan=False)
)
class EspeakSettings:
    """The offline TTS (section `[espeak]`, used with `[providers] tts = "espeak"`)."""

    voice: str = "ru"  # an espeak-ng voice (`espeak-ng --voices`)
    speed_wpm: Annotated[int, Field(ge=80, le=450)] | None = None  # None: espeak-ng's default (175)
    timeout_s: Annotated[float, Field(gt=0)] = 15.0  # bound on synthesizing one phrase
    binary: str = "espeak-ng"  # the executable, looked up on PATH
