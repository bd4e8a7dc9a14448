"""The one resampler (orchestrator/audio.py): out-of-band tones are filtered, in-band tones kept,
chunked streaming equals one-shot conversion."""

from __future__ import annotations

import math
import random
import struct

import pytest

from orchestrator.audio import Resampler, resample


def tone(freq_hz: float, rate: int, seconds: float = 1.0, amplitude: int = 16000) -> bytes:
    n = int(rate * seconds)
    return struct.pack(
        f"<{n}h", *(int(amplitude * math.sin(2 * math.pi * freq_hz * i / rate)) for i in range(n))
    )


def samples(pcm: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(pcm) // 2}h", pcm)


def level_db(out: bytes, ref: bytes, *, skip: int = 400) -> float:
    """Level of `out` relative to `ref`, dB (RMS, edges skipped: the filter's ramp-in)."""

    def rms(x: tuple[int, ...]) -> float:
        body = x[skip:-skip]
        return math.sqrt(sum(v * v for v in body) / len(body))

    return 20 * math.log10(max(rms(samples(out)), 1e-3) / rms(samples(ref)))


def dominant_hz(pcm: bytes, rate: int, candidates: list[float]) -> float:
    """Which of `candidates` carries the most energy (a Goertzel-style projection)."""
    x = samples(pcm)

    def power(f: float) -> float:
        c = sum(v * math.cos(2 * math.pi * f * i / rate) for i, v in enumerate(x))
        s = sum(v * math.sin(2 * math.pi * f * i / rate) for i, v in enumerate(x))
        return c * c + s * s

    return max(candidates, key=power)


@pytest.mark.parametrize("freq", [4500.0, 6000.0, 7500.0])
def test_out_of_band_tones_are_attenuated_by_at_least_40_db(freq: float) -> None:
    # Before soxr (audioop.ratecv, no low-pass) a 6 kHz tone came out as 2 kHz at full level.
    src = tone(freq, 16000)
    out = resample(src, 16000, 8000)
    assert len(out) == len(src) // 2
    assert level_db(out, src) <= -40.0
    streamed = Resampler()
    chunked = b"".join(streamed.convert(src[i : i + 640], 16000) for i in range(0, len(src), 640))
    chunked += streamed.flush()
    assert level_db(chunked, src) <= -40.0


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0, 3400.0])
def test_in_band_tones_keep_their_level_and_frequency(freq: float) -> None:
    src = tone(freq, 16000)
    out = resample(src, 16000, 8000)
    assert abs(level_db(out, src)) <= 0.5
    assert dominant_hz(out[:3200], 8000, [freq, freq * 0.7, 2000.0, 500.0]) == freq


def test_espeak_rate_22050_is_filtered_too() -> None:
    src = tone(5000.0, 22050)
    assert level_db(resample(src, 22050, 8000), src) <= -40.0
    speech_band = tone(1000.0, 22050)
    assert abs(level_db(resample(speech_band, 22050, 8000), speech_band)) <= 0.5


def test_chunked_streaming_equals_one_shot_within_two_lsb() -> None:
    rnd = random.Random(3)
    src = tone(440.0, 16000, 2.0)
    src = bytes(a ^ (rnd.getrandbits(4) if i % 2 == 0 else 0) for i, a in enumerate(src))  # some noise
    whole = resample(src, 16000, 8000)
    cuts = sorted({rnd.randrange(0, len(src) // 2) * 2 for _ in range(50)})
    r = Resampler()
    parts = [r.convert(src[a:b], 16000) for a, b in zip([0, *cuts], [*cuts, len(src)], strict=True)]
    chunked = b"".join(parts) + r.flush()
    assert len(chunked) == len(whole)
    diff = max(abs(a - b) for a, b in zip(samples(chunked), samples(whole), strict=True))
    assert diff <= 2


def test_same_rate_passes_through_and_flush_is_empty() -> None:
    r = Resampler()
    pcm = tone(1000.0, 8000, 0.1)
    assert r.convert(pcm, 8000) is pcm
    assert r.flush() == b""
    assert resample(pcm, 8000, 8000) == pcm


def test_reset_drops_the_tail_and_a_rate_change_starts_a_new_stream() -> None:
    r = Resampler()
    r.convert(tone(1000.0, 16000, 0.2), 16000)
    r.reset()
    assert r.flush() == b""
    a = r.convert(tone(1000.0, 16000, 0.5), 16000) + r.flush()
    b = r.convert(tone(1000.0, 16000, 0.5), 16000) + r.flush()
    assert a == b and len(a) == 8000  # 0.5 s at 8 kHz, 2 bytes a sample


@pytest.mark.parametrize("bad", [b"\x00", b"\x00" * 3])
def test_odd_bytes_and_bad_rates_are_refused(bad: bytes) -> None:
    with pytest.raises(ValueError, match="odd number of bytes"):
        Resampler().convert(bad, 16000)
    with pytest.raises(ValueError, match="odd number of bytes"):
        resample(bad, 16000, 8000)
    with pytest.raises(ValueError, match="must be positive"):
        Resampler().convert(b"\x00\x00", 0)
    with pytest.raises(ValueError, match="must be positive"):
        Resampler(0)
