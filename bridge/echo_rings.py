"""The echo gate's sample rings: what the bot sent and what came in, as s16 bytes.

`EchoRings` is the base of `bridge.echo_gate.EchoGate` (through `bridge.echo_search`): the rings
are its own slots, so the per-frame writes in `EchoGate.sent()` / `cancel()` read them with no
extra object in between. Both rings are bytearrays written by slice assignment through a
memoryview (no numpy call per frame; a bytearray's own slice assignment copies a `bytes` value
into a temporary bytearray first) and read through int16 views, as float64 by the search
(`_windows`, `_window`).
Streams are aligned by sample count: inbound sample i is the echo of sent sample i + offset.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from bridge.echo_path import FRAME
from orchestrator.audio import SAMPLE_RATE

__all__ = ["EchoRings", "I16", "PER_MS"]

PER_MS = SAMPLE_RATE // 1000  # samples per ms (8)
I16 = npt.NDArray[np.int16]


class EchoRings:
    """The sent ring (a search window, the longest delay and slack) and the inbound ring (the
    last `search_ms`), with the sample counts that align them."""

    __slots__ = (
        "_in",
        "_in_b",
        "_in_n",
        "_out_n",
        "_ref",
        "_ref_b",
        "_ref_len",
        "_search_len",
        "_zero_run",
    )

    def __init__(self, search_ms: int, max_delay_ms: int) -> None:
        w = self._search_len = search_ms * PER_MS
        # Sent audio: a window plus the longest delay plus slack, as s16 bytes read through the
        # int16 view `_ref`; each sample once (a frame's reference straddles the ring's end in
        # about 3 % of frames: those are read in two parts).
        ref_len = self._ref_len = w + max_delay_ms * PER_MS + 4 * FRAME
        ref_b = bytearray(ref_len * 2)
        self._ref_b = memoryview(ref_b)  # written per frame (same-length slices only)
        self._ref: I16 = np.frombuffer(ref_b, dtype=np.int16)
        # The inbound line: the last `search_ms`, once (frames never straddle its end: it is a
        # whole number of frames; the rare window read joins the two parts).
        in_b = bytearray(w * 2)
        self._in_b = memoryview(in_b)
        self._in: I16 = np.frombuffer(in_b, dtype=np.int16)
        self._zero_run = ref_len  # silent samples sent in a row (>= ref_len: the ring is all zeros)
        self._out_n = 0  # samples sent so far
        self._in_n = 0  # samples received so far

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

    def _windows(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], int]:
        """The last `search_ms` inbound (oldest first), the sent audio that can have produced it
        (sent samples [lo, in_n) at the streams' nominal alignment: both sides' counts move
        together in real time; `max_delay_ms` more than the window), and lo."""
        w = self._search_len
        d = self._ref_len - w - 4 * FRAME  # the longest delay, samples
        a = self._in_n % w
        x = np.empty(w)
        x[: w - a] = self._in[a:]  # oldest first: the ring from the write position on, then its start
        x[w - a :] = self._in[:a]
        lo = self._out_n - w - d
        return x, self._window(lo, w + d), lo

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
