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
copy into the ring (two where it wraps; none for silence once the ring holds nothing else). The rings keep the s16
samples as they came (bytearrays, written by slice assignment: no numpy call per frame); the
search and the subtraction read them through int16 views, as float64 / float32.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
import numpy.typing as npt
import pydantic.dataclasses
from pydantic import ConfigDict, Field

from bridge.echo_level import LevelGate
from bridge.echo_path import ACTIVE_ENERGY, ACTIVE_RMS, FRAME, fit_path, gain_bound, gcc_phat_lag
from orchestrator.audio import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, SAMPLE_WIDTH, audioop_rms

__all__ = ["EchoGate", "EchoSettings"]

_FRAME = FRAME  # samples per 20 ms frame: 160 (bridge.echo_path)
_PER_MS = SAMPLE_RATE // 1000

F32 = npt.NDArray[np.float32]
I16 = npt.NDArray[np.int16]
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


class EchoGate:
    """One call's echo reference: `sent()` per outbound frame, `cancel(frame)` then `is_echo(level)`
    per inbound frame (`is_echo` alone: the level gate only)."""

    __slots__ = (
        "_cancel",
        "_e_in",
        "_e_res",
        "_expected_residual",
        "_fruitless",
        "_in",
        "_in_b",
        "_in_n",
        "_level",
        "_ref_b",
        "_ref32",
        "_seg",
        "_zero_run",
        "_min_erle",
        "_offset",
        "_out_n",
        "_path_gain",
        "_ref",
        "_ref_len",
        "_res",
        "_res_bytes",
        "_res16",
        "_residual",
        "_bound_active",
        "_search_active",
        "_search_frames",
        "_search_len",
        "_since_search",
        "_search_gate",
        "_slipped",
        "_tmp",
        "bot_audible",
        "enabled",
        "paths",
        "searches",
    )

    def __init__(self, settings: EchoSettings | None = None) -> None:
        s = settings or EchoSettings()
        self.enabled = s.enabled
        self._level = LevelGate(s.max_delay_ms, s.min_return_loss_db)

        # --- subtraction ---
        self._cancel = s.enabled and s.cancel
        w = self._search_len = s.search_ms * _PER_MS
        self._search_frames = -(-s.search_ms // FRAME_MS)
        self._min_erle = s.min_erle_db
        # Sent audio: a window plus the longest delay plus slack, as s16 bytes read through the
        # int16 view `_ref`; each sample once (a frame's reference straddles the ring's end in
        # about 3 % of frames: those are read in two parts).
        ref_len = self._ref_len = w + s.max_delay_ms * _PER_MS + 4 * _FRAME
        self._ref_b = bytearray(ref_len * 2)
        self._ref: I16 = np.frombuffer(self._ref_b, dtype=np.int16)
        # The inbound line: the last `search_ms`, once (frames never straddle its end: it is a
        # whole number of frames; the rare window read joins the two parts).
        self._in_b = bytearray(w * 2)
        self._in: I16 = np.frombuffer(self._in_b, dtype=np.int16)
        self._zero_run = ref_len  # silent samples sent in a row (>= ref_len: the ring is all zeros)
        self._out_n = 0  # samples sent so far
        self._in_n = 0  # samples received so far
        self._offset: int | None = None  # inbound sample i is the echo of sent sample i + offset
        self._path_gain = 0.0
        self._residual = 1.0  # echo left after subtraction, as a fraction of the echo (its amplitude)
        self._search_active = 0  # frames of the bot heard since the last search
        self._bound_active = 0  # and since the level gate's bound was last measured
        self._since_search = 0  # inbound frames since then
        self._fruitless = 0  # searches in a row that took no new path (they back off)
        # `_since_search` below which `_search_due` is False whatever else holds (it is asked
        # only from there on: most frames skip the call); kept by `_gate_search`.
        self._search_gate = 0
        self._slipped = 0  # frames the known path did not fit, less those it did (`_misaligned`)
        self._e_in = self._e_res = 0.0  # decaying energies while the bot is heard (ERLE)
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
        self.searches = 0  # delay searches run (for tests and the bench)
        self.paths = 0  # echo paths taken into use (a new one: the VAD re-judges a run)

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

    @property
    def erle_db(self) -> float:
        """Echo return loss enhancement so far, dB (inbound over residual energy while the bot is
        heard); 0.0 before any frame was cancelled."""
        if self._e_res <= 0.0 or self._e_in <= 0.0:
            return 0.0
        return 10.0 * math.log10(self._e_in / self._e_res)

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
        self.bot_audible = self._level.sent(0)
        if self._cancel:
            if self._zero_run >= self._ref_len:
                self._out_n += _FRAME  # the ring holds only zeros already: nothing to write
                return
            self._zero_run += _FRAME
            self._keep(_SILENT_FRAME)

    def _keep(self, frame: bytes | bytearray) -> None:
        """Append `frame` (s16, at most the ring's length) to the sent ring."""
        n, ref = self._ref_len, self._ref_b
        a = self._out_n % n
        k = len(frame) // 2
        self._out_n += k
        first = min(k, n - a)  # the part before the ring wraps
        ref[2 * a : 2 * (a + first)] = frame[: 2 * first]
        if first < k:  # wrapped: the rest at the ring's start
            ref[: 2 * (k - first)] = frame[2 * first : 2 * k]

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
        # least _RETRY_FRAMES, and `_search_gate` frames since the last search); the bound only
        # while no path is known (with one, `_bound_active` is `_search_active`: the clause
        # would ask `_search_due` every frame past the gate). Most frames skip the calls.
        if self._in_n >= w and (
            (self._search_active >= _RETRY_FRAMES and self._since_search >= self._search_gate)
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
        np.clip(res, -32768.0, 32767.0, out=res)
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

    def _search_due(self) -> bool:
        # Searches that found nothing new back off (x2 each, at most x128): a line with no echo
        # (a digital trunk, an echo canceller upstream) would otherwise pay a search (about
        # 1.5 ms) every 0.2 s of the bot's speech for the whole call (2.1 ms per call-second
        # measured; the level gate judges meanwhile).
        backoff = min(self._fruitless, _BACKOFF_DOUBLINGS)
        if self._offset is None:
            # Not found yet: once the window held enough of the bot, then every _RETRY_FRAMES.
            if self.searches == 0:
                return self._search_active >= self._search_frames
            due = _RETRY_FRAMES << backoff
            return self._since_search >= due and self._search_active >= _RETRY_FRAMES
        # A path is known: search again only once it stopped cancelling, with new bot speech.
        due = self._search_frames << backoff
        return (
            self._since_search >= due
            and self._search_active >= self._search_frames
            and self.erle_db < _RESEARCH_ERLE_DB  # last: a log10
        )

    def _gate_search(self) -> None:
        # The least `_since_search` at which `_search_due` can hold, as it reads the state now.
        backoff = min(self._fruitless, _BACKOFF_DOUBLINGS)
        if self._offset is None:
            self._search_gate = 0 if self.searches == 0 else _RETRY_FRAMES << backoff
        else:
            self._search_gate = self._search_frames << backoff

    def _search(self) -> None:
        """Find the echo path on the last `search_ms` (`_find_path`); then when the next may run."""
        self._find_path()
        self._gate_search()

    def _find_path(self) -> None:
        """GCC-PHAT for the lag, least squares for the gain."""
        self.searches += 1
        self._fruitless += 1  # until a path is taken below
        self._search_active = 0
        self._since_search = 0
        w = self._search_len
        x, y, lo = self._windows()
        self._bound(x, y)
        frames = x[: w - w % _FRAME].reshape(-1, _FRAME)
        if float(np.einsum("ij,ij->i", frames, frames).max()) < _LINE_SILENCE_ENERGY * _FRAME:
            # No frame of the line louder than a phone line's silence: echo in it (if any) is too
            # weak to bring a frame to the VAD's energy gate, and the level gate judges meanwhile
            # (the loudest frame, not the window's mean: one loud syllable's echo in a quiet
            # window can pass that gate). Counted as fruitless (the same back-off), without the
            # FFTs (about 0.3 ms).
            return
        d = len(y) - w
        m = gcc_phat_lag(x, y, d)
        fit = fit_path(x, y[m : m + w])
        if fit is None:
            return
        g, erle = fit
        # x[t] (inbound sample in_n - w + t) is the echo of y[t + m] (sent sample lo + t + m).
        offset = lo + m - (self._in_n - w)
        if self._offset is not None:
            # Keep the current path unless the new one cancels this window better.
            cur = self._window(self._in_n - w + self._offset, w)
            cur_fit = fit_path(x, cur, self._path_gain)
            if cur_fit is not None and erle <= cur_fit[1] + _SWITCH_DB:
                return
        if erle < self._min_erle or not 0.0 < g <= 1.0:
            return
        self._offset = offset
        self._path_gain = g
        self._residual = 10.0 ** (-min(erle, 30.0) / 20.0)
        self._fruitless = 0
        self.paths += 1
        self._e_in = 1.0  # the tracker starts at the window's ERLE, with one frame's weight
        self._e_res = 10.0 ** (-erle / 10.0)

    def _windows(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], int]:
        """The last `search_ms` inbound (oldest first), the sent audio that can have produced it
        (sent samples [lo, in_n) at the streams' nominal alignment: both sides' counts move
        together in real time; `max_delay_ms` more than the window), and lo."""
        w = self._search_len
        d = self._ref_len - w - 4 * _FRAME  # the longest delay, samples
        a = self._in_n % w
        x = np.empty(w)
        x[: w - a] = self._in[a:]  # oldest first: the ring from the write position on, then its start
        x[w - a :] = self._in[:a]
        lo = self._out_n - w - d
        return x, self._window(lo, w + d), lo

    def _bound(self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> None:
        self._bound_active = 0
        self._level.bound(gain_bound(x, y))

    def _window(self, lo: int, length: int) -> npt.NDArray[np.float64]:
        """Sent samples [lo, lo + length) as float64; zeros where not (or no longer) in the ring."""
        out = np.zeros(length)
        n = self._ref_len
        first = max(lo, self._out_n - n, 0)
        last = min(lo + length, self._out_n)
        if last > first:
            b = first % n
            m = last - first  # at most n
            k = min(m, n - b)  # the part before the ring's end
            out[first - lo : first - lo + k] = self._ref[b : b + k]
            if k < m:
                out[first - lo + k : last - lo] = self._ref[: m - k]
        return out

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


# The loudest a phone line's silence is, -60 dBFS (RMS 33 of s16; quiet lines -70), as the mean
# energy per sample of a 20 ms frame: with no frame above it, the delay search is not run.
_LINE_SILENCE_ENERGY = 33.0 * 33.0
# Delay searches while no path is found: one per this many frames (0.2 s) of the bot heard.
_RETRY_FRAMES = 10
# Subtraction: ERLE's memory (0.96 per frame of the bot heard: about 0.5 s), the ERLE under which
# the path is searched again, and how much better a new path must cancel to replace it, dB.
_ERLE_DECAY = 0.96
_RESEARCH_ERLE_DB = 3.0
_SWITCH_DB = 3.0
# A residual frame up to this many times the echo the subtraction leaves (6 dB) may be echo.
_RESIDUAL_MARGIN = 2.0
# Frames in a row that the known path makes louder (or whose reference left the ring) after which
# it is dropped: 100 ms, longer than a double-talk frame's chance excess, shorter than a word.
_SLIPPED_FRAMES = 5
_SLIP_RATIO = 1.5  # residual energy over the frame's (+1.8 dB)
# Fruitless searches double the interval to the next one, at most this many times (x128: a
# search per 25.6 s with no path found).
_BACKOFF_DOUBLINGS = 7
