"""The echo path between what the bot sent and what came back: stateless search math.

Used by `bridge.echo_gate.EchoGate` once per search (not per frame): `gcc_phat_lag` finds the
delay of the inbound window in the sent audio by generalised cross-correlation with phase
transform weighting (Knapp and Carter, 1976: the spectrum is whitened so speech's strong low
frequencies do not smear the peak), `fit_path` the echo gain and how much subtracting it removes
(ERLE, dB). Arrays are float64 samples at 8 kHz. Imports nothing of ours but the frame size.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from orchestrator.audio import FRAME_BYTES, SAMPLE_WIDTH

__all__ = [
    "ACTIVE_ENERGY",
    "ACTIVE_RMS",
    "FIT_DB",
    "FRAME",
    "MIN_FIT_FRAMES",
    "fit_path",
    "gain_bound",
    "gcc_phat_lag",
]

FRAME = FRAME_BYTES // SAMPLE_WIDTH  # samples per 20 ms frame: 160
# Outbound RMS above which the bot counts as talking (about -50 dBFS), and the same as the
# energy of one frame.
ACTIVE_RMS = 100
ACTIVE_ENERGY = float(ACTIVE_RMS * ACTIVE_RMS * FRAME)
# Frames of the bot heard that a path's fit needs in the window; the whole window's ERLE above
# which the least-squares fit stands (else the per-frame medians are tried), dB.
MIN_FIT_FRAMES = 8
FIT_DB = 10.0


def gcc_phat_lag(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], max_lag: int) -> int:
    """The lag m in 0..`max_lag` (samples) at which `y[m : m + len(x)]` best matches `x`.

    `x`: the inbound window; `y`: the sent audio that can have produced it, `len(x) + max_lag`
    samples, oldest first.
    """
    w = len(x)
    nfft = 1 << (2 * w + max_lag - 1).bit_length()
    spec = np.conj(np.fft.rfft(x, nfft)) * np.fft.rfft(y, nfft)
    spec /= np.abs(spec) + 1e-9
    corr = np.fft.irfft(spec, nfft)[: max_lag + 1]  # corr[m] = sum x[t] y[t + m] (whitened)
    return int(np.argmax(corr))


def fit_path(
    x: npt.NDArray[np.float64], z: npt.NDArray[np.float64], gain: float | None = None
) -> tuple[float, float] | None:
    """The echo path's gain and ERLE (dB) of `x` less gain x `z`, over the 20 ms frames where the
    reference `z` is active: least squares and energy over all of them, or if that cancels less
    than `FIT_DB`, the median of the per-frame gains and ERLEs (robust to the caller talking over
    part of the window). None: too few such frames. `gain` given: only the ERLE at that gain."""
    k = len(x) // FRAME
    xf = x[: k * FRAME].reshape(k, FRAME)
    zf = z[: k * FRAME].reshape(k, FRAME)
    ez = np.einsum("ij,ij->i", zf, zf)
    active = ez > ACTIVE_ENERGY
    if int(active.sum()) < MIN_FIT_FRAMES:
        return None
    xf, zf, ez = xf[active], zf[active], ez[active]
    xz = np.einsum("ij,ij->i", xf, zf)
    ex = np.einsum("ij,ij->i", xf, xf)
    g = float(xz.sum() / ez.sum()) if gain is None else gain
    er = np.einsum("ij,ij->i", xf - g * zf, xf - g * zf)
    whole = 10.0 * math.log10(max(float(ex.sum()), 1.0) / max(float(er.sum()), 1.0))
    if whole >= FIT_DB:
        return g, whole
    if gain is None:
        g = float(np.median(xz / ez))
        er = np.einsum("ij,ij->i", xf - g * zf, xf - g * zf)
    erle = 10.0 * np.log10(np.maximum(ex, 1.0) / np.maximum(er, 1.0))
    return g, max(whole, float(np.median(erle)))


# Below this inbound RMS a window says nothing of the echo: a muted line, an echo suppressor, no
# media yet (its bound would be ~0 and hide nothing, letting the bot's echo through later).
_QUIET_RMS = 16.0


def gain_bound(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float:
    """The most the echo path's gain can be, whatever its delay: the inbound window `x` holds the
    echo of `y[m : m + len(x)]` for some m in 0..len(y) - len(x) (plus noise and the caller), so
    its energy bounds the echo's, against the quietest such stretch of `y`. inf when `y` has a
    stretch with no audio or `x` is near silence (no information). Both are s16 samples as
    float64; `y`'s must be whole numbers (they are summed as integers).

    Wrong (too low) only if the echo's delay is beyond `y` (longer than `max_delay_ms`) or the
    streams' sample counts slipped (lost frames), as the search itself.
    """
    w = len(x)
    ex = float(np.dot(x, x))
    if ex < _QUIET_RMS * _QUIET_RMS * w:
        return math.inf
    # Every stretch's energy from one running sum, in int64: exact (the float64 sum was too: sums
    # of s16 squares stay below 2**53) and about 5x faster (no float add's latency chain).
    yi = y.astype(np.int64)
    c = np.cumsum(yi * yi)
    stretch = c[w - 1 :].copy()  # stretch j ends at sample j + w - 1
    stretch[1:] -= c[: len(c) - w]
    quietest = float(stretch.min())
    if quietest <= ACTIVE_ENERGY * (w // FRAME):
        return math.inf
    return math.sqrt(ex / quietest)
