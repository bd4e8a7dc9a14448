"""Ringback while a transfer rings the operator: `RingbackControl` and `ringback_frames`.

Until the operator's channel answers, the caller is still in our bridge with the bot's media leg
only, so the bot's own playout plays the ringback (no ARI round trip: it starts with the transfer
and stops on the very tick after the operator answered, or when the transfer fails). The tone is
the Russian one (GOST: 425 Hz, 1 s on, 4 s off), prepared once as 250 frames of 20 ms.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Protocol

from bridge.playout import Playout
from orchestrator.audio import FRAME_BYTES, SAMPLE_RATE
from orchestrator.domain.models import TransferOutcome, TransferRequest

__all__ = ["RingbackControl", "TransferringCall", "ringback_frames"]

RINGBACK_HZ = 425.0
RINGBACK_ON_S = 1.0
RINGBACK_OFF_S = 4.0
RINGBACK_AMPLITUDE = 6000  # s16 peak: about -15 dBFS, a ringback's usual loudness


def ringback_frames(
    hz: float = RINGBACK_HZ,
    on_s: float = RINGBACK_ON_S,
    off_s: float = RINGBACK_OFF_S,
    amplitude: int = RINGBACK_AMPLITUDE,
) -> tuple[bytearray, ...]:
    """One ringback cadence as 8 kHz s16le 20 ms frames: `on_s` of a `hz` sine, `off_s` of silence.

    Raises ValueError unless `on_s` > 0, `off_s` >= 0 and 0 < `hz` < 4000.
    """
    if on_s <= 0 or off_s < 0 or not 0 < hz < SAMPLE_RATE / 2:
        raise ValueError(f"ringback: {hz} Hz, {on_s} s on, {off_s} s off is not a tone cadence")
    on = round(on_s * SAMPLE_RATE)
    total = on + round(off_s * SAMPLE_RATE)
    total += -total % (FRAME_BYTES // 2)  # whole frames
    step = 2 * math.pi * hz / SAMPLE_RATE
    samples = [round(amplitude * math.sin(step * i)) if i < on else 0 for i in range(total)]
    pcm = struct.pack(f"<{total}h", *samples)
    return tuple(bytearray(pcm[i : i + FRAME_BYTES]) for i in range(0, len(pcm), FRAME_BYTES))


class TransferringCall(Protocol):
    """A call that can transfer and say when the operator answered (`bridge.ari.AriCall`)."""

    async def transfer(
        self, request: TransferRequest, *, on_answer: Callable[[], None] | None = None
    ) -> TransferOutcome:
        """Dial `request.endpoint`, call `on_answer()` when it answers, join the caller to it."""
        ...


class RingbackControl:
    """The `CallControl` of a call whose caller hears ringback on `playout` while a transfer rings."""

    def __init__(self, call: TransferringCall, playout: Playout, frames: tuple[bytearray, ...]) -> None:
        self._call = call
        self._playout = playout
        self._frames = frames

    async def transfer(self, request: TransferRequest) -> TransferOutcome:
        """`CallControl.transfer`, with ringback from the start until the operator answers or the
        transfer ends otherwise."""
        self._playout.ring(self._frames)
        try:
            return await self._call.transfer(request, on_answer=self._playout.stop_ring)
        finally:
            self._playout.stop_ring()
