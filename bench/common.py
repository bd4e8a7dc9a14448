"""Shared benchmark helpers: speech clips, percentiles, a fixed-bin histogram, plain-text tables.

The recognizer the bridge-side benchmarks push inbound audio into is `testkit.fakes.BenchRecognizer`
(one set of fakes for tests, bench and the demo)."""

from __future__ import annotations

import gc
import math
import time
import wave
from collections.abc import Sequence
from pathlib import Path

from orchestrator.adapters.tts.espeak import espeak_pcm_sync
from orchestrator.audio import FRAME_BYTES, SAMPLE_RATE

CALLER_PHRASE = "Здравствуйте, я хотел бы узнать, сколько стоит уборка квартиры в субботу"
BOT_PHRASE = "Добрый день! Стоимость уборки квартиры сорок пять метров составит шесть тысяч рублей"


def make_speech_wav(path: Path, text: str, *, trailing_silence_ms: int = 0) -> Path:
    """Write `text` spoken by espeak-ng (Russian) as an 8 kHz mono s16 WAV, padded to whole frames.

    `trailing_silence_ms` appends silence, so a looping clip has pauses as a real caller does.
    Raises TTSConnectionError when espeak-ng is missing (install it with `make system-deps`).
    """
    pcm = espeak_pcm_sync(text)
    pcm += bytes(trailing_silence_ms * SAMPLE_RATE * 2 // 1000)
    pcm = pcm[: len(pcm) // FRAME_BYTES * FRAME_BYTES]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm)
    return path


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    k = (len(data) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


class Histogram:
    """Counts of durations in fixed bins (0.1 ms up to 250 ms, then one overflow bin).

    Fixed bins keep recording O(1) with no allocation per sample, and histograms from many callers
    merge by adding counts.
    """

    BIN_S = 0.0001
    BINS = 2500

    __slots__ = ("counts", "max_s", "n")

    def __init__(self) -> None:
        self.counts = [0] * (self.BINS + 1)
        self.n = 0
        self.max_s = 0.0

    def add(self, seconds: float) -> None:
        """Record one duration."""
        i = int(seconds / self.BIN_S)
        self.counts[i if 0 <= i < self.BINS else self.BINS if i > 0 else 0] += 1
        self.n += 1
        if seconds > self.max_s:
            self.max_s = seconds

    def merge(self, other: Histogram) -> None:
        """Add `other`'s counts to this one."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.n += other.n
        self.max_s = max(self.max_s, other.max_s)

    def percentile(self, q: float) -> float:
        """Upper edge of the bin holding the q-th percentile, in seconds (the max if it overflowed)."""
        if self.n == 0:
            return math.nan
        rank = math.ceil(self.n * q / 100) or 1
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return self.max_s if i == self.BINS else (i + 1) * self.BIN_S
        return self.max_s

    def below(self, seconds: float) -> int:
        """How many samples were shorter than `seconds`."""
        return sum(self.counts[: int(seconds / self.BIN_S)])


def fmt(value: object, digits: int = 1) -> str:
    """A table cell: floats rounded, NaN and None as '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, title: str = "") -> str:
    """A plain-text table under a title line: the first column left-aligned, the rest right."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [title] if title else []

    def line(row: Sequence[str]) -> str:
        # The first column names the row: left-aligned; numbers right-aligned.
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    lines.append(line(headers))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(line(r) for r in cells)
    return "\n".join(lines)


class GcTimer:
    """Times the garbage collector's pauses (gc.callbacks) until `close()`."""

    def __init__(self) -> None:
        self.full = 0
        self.max_s = 0.0
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.max_s = max(self.max_s, time.perf_counter() - self._started)
        if info["generation"] == 2:
            self.full += 1

    def close(self) -> None:
        """Stop timing."""
        gc.callbacks.remove(self._on_gc)
