"""The echo path search: when to look for the echo's delay and gain, and the look itself.

`EchoPathSearch` is the base of `bridge.echo_gate.EchoGate`, on the rings of
`bridge.echo_rings.EchoRings`: its state is the gate's own slots, so the per-frame tests in
`EchoGate.cancel()` read it with no extra object in between. Once `search_ms` of the bot's speech
and of the inbound line have been seen, the delay is found by GCC-PHAT (`bridge.echo_path`) over
the last `search_ms`, lags 0..`max_delay_ms`, the gain by least squares at that lag; the path is
taken only if it removes at least `min_erle_db` of the inbound energy over that window. Searches
run again while ERLE stays under `_RESEARCH_ERLE_DB`, at most once per `search_ms` of the bot's
speech, backing off when fruitless; a new path replaces the known one only if it cancels the same
window better by `_SWITCH_DB`. The search (three FFTs of a few thousand points, about 1.5 ms)
runs about once per call.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from bridge.echo_level import LevelGate
from bridge.echo_path import FRAME, fit_path, gain_bound, gcc_phat_lag
from bridge.echo_rings import EchoRings
from orchestrator.audio import FRAME_MS

__all__ = ["EchoPathSearch", "RETRY_FRAMES"]


class EchoPathSearch(EchoRings):
    """The echo path found so far (`_offset`, `_path_gain`, `_residual`), the counters that decide
    when to search again, and the level gate (`_level`) whose bound each search window measures."""

    __slots__ = (
        "_bound_active",
        "_e_in",
        "_e_res",
        "_fruitless",
        "_level",
        "_min_erle",
        "_offset",
        "_path_gain",
        "_residual",
        "_search_active",
        "_search_frames",
        "_search_gate",
        "_since_search",
        "paths",
        "searches",
    )

    def __init__(
        self, *, search_ms: int, max_delay_ms: int, min_erle_db: float, min_return_loss_db: float
    ) -> None:
        super().__init__(search_ms, max_delay_ms)
        self._level = LevelGate(max_delay_ms, min_return_loss_db)
        self._search_frames = -(-search_ms // FRAME_MS)
        self._min_erle = min_erle_db
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
        self._e_in = self._e_res = 0.0  # decaying energies while the bot is heard (ERLE)
        self.searches = 0  # delay searches run (for tests and the bench)
        self.paths = 0  # echo paths taken into use (a new one: the VAD re-judges a run)

    @property
    def erle_db(self) -> float:
        """Echo return loss enhancement so far, dB (inbound over residual energy while the bot is
        heard); 0.0 before any frame was cancelled."""
        if self._e_res <= 0.0 or self._e_in <= 0.0:
            return 0.0
        return 10.0 * math.log10(self._e_in / self._e_res)

    def _search_due(self) -> bool:
        # Searches that found nothing new back off (x2 each, at most x128): a line with no echo
        # (a digital trunk, an echo canceller upstream) would otherwise pay a search (about
        # 1.5 ms) every 0.2 s of the bot's speech for the whole call (2.1 ms per call-second
        # measured; the level gate judges meanwhile).
        backoff = min(self._fruitless, _BACKOFF_DOUBLINGS)
        if self._offset is None:
            # Not found yet: once the window held enough of the bot, then every RETRY_FRAMES.
            if self.searches == 0:
                return self._search_active >= self._search_frames
            due = RETRY_FRAMES << backoff
            return self._since_search >= due and self._search_active >= RETRY_FRAMES
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
            self._search_gate = 0 if self.searches == 0 else RETRY_FRAMES << backoff
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
        frames = x[: w - w % FRAME].reshape(-1, FRAME)
        if float(np.einsum("ij,ij->i", frames, frames).max()) < _LINE_SILENCE_ENERGY * FRAME:
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

    def _bound(self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> None:
        self._bound_active = 0
        self._level.bound(gain_bound(x, y))


# The loudest a phone line's silence is, -60 dBFS (RMS 33 of s16; quiet lines -70), as the mean
# energy per sample of a 20 ms frame: with no frame above it, the delay search is not run.
_LINE_SILENCE_ENERGY = 33.0 * 33.0
# Delay searches while no path is found: one per this many frames (0.2 s) of the bot heard.
RETRY_FRAMES = 10
# The ERLE under which the path is searched again, and how much better a new path must cancel to
# replace it, dB.
_RESEARCH_ERLE_DB = 3.0
_SWITCH_DB = 3.0
# Fruitless searches double the interval to the next one, at most this many times (x128: a
# search per 25.6 s with no path found).
_BACKOFF_DOUBLINGS = 7
