"""The echo gate's level gate: is an inbound frame no louder than the bot's echo could be?

The fallback of `bridge.echo_gate.EchoGate` while the echo path is not known (before its delay
search found one, or on a line where subtraction is off): the RMS of the last outbound frames in
a ring; per lag (whole 20 ms frames) a decaying correlation of inbound and outbound levels, fed
only by frames that could be echo; a running median of the echo gain at the best lag, frozen
while the inbound is clearly louder (double talk, as echo cancellers freeze; 2 s of that and
it starts again from the worst case: the echo rose). An inbound frame no louder than the
expected echo (its neighbours included, times the gain plus 6 dB, never more than the limit:
`min_return_loss_db`'s worst case, or what the newest window of the line bounds the echo to,
`bound`) may be only echo.

Cost per inbound frame: one pass over the ring's lags (17 at 300 ms) in plain Python, only while
the frame could be echo; per outbound frame: one store.
"""

from __future__ import annotations

import math

from bridge.echo_path import ACTIVE_RMS
from orchestrator.audio import FRAME_MS

__all__ = ["LevelGate"]

# The search's memory: 0.98 per frame is about a 1 s time constant.
_DECAY = 0.98
# The median tracker's step per frame (x1.02: 0.17 dB; x1.002 while frozen), and the margin over the median echo gain
# that the inbound level must exceed to count as the caller (x2.0: 6 dB).
_ERL_STEP = 1.02
_ERL_CREEP = 1.002
_ERL_MARGIN = 2.0
# Talking frames the search needs before its lag is trusted (0.4 s).
_SETTLE_FRAMES = 20
# Frames in a row louder than the measured echo after which it is taken to have risen (2 s:
# `[interruption] max_pause_ms`; a caller talking that long over the bot would have cut it).
_RISEN_FRAMES = 100
# Windows (`search_ms` of the bot's speech each) whose least bound on the echo gain is the limit.
_BOUNDS = 4


class LevelGate:
    """One call's outbound levels and the level test (`is_echo`), in RMS of s16 frames."""

    __slots__ = (
        "_active",
        "_corr",
        "_delay",
        "_energy",
        "_erl",
        "_gain",
        "_limit",
        "_louder",
        "_bound_pos",
        "_bounds",
        "_pos",
        "_quiet",
        "_ring",
    )

    def __init__(self, max_delay_ms: int, min_return_loss_db: float) -> None:
        n = -(-max_delay_ms // FRAME_MS) + 2  # whole frames covering the delay, plus one each side
        self._ring = [0] * n  # outbound RMS; _ring[_pos - 1] is the newest
        self._pos = 0
        self._quiet = n  # silent frames sent in a row (>= len(_ring): the ring holds no audio)
        self._gain: float = 10.0 ** (-min_return_loss_db / 20.0)
        # Delay search: per lag (frames), a decaying sum of inbound x outbound level and of the
        # outbound level squared; the lag with the best normalised sum is the echo path's delay.
        self._corr = [0.0] * n
        self._energy = [0.0] * n
        self._active = 0  # frames the bot was heard on the reference so far
        self._delay = -1  # lag in frames; -1 until the search has seen enough of the bot
        # Echo gain measured at that lag (inbound / outbound level, its running median).
        self._erl: float = self._gain
        # The gain no lag's echo can exceed (`bound`), with the margin; the worst case until then.
        self._limit: float = self._gain
        self._louder = 0  # frames in a row louder than the echo measured
        self._bounds = [math.inf] * _BOUNDS  # the last windows' bounds on the echo gain
        self._bound_pos = 0

    @property
    def delay(self) -> int:
        """The echo delay found, in 20 ms frames (-1: not yet known)."""
        return self._delay

    @property
    def bot_audible(self) -> bool:
        """Whether the bot sent audio within the echo window (`max_delay_ms`). O(1)."""
        return self._quiet < len(self._ring)

    def sent(self, level: int) -> bool:
        """The bot's frame of RMS `level` just went out (0: a silent frame); returns
        `bot_audible` after it (read per inbound frame: the echo gate keeps it as a plain
        attribute rather than calling through)."""
        ring = self._ring
        n = len(ring)
        ring[self._pos] = level
        self._pos = (self._pos + 1) % n
        quiet = self._quiet = 0 if level else self._quiet + 1
        return quiet < n

    def bound(self, gain: float) -> None:
        """The echo gain is at most `gain` (measured on a window of the line against the bot's
        audio by `EchoGate`, every `search_ms` of the bot's speech; inf: no information): the
        limit is the least of the last `_BOUNDS` windows' +6 dB, never above the worst case.

        Why: the median steps 0.17 dB a frame from the worst case (9 dB), so on a line whose
        echo is 25-30 dB down, under the line noise (no subtraction path), it took 2 s and more
        to learn it, and a caller 10-15 dB quieter than the bot was taken for echo meanwhile.
        The median itself is left alone: a window that heard nothing would pin it."""
        bounds = self._bounds
        bounds[self._bound_pos] = gain
        self._bound_pos = (self._bound_pos + 1) % len(bounds)
        # The least of the last few windows': a window the caller talked in bounds nothing;
        # only the last few: the echo may have risen since (a speakerphone).
        limit = min(bounds) * _ERL_MARGIN
        self._limit = limit if limit < self._gain else self._gain

    def may_be_echo(self, level: int) -> bool:
        """Whether an inbound frame of RMS `level` may be the bot's echo, by what `is_echo` has
        learned so far without feeding it: once its delay is settled, no louder than the bot's
        frames at that lag times the measured echo gain (+6 dB); before, no louder than the bot's
        loudest recent frame times the limit (`min_return_loss_db`'s worst case, or the newest
        window's bound, `bound`).

        The measured gain, not the worst case, once known: on a line whose echo is under the line
        noise the subtraction finds no path, and a 9 dB worst case hid every caller quieter than
        the bot by more than that from the fast onset (turn corpus: pause at the first loud
        syllable, 90-700 ms after the speech onset)."""
        ring = self._ring
        delay = self._delay
        if delay < 0:
            return level <= max(ring) * self._limit
        n = len(ring)
        newest = self._pos - 1
        expected = max(
            ring[(newest - delay) % n], ring[(newest - delay - 1) % n], ring[(newest - delay + 1) % n]
        )
        gain = self._erl * _ERL_MARGIN
        return level <= expected * (gain if gain < self._limit else self._limit)

    def is_echo(self, level: int) -> bool:
        """Whether an inbound frame of RMS `level` may be nothing but the bot's echo; feeds the
        delay search and the echo gain's median. False when the bot was quiet."""
        ring, corr, energy = self._ring, self._corr, self._energy
        n = len(ring)
        newest = self._pos - 1
        peak = max(ring)
        if peak == 0:
            return False
        if peak > ACTIVE_RMS and level <= peak * self._gain:
            # Only frames that can be echo (no louder than the worst case) feed the search: the
            # caller's voice is not correlated with the bot's, and would drag the lag around.
            self._active += 1
            best, best_score = -1, 0.0
            for lag in range(n):
                ref = ring[newest - lag]  # from -n up: a negative index wraps as `% n` would
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
            if expected > ACTIVE_RMS:
                erl = self._erl
                ratio = level / expected
                if ratio <= erl * _ERL_MARGIN:
                    # A running median (a step up or down per frame) of frames that may be echo;
                    # misaligned frames move it one step, not to their value.
                    self._erl = erl * _ERL_STEP if ratio > erl else erl / _ERL_STEP
                    self._louder = 0
                else:
                    # Louder than echo: the caller talking over the bot (frozen, as echo
                    # cancellers freeze in double talk), or a louder echo path (a slow rise).
                    self._erl = erl * _ERL_CREEP
                    self._louder += 1
                    if self._louder >= _RISEN_FRAMES:
                        # Too long for a caller the bot talked over: the echo got louder (a
                        # speakerphone): start again from the worst case.
                        self._erl = self._gain
                        self._louder = 0
            # The measured gain with a margin, never above the configured worst case.
            gain = self._erl * _ERL_MARGIN
            return level <= expected * (gain if gain < self._limit else self._limit)
        return level <= expected * self._limit
