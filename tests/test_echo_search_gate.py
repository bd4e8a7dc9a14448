"""The echo gate's `_search_gate`: `_search_due()` is asked only once `_since_search` reaches it.

The gate is a shortcut, so it must change no decision: each frame it skips must be one where the
ungated `_search_due()` is False, and a gate that never skips (the code before it) must run the
same searches on the same frames, find the same paths and return the same residuals. Random
streams: the bot's speech with and without echo on the line, the path moving mid-call, frames
lost on either side (a path dropped by `_misaligned` resets the gate too).
"""

from __future__ import annotations

import numpy as np
import pytest

from bridge.echo_gate import EchoGate, EchoSettings
from orchestrator.audio import FRAME_BYTES

_FRAME = FRAME_BYTES // 2


class _Checked(EchoGate):
    """An echo gate that asks the ungated `_search_due()` on every frame the gate skips.

    `skipped`: frames where the calls before the gate would have asked (`_search_due` reads no
    state `cancel` changes before it, bar the two counters advanced here for the question).
    """

    skipped: int
    due_when_skipped: int
    asked: int

    def __init__(self, settings: EchoSettings) -> None:
        super().__init__(settings)
        self.skipped = self.due_when_skipped = self.asked = 0

    def cancel(self, frame: bytes) -> bytes | bytearray:
        if self._cancel and len(frame) == FRAME_BYTES:
            in_n, since = self._in_n + _FRAME, self._since_search + 1
            asked_before = in_n >= self._search_len and (
                self._search_active >= 10 or self._bound_active >= self._search_frames
            )
            asked_now = in_n >= self._search_len and (
                (self._search_active >= 10 and since >= self._search_gate)
                or (self._offset is None and self._bound_active >= self._search_frames)
            )
            if asked_before and not asked_now:
                self.skipped += 1
                self._since_search += 1  # as `cancel` will have it when it asks
                self.due_when_skipped += super()._search_due()
                self._since_search -= 1
        return super().cancel(frame)

    def _search_due(self) -> bool:
        self.asked += 1
        return super()._search_due()


class _Ungated(EchoGate):
    """The search's timing before the gate: `_search_due()` asked whenever the bot was heard."""

    def _gate_search(self) -> None:
        self._search_gate = 0


def _bot(rng: np.random.Generator, n: int) -> np.ndarray:
    """Speech-like bursts: harmonics under a syllable envelope, with pauses."""
    t = np.arange(n)
    x = np.zeros(n)
    f0 = rng.uniform(90, 250)
    for h in range(1, 10):
        x += np.sin(2 * np.pi * f0 * h * t / 8000 + rng.uniform(0, 6.3)) / h
    env = np.abs(np.sin(2 * np.pi * rng.uniform(2, 5) * t / 8000)) ** 0.7
    on = np.repeat(rng.random(n // 4000 + 1) < 0.75, 4000)[:n]  # half-second pauses
    return np.clip(x * env * on * rng.choice([2000, 8000]), -32768, 32767)


def _drive(gate: EchoGate, seed: int) -> list[tuple[object, ...]]:
    """One random call through `gate`; per inbound frame what the gate decided."""
    rng = np.random.default_rng(seed)
    frames = 900
    bot = _bot(rng, frames * _FRAME).astype(np.int16)
    gain = float(rng.choice([0.0, 0.05, 0.1, 0.4]))  # 0: a line with no echo
    delay = int(rng.integers(0, 2400))
    lost = float(rng.choice([0.0, 0.01]))
    sent = np.zeros(0)
    trace: list[tuple[object, ...]] = []
    for i in range(frames):
        if rng.random() < 0.003:  # the path moves
            delay = int(rng.integers(0, 2400))
        out = bot[i * _FRAME : (i + 1) * _FRAME]
        if rng.random() >= lost:  # else the frame never went out: the counts slip
            if out.any():
                gate.sent(out.tobytes())
            else:
                gate.sent_silence()
        sent = np.concatenate([sent, out])[-6000:]
        echo = np.zeros(_FRAME)
        end = len(sent) - delay
        if end > 0:
            part = sent[max(0, end - _FRAME) : end]
            echo[_FRAME - len(part) :] = part
        line = np.round(gain * echo + rng.standard_normal(_FRAME) * 60).astype(np.int16)
        if rng.random() < lost:
            continue  # an inbound frame lost
        res = gate.cancel(line.tobytes())
        trace.append((bytes(res), gate.searches, gate.paths, gate.delay_samples, gate.path_gain))
    return trace


@pytest.mark.parametrize("seed", range(12))
def test_the_gate_skips_only_frames_where_no_search_is_due(seed: int) -> None:
    gate = _Checked(EchoSettings(search_ms=int(np.random.default_rng(seed).choice([200, 300, 460]))))
    _drive(gate, seed)
    assert gate.due_when_skipped == 0
    assert gate.searches > 0


def test_the_gate_skips_frames_at_all() -> None:
    # The shortcut is taken (else the test above would pass on a gate that never skips).
    skipped = 0
    for seed in range(12):
        gate = _Checked(EchoSettings())
        _drive(gate, seed)
        skipped += gate.skipped
    assert skipped > 500


@pytest.mark.parametrize("seed", range(12))
def test_the_searches_and_residuals_are_those_without_the_gate(seed: int) -> None:
    settings = EchoSettings(search_ms=int(np.random.default_rng(seed).choice([200, 300, 460])))
    assert _drive(EchoGate(settings), seed) == _drive(_Ungated(settings), seed)


def test_a_line_with_no_echo_asks_about_once_per_search_window() -> None:
    # No echo: each search is fruitless and the next waits longer (x2 each). Before the gate,
    # `_search_due` was asked on every frame of the bot's speech once the bot had been heard for
    # _RETRY_FRAMES; now once per search, plus once per `search_ms` for the level gate's bound.
    rng = np.random.default_rng(5)
    gate = _Checked(EchoSettings(search_ms=300))
    frames = 1500
    for _ in range(frames):
        gate.sent(np.clip(rng.standard_normal(_FRAME) * 3000, -32768, 32767).astype(np.int16).tobytes())
        gate.cancel((rng.standard_normal(_FRAME) * 5).astype(np.int16).tobytes())
    assert gate.paths == 0 and gate.searches == 7  # 0.3 s, then 0.2, 0.4 ... 6.4 s apart
    assert gate.asked <= frames // 15 + gate.searches + 1
    assert gate.due_when_skipped == 0


def test_with_a_path_known_a_fruitless_search_backs_off_to_the_frame() -> None:
    # A path (one frame, -10 dB), then the echo gone under a loud caller: the ERLE falls, the path
    # stays (no search finds a better one, the caller is no misfit) and each fruitless search
    # doubles the wait: 30, 60, 120, 240 frames of the bot after one another, to the frame.
    rng = np.random.default_rng(7)
    gate = _Checked(EchoSettings(search_ms=300))
    at: list[int] = []
    prev = np.zeros(_FRAME)
    for i in range(900):
        out = np.clip(rng.standard_normal(_FRAME) * 3000, -32768, 32767).astype(np.int16)
        gate.sent(out.tobytes())
        if i < 200:
            line = np.round(prev * 0.3 + rng.standard_normal(_FRAME) * 20)
        else:
            line = rng.standard_normal(_FRAME) * 2000
        prev = out.astype(np.float64)
        searches = gate.searches
        gate.cancel(line.astype(np.int16).tobytes())
        if gate.searches > searches:
            at.append(i)
    assert gate.paths == 1 and gate.delay_samples == _FRAME
    assert at[0] < 200 <= at[1]
    assert np.diff(at[1:]).tolist() == [30, 60, 120, 240]
    assert gate.due_when_skipped == 0


def test_with_a_path_known_nothing_is_asked_before_the_gate() -> None:
    # With a path known the level gate's bound is not measured, so only `_search_gate` opens the
    # question: after a fruitless search with a path (backed off x2, x4 ...) `_search_due` is not
    # asked until that many frames of the bot have passed (it once was on every frame from
    # `_search_frames` on, `_bound_active` being `_search_active` then).
    rng = np.random.default_rng(7)
    gate = _Checked(EchoSettings(search_ms=300))
    prev = np.zeros(_FRAME)
    early = 0
    for i in range(900):
        out = np.clip(rng.standard_normal(_FRAME) * 3000, -32768, 32767).astype(np.int16)
        gate.sent(out.tobytes())
        line = (
            np.round(prev * 0.3 + rng.standard_normal(_FRAME) * 20)
            if i < 200
            else rng.standard_normal(_FRAME) * 2000
        )
        prev = out.astype(np.float64)
        asked = gate.asked
        gate.cancel(line.astype(np.int16).tobytes())
        if (
            gate.asked > asked
            and gate._offset is not None
            and gate._since_search
            and gate._since_search < gate._search_gate
        ):
            early += 1
    assert gate.paths == 1 and gate.searches >= 5
    assert early == 0
    assert gate.asked < 900 - 200  # skipped while backed off (the ungated code asked ~all frames)
