"""Echo gate: the bot's own voice, coming back on the line, must not count as the caller.

The bridge knows exactly what it sent. `EchoGate` keeps the RMS of the last outbound frames (a
fixed ring covering the longest echo path) and judges each inbound frame against it:

- delay search: per lag (whole frames), a decaying correlation of inbound and outbound levels,
  fed only by frames that could be echo; the best lag is the echo path's delay;
- echo gain: a running median of inbound / outbound level at that lag, frozen while the inbound
  is clearly louder (the caller talking over the bot, as echo cancellers freeze in double talk);
- an inbound frame no louder than the expected echo (outbound level at the lag, its neighbours
  included, times the measured gain plus 6 dB, never more than `min_return_loss_db` allows) may
  be only echo: the VAD treats it as no evidence either way. Before the delay is known, the
  loudest frame of the whole window times the worst-case gain is the expectation.

Level gating cannot hear a caller quieter than the echo they talk over (an echo canceller such
as speexdsp's could); the bench (bench/turn_bench.py) measures what it costs in recall.
Per frame: one RMS of the outbound frame, a pass over the short ring; no containers allocated.
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
    """One call's echo reference: `sent()` per outbound frame, `is_echo(level)` per inbound frame."""

    __slots__ = (
        "_active",
        "_corr",
        "_delay",
        "_energy",
        "_erl",
        "_gain",
        "_pos",
        "_quiet",
        "_ring",
        "enabled",
    )

    def __init__(self, settings: EchoSettings | None = None) -> None:
        s = settings or EchoSettings()
        self.enabled = s.enabled
        n = -(-s.max_delay_ms // FRAME_MS) + 2  # whole frames covering the delay, plus one each side
        self._ring = [0] * n  # outbound RMS; _ring[_pos - 1] is the newest
        self._pos = 0
        self._quiet = n  # silent frames sent in a row (>= len(_ring): the ring holds no audio)
        self._gain: float = 10.0 ** (-s.min_return_loss_db / 20.0)
        # Delay search: per lag (frames), a decaying sum of inbound x outbound level and of the
        # outbound level squared; the lag with the best normalised sum is the echo path's delay.
        self._corr = [0.0] * n
        self._energy = [0.0] * n
        self._active = 0  # frames the bot was heard on the reference so far
        self._delay = -1  # lag in frames; -1 until the search has seen enough of the bot
        # Echo gain measured at that lag (inbound / outbound level, its running median).
        self._erl: float = self._gain

    @property
    def delay_frames(self) -> int:
        """The echo delay found, in 20 ms frames (-1: not yet known)."""
        return self._delay

    @property
    def bot_audible(self) -> bool:
        """Whether the bot sent audio within the echo window (`max_delay_ms`): its voice, or its
        echo, may be on the inbound line now. O(1): read per inbound frame."""
        return self._quiet < len(self._ring)

    def sent(self, frame: bytes | bytearray) -> None:
        """The bot's frame (slin, any length) just went out."""
        ring = self._ring
        level = ring[self._pos] = audioop.rms(frame, SAMPLE_WIDTH)
        self._pos = (self._pos + 1) % len(ring)
        self._quiet = 0 if level else self._quiet + 1

    def sent_silence(self) -> None:
        """A silent frame went out."""
        ring = self._ring
        ring[self._pos] = 0
        self._pos = (self._pos + 1) % len(ring)
        self._quiet += 1

    def is_echo(self, level: int) -> bool:
        """Whether an inbound frame of RMS `level` (s16) may be nothing but the bot's echo.

        Also feeds the delay search. False when the gate is off or the bot was quiet.
        """
        if not self.enabled:
            return False
        ring, corr, energy = self._ring, self._corr, self._energy
        n = len(ring)
        newest = self._pos - 1
        peak = max(ring)
        if peak == 0:
            return False
        if peak > _ACTIVE_RMS and level <= peak * self._gain:
            # Only frames that can be echo (no louder than the worst case) feed the search: the
            # caller's voice is not correlated with the bot's, and would drag the lag around.
            self._active += 1
            best, best_score = -1, 0.0
            for lag in range(n):
                ref = ring[(newest - lag) % n]
                c = corr[lag] = corr[lag] * _DECAY + level * ref
                e = energy[lag] = energy[lag] * _DECAY + ref * ref
                if c > 0.0 and e > 0.0:
                    score = c * c / e
                    if score > best_score:
                        best, best_score = lag, score
            if self._active >= _SETTLE_FRAMES and best >= 0:
                self._delay = best
        delay = self._delay
        if delay < 0:
            expected = peak  # delay unknown: the loudest the echo could be
        else:
            # The frame at the lag and its neighbours: the echo straddles frame boundaries.
            expected = max(
                ring[(newest - delay) % n], ring[(newest - delay - 1) % n], ring[(newest - delay + 1) % n]
            )
            if expected > _ACTIVE_RMS:
                erl = self._erl
                ratio = level / expected
                if ratio <= erl * _ERL_MARGIN:
                    # A running median (a step up or down per frame) of frames that may be echo;
                    # misaligned frames move it one step, not to their value.
                    self._erl = erl * _ERL_STEP if ratio > erl else erl / _ERL_STEP
                else:
                    # Louder than echo: the caller talking over the bot (frozen, as echo
                    # cancellers freeze in double talk), or a louder echo path (a slow rise).
                    self._erl = erl * _ERL_CREEP
            # The measured gain with a margin, never above the configured worst case.
            gain = self._erl * _ERL_MARGIN
            return level <= expected * (gain if gain < self._gain else self._gain)
        return level <= expected * self._gain


# Outbound RMS above which the bot counts as talking for the delay search (about -50 dBFS).
_ACTIVE_RMS = 100
# The search's memory: 0.98 per frame is about a 1 s time constant.
_DECAY = 0.98
# The median tracker's step per frame (x1.02: 0.17 dB; x1.002 while frozen), and the margin over the median echo gain
# that the inbound level must exceed to count as the caller (x2.0: 6 dB).
_ERL_STEP = 1.02
_ERL_CREEP = 1.002
_ERL_MARGIN = 2.0
# Talking frames the search needs before its lag is trusted (0.4 s).
_SETTLE_FRAMES = 20
