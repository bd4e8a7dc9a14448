"""Echo gate: the bot's own voice, coming back on the line, must not count as the caller.

The bridge knows exactly what it sent. `EchoGate` keeps the RMS of the last outbound frames (a
fixed ring covering the longest echo path) and, for each inbound frame, gives the level below
which that frame may be nothing but the bot's echo: the loudest outbound frame within the echo
window, lowered by the worst echo return loss the line is assumed to have. The VAD treats inbound
frames under that floor as silence while the bot talks; when the bot is quiet the floor is 0.

Taking the maximum over the whole window makes the gate indifferent to the exact delay (20-300 ms
on real lines), at the price of needing the caller to be louder than the loudest echo could be.
Per frame: one RMS of the outbound frame and a max over a short list of ints; no allocation.
"""

from __future__ import annotations

import audioop
from typing import Annotated

import pydantic.dataclasses
from pydantic import ConfigDict, Field

from orchestrator.audio import FRAME_MS, SAMPLE_WIDTH

__all__ = ["EchoGate", "EchoSettings"]


@pydantic.dataclasses.dataclass(
    frozen=True, slots=True, config=ConfigDict(extra="forbid", allow_inf_nan=False)
)
class EchoSettings:
    """Echo gate tuning (section `[echo]`).

    Invalid values raise `pydantic.ValidationError` (a `ValueError`) naming the field.
    """

    # Off: inbound audio is judged as if the bot never spoke.
    enabled: bool = True
    # Longest echo path, ms (outbound frame sent -> its echo arrives inbound).
    max_delay_ms: Annotated[int, Field(ge=20, le=1000)] = 300
    # The smallest echo return loss assumed, dB: echo is at least this much quieter than the bot.
    # Lines measure 15-25 dB; the gate floor is the bot's level minus this.
    min_return_loss_db: Annotated[float, Field(ge=0.0, le=60.0)] = 9.0


class EchoGate:
    """One call's echo reference: `sent()` per outbound frame, `floor()` per inbound frame."""

    __slots__ = ("_gain", "_pos", "_ring", "enabled")

    def __init__(self, settings: EchoSettings | None = None) -> None:
        s = settings or EchoSettings()
        self.enabled = s.enabled
        n = -(-s.max_delay_ms // FRAME_MS) + 1  # whole frames covering the delay, plus the current one
        self._ring = [0] * n
        self._pos = 0
        self._gain = 10.0 ** (-s.min_return_loss_db / 20.0)

    def sent(self, frame: bytes | bytearray) -> None:
        """The bot's frame (slin, any length) just went out."""
        ring = self._ring
        ring[self._pos] = audioop.rms(frame, SAMPLE_WIDTH)
        self._pos = (self._pos + 1) % len(ring)

    def sent_silence(self) -> None:
        """A silent frame went out."""
        ring = self._ring
        ring[self._pos] = 0
        self._pos = (self._pos + 1) % len(ring)

    def floor(self) -> int:
        """RMS (s16) at or below which an inbound frame may be only the bot's echo; 0 when off."""
        if not self.enabled:
            return 0
        return int(max(self._ring) * self._gain)
