"""The echo gate's sample rings against a plain numpy record of every sample sent and received.

The rings are bytearrays written by slice copies, each sample once, with nothing written for
silence once the sent ring holds only zeros; a wrong index, a write or read that misses the part
past the ring's end, or a skipped write that shifts positions would hand the search or the
subtraction the wrong samples. Random streams: bursts, all-zero frames, long silences, frames straddling the ring's end.
"""

from __future__ import annotations

import audioop
import math

import numpy as np
import pytest

from bridge.echo_gate import EchoGate, EchoSettings
from bridge.echo_path import ACTIVE_ENERGY, gain_bound
from orchestrator.audio import FRAME_BYTES

_FRAME = FRAME_BYTES // 2


def _expected_ring(sent: np.ndarray, n: int) -> np.ndarray:
    """Ring position p holds the last sample j < len(sent) with j % n == p (zeros if none)."""
    ring = np.zeros(n, dtype=np.int16)
    tail = sent[-n:]
    start = len(sent) - len(tail)
    ring[(start + np.arange(len(tail))) % n] = tail
    return ring


def _expected_window(sent: np.ndarray, lo: int, length: int, n: int) -> np.ndarray:
    """Sent samples [lo, lo + length), zeros where not (or no longer) in a ring of n."""
    out = np.zeros(length)
    first, last = max(lo, len(sent) - n, 0), min(lo + length, len(sent))
    if last > first:
        out[first - lo : last - lo] = sent[first:last]
    return out


# max_delay_ms 250: a ring of 5,040 samples, not whole frames (31.5), so frames straddle its end.
@pytest.mark.parametrize("max_delay_ms", [250, 300, 37])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_rings_hold_what_was_sent_and_received(max_delay_ms: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    gate = EchoGate(EchoSettings(max_delay_ms=max_delay_ms, search_ms=200))
    n, w = gate._ref_len, gate._search_len
    sent: list[np.ndarray] = []
    received: list[np.ndarray] = []
    silent = np.zeros(_FRAME, dtype=np.int16)
    for _ in range(300):
        kind = rng.integers(5)
        if kind == 0:  # a burst of the bot
            for _ in range(rng.integers(1, 40)):
                x = (rng.standard_normal(_FRAME) * rng.choice([30, 3000, 20000])).clip(-32768, 32767)
                frame = x.astype(np.int16)
                gate.sent(frame.tobytes())
                sent.append(frame)
        elif kind == 1:  # silence, often longer than the ring (nothing written then)
            for _ in range(rng.integers(1, 3 * n // _FRAME)):
                gate.sent_silence()
                sent.append(silent)
        elif kind == 2:  # an all-zero frame sent as audio
            gate.sent(bytes(FRAME_BYTES))
            sent.append(silent)
        else:  # the inbound line
            frame = (rng.standard_normal(_FRAME) * 1000).astype(np.int16)
            gate.cancel(frame.tobytes())
            received.append(frame)
        all_sent = np.concatenate(sent) if sent else np.zeros(0, dtype=np.int16)
        assert gate._out_n == len(all_sent)
        ring = _expected_ring(all_sent, n)
        np.testing.assert_array_equal(gate._ref, ring)  # every position
        lo = int(rng.integers(-2 * n, len(all_sent) + 1))
        length = int(rng.integers(1, n + 1))
        np.testing.assert_array_equal(gate._window(lo, length), _expected_window(all_sent, lo, length, n))
        if received:
            inbound = np.concatenate(received)[-w:]
            x = gate._windows()[0]
            np.testing.assert_array_equal(x[w - len(inbound) :], inbound)
            assert not x[: w - len(inbound)].any()


def _bot(frames: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = frames * _FRAME
    env = 1.0 + 0.8 * np.sin(np.arange(n) * 2 * np.pi * 4 / 8000)
    return np.clip(rng.standard_normal(n) * 2500 * env, -32768, 32767).astype(np.int16)


@pytest.mark.parametrize("max_delay_ms", [250, 300])
def test_the_path_still_cancels_after_a_silence_longer_than_the_ring(max_delay_ms: int) -> None:
    # Bot, then 3 s of silence (nothing written to the ring after its first ~0.6 s), then the bot
    # again: the echo's reference must be at the same lag, so the residual is frame-exact at once.
    delay, gain = 437, 0.25
    bot = np.concatenate([_bot(60, 3), np.zeros(150 * _FRAME, np.int16), _bot(60, 4)])
    echo = np.zeros(len(bot))
    echo[delay:] = bot[: len(bot) - delay] * gain
    back = np.round(echo).astype(np.int16).tobytes()
    gate = EchoGate(EchoSettings(max_delay_ms=max_delay_ms, search_ms=300))
    leftovers = []
    for i in range(len(bot) // _FRAME):
        out = bot[i * _FRAME : (i + 1) * _FRAME]
        if out.any():
            gate.sent(out.tobytes())
        else:
            gate.sent_silence()
        inbound = back[i * FRAME_BYTES : (i + 1) * FRAME_BYTES]
        res = gate.cancel(inbound)
        if i >= 213:  # the second burst's echo, one frame in
            leftovers.append(audioop.rms(res, 2) if res is not inbound else -1)
    assert gate.paths == 1 and gate.delay_samples == delay
    assert max(leftovers) <= 1  # a residual (not the raw frame), nothing of the echo left
    assert gate.searches == 1


@pytest.mark.parametrize("max_delay_ms", [250, 37])
@pytest.mark.parametrize("seed", [4, 5])
def test_sent_frames_of_any_length_wrap_the_ring_sample_exact(max_delay_ms: int, seed: int) -> None:
    # `sent` writes whole 20 ms frames inline and hands other lengths to `_keep`; random lengths
    # (1..600 samples) put the ring's end at every offset inside a frame, including one sample
    # before the end (a wrap of one sample).
    rng = np.random.default_rng(seed)
    gate = EchoGate(EchoSettings(max_delay_ms=max_delay_ms, search_ms=200))
    n = gate._ref_len
    sent: list[np.ndarray] = []
    for _ in range(600):
        k = int(rng.choice([_FRAME, int(rng.integers(1, 601))]))
        frame = (rng.standard_normal(k) * 3000).astype(np.int16)
        gate.sent(frame.tobytes())
        sent.append(frame)
        np.testing.assert_array_equal(gate._ref, _expected_ring(np.concatenate(sent), n))
    # A frame one sample longer than the room left: its last sample goes to the ring's start.
    k = n - gate._out_n % n + 1
    frame = (rng.standard_normal(k) * 3000).astype(np.int16)
    gate.sent(frame.tobytes())
    sent.append(frame)
    np.testing.assert_array_equal(gate._ref, _expected_ring(np.concatenate(sent), n))


@pytest.mark.parametrize("max_delay_ms", [20, 250, 300])
def test_bot_audible_is_true_while_the_echo_window_holds_a_sent_frame(max_delay_ms: int) -> None:
    # After each outbound frame: audible iff one of the last `ceil(max_delay_ms / 20) + 2` frames
    # sent (the level gate's window) had audio; an all-zero frame sent as audio counts as silence.
    rng = np.random.default_rng(max_delay_ms)
    gate = EchoGate(EchoSettings(max_delay_ms=max_delay_ms))
    window = -(-max_delay_ms // 20) + 2
    loud: list[bool] = []
    last = 0
    flips, before = 0, False
    for _ in range(2000):
        kind = int(rng.integers(3)) if not loud or rng.random() < 0.05 else last  # runs of a few frames
        if kind == 0:
            gate.sent((rng.standard_normal(_FRAME) * 2000).astype(np.int16).tobytes())
        elif kind == 1:
            gate.sent_silence()
        else:
            gate.sent(bytes(FRAME_BYTES))
        loud.append(kind == 0)
        last = kind
        expected = any(loud[-window:])
        assert gate.bot_audible is expected
        assert gate._level.bot_audible is expected
        flips, before = flips + (expected != before), expected
    assert flips > 20  # it went on and off many times


@pytest.mark.parametrize("seed", range(6))
def test_gain_bound_takes_the_quietest_stretch_of_every_start(seed: int) -> None:
    # Against every stretch's energy summed directly; a quiet stretch is put at several starts, the
    # first ones included (the running sum's first stretch has nothing to subtract).
    rng = np.random.default_rng(seed)
    w = 160 * int(rng.integers(1, 4))
    x = np.round(rng.standard_normal(w) * 1500)
    y = np.round(rng.standard_normal(w + int(rng.integers(1, 400))) * 3000)
    for start in (0, 1, 2, len(y) - w, int(rng.integers(0, len(y) - w + 1))):
        z = y.copy()
        z[start : start + w] = np.round(z[start : start + w] * 0.05)  # quiet, s16 values (sums exact)
        stretches = [float(np.dot(z[j : j + w], z[j : j + w])) for j in range(len(z) - w + 1)]
        assert min(stretches) > ACTIVE_ENERGY * (w // 160)  # not the "no information" case
        assert gain_bound(x, z) == np.sqrt(float(np.dot(x, x)) / min(stretches))


@pytest.mark.parametrize("cancel", [True, False])
@pytest.mark.parametrize("seed", [4, 5])
def test_a_silent_frame_into_silent_rings_is_skipped_without_a_trace(cancel: bool, seed: int) -> None:
    # `sent_silence` skips the rings once both hold only silence; against a gate told of the same
    # silence as audio frames of zeros (never skipped), every residual and verdict is the same.
    # Caught: a skip that does not count the frame's samples (the path's delay shifts), and one
    # taken while the level gate still holds the bot (with cancel off, 17 frames < 49).
    rng = np.random.default_rng(seed)
    settings = EchoSettings(cancel=cancel)
    skipping, plain = EchoGate(settings), EchoGate(settings)
    history = np.zeros(800, dtype=np.int16)  # the bot's recent samples, for a 60 ms echo
    for _ in range(40):
        speaking = rng.integers(2) == 0
        for _ in range(rng.integers(5, 70)):
            if speaking:
                frame = (rng.standard_normal(_FRAME) * 3000).astype(np.int16)
                skipping.sent(frame.tobytes())
                plain.sent(frame.tobytes())
            else:
                frame = np.zeros(_FRAME, dtype=np.int16)
                skipping.sent_silence()
                plain.sent(frame.tobytes())
            history = np.concatenate((history[_FRAME:], frame))
            noise = rng.standard_normal(_FRAME) * 20
            echo = (history[:_FRAME].astype(np.float64) * 0.2 + noise).astype(np.int16)
            a, b = skipping.cancel(echo.tobytes()), plain.cancel(echo.tobytes())
            assert bytes(a) == bytes(b)
            level = audioop.rms(a, 2)
            assert skipping.bot_audible is plain.bot_audible
            assert skipping.is_echo(level) is plain.is_echo(level)
            assert skipping.may_be_echo(level) is plain.may_be_echo(level)
    assert skipping.delay_samples == plain.delay_samples
    assert not cancel or skipping.delay_samples is not None  # the path was found and used


def test_a_residual_past_full_scale_is_clipped_to_s16() -> None:
    # The residual is the frame less the scaled reference in float32, clipped to s16 before the
    # cast (a float past the range wraps). A full-scale caller against the echo pushes it past
    # 32767 and below -32768. Caught: a bound off by a little (32000), either bound left out.
    delay, gain = 437, 0.25
    bot = _bot(120, 6)
    echo = np.zeros(len(bot))
    echo[delay:] = bot[: len(bot) - delay] * gain
    back = np.round(echo)
    gate = EchoGate(EchoSettings())
    clipped = 0
    for i in range(len(bot) // _FRAME):
        gate.sent(bot[i * _FRAME : (i + 1) * _FRAME].tobytes())
        frame = back[i * _FRAME : (i + 1) * _FRAME]
        if i >= 100:  # the path is known: a caller at full scale against the echo's sign
            frame = frame - np.sign(frame) * 40000.0
        inbound = np.clip(frame, -32768, 32767).astype(np.int16)
        raw = inbound.tobytes()
        res = gate.cancel(raw)
        if i < 100:
            continue
        assert res is not raw and gate.delay_samples == delay  # a residual
        ref = bot[i * _FRAME - delay : (i + 1) * _FRAME - delay].astype(np.float32)
        exact = inbound.astype(np.float32) - ref * np.float32(gate.path_gain)
        assert exact.max() > 32800 and exact.min() < -32800  # past full scale both ways
        expected = np.minimum(np.maximum(exact, -32768.0), 32767.0).astype(np.int16)
        np.testing.assert_array_equal(np.frombuffer(res, dtype=np.int16), expected)
        clipped += 1
    assert clipped == 20


def test_gain_bound_is_exact_on_the_longest_window_at_full_scale() -> None:
    # The running sum is int64: the longest `y` the settings allow (search_ms 4000 + max_delay_ms
    # 1000: 40,000 samples) at full scale sums to about 4.3e13, far inside it. Against the
    # stretches summed as Python ints (no bound at all). Caught: the squares in int16, the running
    # sum in int32 (it wraps past two full-scale samples) or in float32 (inexact past 2**24).
    rng = np.random.default_rng(11)
    w, d = 4000 * 8, 1000 * 8
    y = rng.integers(-32768, 32768, w + d).astype(np.float64)
    y[: w // 2] = -32768.0  # the loudest stretches sum to 32,000 x 2**30
    x = np.round(y[d // 2 : d // 2 + w] * 0.25)
    squares = [int(v) * int(v) for v in y]
    total = sum(squares[:w])
    least = total
    for j in range(w, len(squares)):
        total += squares[j] - squares[j - w]
        least = min(least, total)
    assert least > 2**53 // 1024  # well past float32's and int32's exact range
    assert gain_bound(x, y) == math.sqrt(float(np.dot(x, x)) / least)
