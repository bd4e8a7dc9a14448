"""Audio facts every layer shares: the telephony format, levels, and the one resampler.

The line is 8 kHz signed 16-bit little-endian mono (AudioSocket `slin`), in 20 ms frames of
320 bytes. Resampling is audioop's `ratecv` (stdlib; `audioop-lts` on 3.13+), its filter state
carried across chunks so a stream split anywhere plays without clicks. Imports nothing of ours.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # Python 3.11/3.12 warn that stdlib audioop goes away in 3.13; there `audioop-lts` provides it.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SAMPLE_RATE = 8000
SAMPLE_WIDTH = 2  # signed 16-bit little-endian
FRAME_MS = 20
FRAME_S = FRAME_MS / 1000
FRAME_BYTES = 320  # 8000 Hz x 20 ms x 2 B
SILENCE_FRAME = bytes(FRAME_BYTES)

_RatecvState = tuple[int, tuple[tuple[int, int], ...]]


class Resampler:
    """Converts one stream of s16le mono audio to 8 kHz, keeping filter state between chunks.

    Chunked output equals whole-buffer output, so a stream split anywhere plays without clicks.
    """

    __slots__ = ("_rate", "_state")

    def __init__(self) -> None:
        self._rate = SAMPLE_RATE
        self._state: _RatecvState | None = None

    def convert(self, pcm: bytes, rate: int) -> bytes:
        """Return `pcm` (at `rate` Hz) as 8 kHz; a change of rate starts a new stream.

        Raises ValueError for an odd byte count (checked at 8 kHz too: a stray byte would shift
        every later sample and turn the rest of the call into noise) or a non-positive rate.
        """
        if len(pcm) % SAMPLE_WIDTH:
            raise ValueError(f"odd number of bytes ({len(pcm)}) in 16-bit audio")
        if rate == SAMPLE_RATE:
            return pcm
        if rate <= 0:
            raise ValueError(f"sample rate {rate} Hz: must be positive")
        if rate != self._rate:
            self._rate, self._state = rate, None
        out, self._state = audioop.ratecv(pcm, SAMPLE_WIDTH, 1, rate, SAMPLE_RATE, self._state)
        return bytes(out)

    def reset(self) -> None:
        """Forget the filter state (end of an utterance)."""
        self._rate, self._state = SAMPLE_RATE, None


def rms(pcm: bytes) -> int:
    """Root-mean-square level of s16le audio."""
    return int(audioop.rms(pcm, SAMPLE_WIDTH))


def resample(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """One whole buffer of s16le mono from `src_rate` to `dst_rate` Hz (no state kept)."""
    if src_rate == dst_rate or not pcm:
        return pcm
    out, _ = audioop.ratecv(pcm, SAMPLE_WIDTH, 1, src_rate, dst_rate, None)
    return bytes(out)
