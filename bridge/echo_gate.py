"""Echo gate: the bot's own voice, coming back on the line, must not count as the caller.

The bridge knows exactly what it sent. `EchoGate` keeps what went out and takes it back out of
what comes in:

- Echo subtraction (`cancel(frame)`, per inbound frame): once `search_ms` of the bot's speech and
  of the inbound line have been seen, the echo path's delay is found by cross-correlation with
  PHAT weighting (numpy FFT over the last `search_ms`, lags 0..`max_delay_ms`), its gain by least
  squares at that lag; the path is used only if it removes at least `min_erle_db` of the inbound
  energy over that window. From then on each inbound frame minus the delayed, scaled reference is
  the RESIDUAL the VAD judges (the STT keeps the raw audio). Streams are aligned by sample count
  (inbound sample i is the echo of sent sample i + offset), not by which callback ran first.
  The echo return loss enhancement (ERLE: inbound / residual energy while the bot is heard) is
  tracked; if it drops below `_RESEARCH_ERLE_DB` (the path moved, or frames were lost on one side)
  the search runs again, at most once per `search_ms` of the bot's speech, and its result replaces
  the path only if it cancels better on the same window (so the caller talking over the bot, which
  also lowers ERLE, does not throw a good path away).
- Level gate (`is_echo(level)`), the fallback while no path is known: `bridge.echo_level.LevelGate`
  (outbound frame levels, a level-correlation delay search, the echo gain's running median). Once
  the path is known, a residual frame is echo only if it is no louder than `_RESIDUAL_MARGIN` times the
  echo left after subtraction (`is_echo` then judges the residual's level).

Cost per inbound frame: one byte copy into a preallocated ring and, with a path known and the bot
heard, a handful of numpy operations on 160 samples (no buffers allocated). The search (three FFTs
of a few thousand points) runs about once per call. Per outbound frame: one RMS and one byte
copy into the ring (two where it wraps; none for silence once the ring holds nothing else). The
rings keep the s16 samples as they came (bytearrays, written by slice assignment through
memoryviews: no numpy call and no temporary per frame); the search and the subtraction read them
through int16 views, as float64 / float32.

Three modules, one class: the rings are `bridge.echo_rings.EchoRings`, the path search (when it
is due, GCC-PHAT and the fit) is `bridge.echo_search.EchoPathSearch`; `EchoGate` derives from
both and adds the per-frame subtraction and the echo decision. Their state is the gate's own
slots, so the per-frame code reads it with no object or call in between.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
import numpy.typing as npt
import pydantic.dataclasses
from pydantic import ConfigDict, Field

from bridge.echo_path import ACTIVE_ENERGY, ACTIVE_RMS, FRAME
from bridge.echo_search import RETRY_FRAMES, EchoPathSearch
from orchestrator.audio import FRAME_BYTES, SAMPLE_WIDTH, audioop_rms

__all__ = ["EchoGate", "EchoSettings"]

_FRAME = FRAME  # samples per 20 ms frame: 160 (bridge.echo_path)

F32 = npt.NDArray[np.float32]
_SILENT_FRAME = bytes(FRAME_BYTES)


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
    # Subtract the echo (the delayed, scaled reference) before the VAD; off: the level gate only.
    cancel: bool = True
    # The bot's speech (and inbound line) the delay search needs, and its window, ms.
    search_ms: Annotated[int, Field(ge=200, le=4000, multiple_of=20)] = 300
    # A path found is used only if it removes at least this much of the inbound energy, dB.
    min_erle_db: Annotated[float, Field(ge=0.0, le=60.0)] = 6.0


class EchoGate(EchoPathSearch):
    """One call's echo reference: `sent()` per outbound frame, `cancel(frame)` then `is_echo(level)`
    per inbound frame (`is_echo` alone: the level gate only)."""

    # The rings' and the search's state are slots of the bases (`EchoRings`, `EchoPathSearch`):
    # read per frame as the gate's own attributes, with no object in between.
    __slots__ = (
        "_cancel",
        "_expected_residual",
        "_ref32",
        "_res",
        "_res16",
        "_res_bytes",
        "_seg",
        "_slipped",
        "_tmp",
        "bot_audible",
        "enabled",
    )

    def __init__(self, settings: EchoSettings | None = None) -> None:
        s = settings or EchoSettings()
        super().__init__(
            search_ms=s.search_ms,
            max_delay_ms=s.max_delay_ms,
            min_erle_db=s.min_erle_db,
            min_return_loss_db=s.min_return_loss_db,
        )
        self.enabled = s.enabled
        # --- subtraction ---
        self._cancel = s.enabled and s.cancel
        self._slipped = 0  # frames the known path did not fit, less those it did (`_misaligned`)
        # Echo left in the current frame's residual (RMS); -1: no residual (raw frame).
        self._expected_residual = -1.0
        self._seg: F32 = np.zeros(_FRAME, dtype=np.float32)  # this frame, for the subtraction
        self._ref32: F32 = np.zeros(_FRAME, dtype=np.float32)  # its reference
        self._res_bytes = bytearray(FRAME_BYTES)
        self._res16 = np.frombuffer(self._res_bytes, dtype=np.int16)
        self._res: F32 = np.zeros(_FRAME, dtype=np.float32)
        self._tmp: F32 = np.zeros(_FRAME, dtype=np.float32)
        # Whether the bot sent audio within the echo window (`max_delay_ms`): its voice, or its
        # echo, may be on the inbound line now. A plain attribute: read per inbound frame.
        self.bot_audible = False

    @property
    def delay_frames(self) -> int:
        """The level gate's echo delay, in 20 ms frames (-1: not yet known)."""
        return self._level.delay

    @property
    def delay_samples(self) -> int | None:
        """The echo path's delay found by the search, in samples at the current alignment (None:
        not known; inbound and outbound started together: the plain path delay)."""
        if self._offset is None:
            return None
        return -self._offset

    @property
    def path_gain(self) -> float:
        """The echo path's gain found by the search (0.0: not known)."""
        return self._path_gain if self._offset is not None else 0.0

    def sent(self, frame: bytes | bytearray) -> None:
        """The bot's frame (slin, 20 ms) just went out."""
        level = audioop_rms(frame, SAMPLE_WIDTH)
        self.bot_audible = self._level.sent(level)
        if self._cancel:
            if level > ACTIVE_RMS:
                self._search_active += 1
                self._bound_active += 1
            self._zero_run = 0
            # `_keep`, inline for the usual whole frame that does not wrap (it runs per frame).
            a = self._out_n % self._ref_len
            if len(frame) == FRAME_BYTES and a + _FRAME <= self._ref_len:
                self._ref_b[2 * a : 2 * a + FRAME_BYTES] = frame
                self._out_n += _FRAME
            else:
                self._keep(frame)

    def sent_silence(self) -> None:
        """A silent frame went out."""
        if self._zero_run >= self._ref_len and not self.bot_audible:
            # Both rings hold only silence (the level gate's: `bot_audible` is False): another
            # silent frame changes nothing they hold, only where the next frame goes, which
            # nothing reads relative to anything but the newest frame. Most of a call's ticks.
            # `_out_n` still moves: a path found later aligns sent and inbound sample counts.
            # With cancel off `_zero_run` stays at `_ref_len`: `bot_audible` alone decides.
            self._out_n += _FRAME
            return
        self.bot_audible = self._level.sent(0)
        if self._cancel:
            if self._zero_run >= self._ref_len:
                self._out_n += _FRAME  # the ring holds only zeros already: nothing to write
                return
            self._zero_run += _FRAME
            self._keep(_SILENT_FRAME)

    def cancel(self, frame: bytes) -> bytes | bytearray:
        """The inbound 20 ms frame (slin) minus the bot's echo: the residual for the VAD.

        Returns `frame` itself while no echo path is known or the bot's reference is silent there,
        else a buffer owned by the gate, valid until the next call. Runs the delay search when due.
        """
        if not self._cancel or len(frame) != FRAME_BYTES:
            self._expected_residual = -1.0
            return frame
        w, buf = self._search_len, self._in_b
        a = self._in_n % w  # a whole number of frames: the window is (`search_ms` is x20)
        buf[2 * a : 2 * a + FRAME_BYTES] = frame
        start = self._in_n
        self._in_n += _FRAME
        self._since_search += 1
        # Both need a few frames of the bot since the last search or bound (`_search_due`: at
        # least RETRY_FRAMES, and `_search_gate` frames since the last search); the bound only
        # while no path is known (with one, `_bound_active` is `_search_active`: the clause
        # would ask `_search_due` every frame past the gate). Most frames skip the calls.
        if self._in_n >= w and (
            (self._search_active >= RETRY_FRAMES and self._since_search >= self._search_gate)
            or (self._offset is None and self._bound_active >= self._search_frames)
        ):
            if self._search_due():
                self._search()
            elif self._offset is None and self._bound_active >= self._search_frames:
                # The level gate judges: its bound is measured on every window of the bot's speech
                # (about 30 us), not backed off like the search: one window where the line was
                # muted must not set it for long.
                window, sent, _ = self._windows()
                self._bound(window, sent)
        offset = self._offset
        self._expected_residual = -1.0
        if offset is None:
            return frame
        r0 = start + offset
        if r0 < self._out_n - self._ref_len + _FRAME or r0 + _FRAME > self._out_n:
            return self._misaligned(frame)  # its reference is not in the ring: frames were lost
        n = self._ref_len
        b = r0 % n
        ref = self._ref32
        if b + _FRAME <= n:
            np.copyto(ref, self._ref[b : b + _FRAME])
        else:  # it straddles the ring's end
            k = n - b
            ref[:k] = self._ref[b:]
            ref[k:] = self._ref[: _FRAME - k]
        e_ref = float(np.dot(ref, ref))
        if e_ref < ACTIVE_ENERGY:
            self._expected_residual = 0.0  # nothing of the bot's at that lag: no echo to fear
            return frame
        tmp, res = self._tmp, self._res
        g = self._path_gain
        np.multiply(ref, np.float32(g), out=tmp)
        seg = self._seg  # this frame, as float32
        np.copyto(seg, self._in[a : a + _FRAME])
        np.subtract(seg, tmp, out=res)
        e_in = float(np.dot(seg, seg))
        e_res = float(np.dot(res, res))
        if e_res > _SLIP_RATIO * e_in:
            # Subtracting made it louder: the reference is not this frame's echo (the pacer
            # skipped frames after a stall, or inbound audio was lost, and the counts slipped;
            # a wrong reference about doubles the echo's energy, double talk alone never does).
            return self._misaligned(frame)
        if self._slipped:
            self._slipped -= 1
        self._e_in = self._e_in * _ERLE_DECAY + e_in
        self._e_res = self._e_res * _ERLE_DECAY + e_res
        # The echo the subtraction leaves: the reference's level times the gain, less the ERLE
        # measured on the search window (not the running one: the caller talking lowers that).
        self._expected_residual = math.sqrt(e_ref / _FRAME) * g * self._residual
        # Clipped to s16 for the cast. Two ufuncs, the same values as np.clip (NaN, inf and -0.0
        # included), whose Python-level wrapper cost more than both together (3.2 vs 2.0 us).
        np.maximum(res, -32768.0, out=res)
        np.minimum(res, 32767.0, out=res)
        self._res16[:] = res
        return self._res_bytes

    def _misaligned(self, frame: bytes) -> bytes:
        """The raw frame, for a frame the known path does not fit; once such frames outnumber
        those it fits by `_SLIPPED_FRAMES`, the path is dropped (the level gate judges, and the
        search runs again)."""
        self._slipped += 1
        if self._slipped >= _SLIPPED_FRAMES:
            self._slipped = 0
            self._offset = None
            self._residual = 1.0
            self._since_search = 0
            self._gate_search()
            self._e_in = self._e_res = 0.0
        return frame

    def may_be_echo(self, level: int) -> bool:
        """Whether an inbound frame of RMS `level` may be echo while no path is known, by the level
        gate (`LevelGate.may_be_echo`: the worst case, or what was measured of the echo); False
        with a path known (`is_echo` on the residual is the test). Does not feed the level
        gate's search."""
        if not self.enabled or self._expected_residual >= 0.0:
            return False
        return self._level.may_be_echo(level)

    def is_echo(self, level: int) -> bool:
        """Whether an inbound frame of RMS `level` (s16) may be nothing but the bot's echo.

        After `cancel()` returned a residual, `level` is the residual's and is judged against the
        echo the subtraction leaves. Else the level gate: also feeds its delay search. False when
        the gate is off or the bot was quiet.
        """
        if not self.enabled:
            return False
        expected_residual = self._expected_residual
        if expected_residual >= 0.0:
            return level <= expected_residual * _RESIDUAL_MARGIN
        return self._level.is_echo(level)


# Subtraction: ERLE's memory (0.96 per frame of the bot heard: about 0.5 s).
_ERLE_DECAY = 0.96
# A residual frame up to this many times the echo the subtraction leaves (6 dB) may be echo.
_RESIDUAL_MARGIN = 2.0
# Frames in a row that the known path makes louder (or whose reference left the ring) after which
# it is dropped: 100 ms, longer than a double-talk frame's chance excess, shorter than a word.
_SLIPPED_FRAMES = 5
_SLIP_RATIO = 1.5  # residual energy over the frame's (+1.8 dB)
