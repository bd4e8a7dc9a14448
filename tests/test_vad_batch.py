"""Silero VAD windows of many calls in one ONNX Runtime run (bridge/vad_batch.py), on the real model."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest

import bridge.vad_batch as vad_batch
from bridge import vad_silero
from bridge.vad import VadSettings, VoiceActivityDetector
from bridge.vad_batch import SileroBatch, running_batch
from bridge.vad_silero import SileroClassifier
from tests.test_vad import make_russian_speech, noise, silence
from tests.test_vad_engines import frames

TOL = 1e-5


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_russian_speech(tmp_path_factory.mktemp("speech"))


def calls_audio(speech: bytes, n: int) -> list[list[bytes]]:
    """n calls of different audio, the same number of frames each (speech, noises, silence)."""
    size = len(speech) // 2
    pcms = [speech[:size], speech[size : 2 * size], silence(size // 16) + speech[: size // 2]]
    pcms += [noise(size // 16, amplitude=500 + 700 * k, seed=k) for k in range(n)]
    return [frames(p[:size]) for p in pcms[:n]]


def alone(audio: list[bytes]) -> list[float]:
    cls = SileroClassifier()
    try:
        return [cls.speech(f) for f in audio]
    finally:
        cls.close()


def batched(batch: SileroBatch, calls: list[list[bytes]]) -> tuple[list[list[float]], list[SileroClassifier]]:
    """Each tick gives every call one frame, then flushes (as one event-loop iteration does);
    each frame's answer is read after the flush."""
    classifiers = [SileroClassifier(batch) for _ in calls]
    probs: list[list[float]] = [[] for _ in calls]
    for tick in range(len(calls[0])):
        for k, cls in enumerate(classifiers):
            cls.speech(calls[k][tick])
        batch.flush()
        for k, cls in enumerate(classifiers):
            probs[k].append(cls.answer)
    return probs, classifiers


@pytest.mark.parametrize("capacity", [16, 2])  # 2: the arrays double twice on the way
def test_batched_answers_after_the_flush_are_the_immediate_ones(speech: bytes, capacity: int) -> None:
    calls = calls_audio(speech, 5)
    expected = [alone(a) for a in calls]
    batch = SileroBatch(capacity=capacity)
    probs, classifiers = batched(batch, calls)
    try:
        for ours, theirs in zip(probs, expected, strict=True):
            assert np.allclose(ours, theirs, rtol=0, atol=TOL)
        assert max(max(p) for p in probs) > 0.9 and min(min(p) for p in probs) < 0.1
        assert batch.windows == sum(c.windows for c in classifiers)
        assert batch.runs < batch.windows // 3  # several calls' windows per run
        assert batch.run_s > 0.0  # the session's time is counted (the bench's onnx_ms)
    finally:
        for cls in classifiers:
            cls.close()


def test_each_call_keeps_its_own_state_across_windows(speech: bytes) -> None:
    calls = calls_audio(speech, 3)
    immediate = [SileroClassifier() for _ in calls]
    for k, cls in enumerate(immediate):
        for f in calls[k]:
            cls.speech(f)
    _, classifiers = batched(SileroBatch(), calls)
    try:
        for a, b in zip(immediate, classifiers, strict=True):
            ma, mb = a._model, b._model
            assert isinstance(ma, vad_silero._SharedSileroModel)
            assert isinstance(mb, vad_silero._SharedSileroModel)
            assert np.any(mb.state)
            assert np.allclose(ma.state, mb.state, rtol=0, atol=TOL)
            assert np.array_equal(ma.input_row[:32], mb.input_row[:32])  # the same context
    finally:
        for cls in immediate + classifiers:
            cls.close()


def test_a_flush_with_nothing_queued_does_nothing() -> None:
    batch = SileroBatch()
    batch.flush()
    assert (batch.runs, batch.windows, batch.failures, batch.pending, batch.run_s) == (0, 0, 0, 0, 0.0)


def test_a_frame_given_while_its_window_is_queued_flushes_the_batch_first(speech: bytes) -> None:
    # The detector never does this (it waits for the answer); a caller that does gets the
    # immediate path's answers, each window run before the next is queued.
    audio = frames(speech)
    expected = alone(audio)
    batch = SileroBatch()
    cls = SileroClassifier(batch)
    try:
        got = [cls.speech(f) for f in audio]
        batch.flush()
        got.append(cls.answer)
        assert np.allclose(got[2:], expected[1:], rtol=0, atol=TOL)  # one frame behind, no batch
        assert batch.windows == cls.windows and batch.runs == cls.windows
    finally:
        cls.close()


@pytest.mark.parametrize("group", [1, 3])
def test_skipped_frames_between_flushes_answer_as_without_a_batch(speech: bytes, group: int) -> None:
    # The VAD skips gated frames: a skip drops the partial window and zeroes the answer (after
    # a window queued: the batch is flushed first, as the window's state is needed).
    calls = calls_audio(speech, 3)
    rng = np.random.default_rng(group)
    skips = [rng.random(len(calls[0])) < 0.25 for _ in calls]
    batch = SileroBatch()
    pairs = [(SileroClassifier(), SileroClassifier(batch)) for _ in calls]
    try:
        for i in range(0, len(calls[0]) - group + 1, group):
            want = []
            for k, (ref, ours) in enumerate(pairs):
                for j in range(i, i + group):
                    for cls in (ref, ours):
                        cls.skip() if skips[k][j] else cls.speech(calls[k][j])
                want.append(ref._prob)
            batch.flush()
            assert np.allclose([ours._prob for _, ours in pairs], want, rtol=0, atol=TOL)
        for ref, ours in pairs:
            assert np.allclose(ref._model.state, ours._model.state, rtol=0, atol=TOL)  # type: ignore[union-attr]
    finally:
        for ref, ours in pairs:
            ref.close()
            ours.close()


def test_a_call_closed_with_a_window_queued_leaves_the_pool_clean(speech: bytes) -> None:
    audio = frames(speech)
    expected = alone(audio)
    batch = SileroBatch()
    closing, staying = SileroClassifier(batch), SileroClassifier(batch)
    model = closing._model
    assert isinstance(model, vad_silero._SharedSileroModel)
    probs = []
    try:
        for k, f in enumerate(audio):
            if closing._model is not None:
                closing.speech(f)
            staying.speech(f)
            if k >= 20 and batch.pending == 2:
                closing.close()  # its window is still queued
                assert model in vad_silero._SILERO_POOL
            batch.flush()
            probs.append(staying.answer)
        assert closing._model is None
        assert not np.any(model.state) and not np.any(model.input_row)  # not written into
        # The other call of that batch is answered as if alone.
        assert np.allclose(probs, expected, rtol=0, atol=TOL)
        reused = SileroClassifier(batch)
        assert reused._model is model
        reused.close()
    finally:
        staying.close()


class _Failing:
    """The real session, whose runs raise while `failing` is set (a fault injected, the model real)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.failing = True

    def io_binding(self) -> Any:
        return self.session.io_binding()

    def run_with_iobinding(self, io: Any) -> None:
        if self.failing:
            raise RuntimeError("injected")
        self.session.run_with_iobinding(io)


def test_a_failing_run_is_logged_once_and_its_calls_hear_silence(
    speech: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    audio = frames(speech)
    batch = SileroBatch()
    failing = _Failing(batch._session)
    batch._session = failing
    a, b = SileroClassifier(batch), SileroClassifier(batch)
    answered: list[float] = []
    a.on_answer = lambda: answered.append(a.answer)  # still called: the call goes on
    try:
        with caplog.at_level(logging.ERROR, logger="bridge.vad_batch"):
            for f in audio[:20]:
                a.speech(f)
                b.speech(f)
                batch.flush()  # raises nothing
        assert batch.failures > 2 and batch.runs == 0 and batch.pending == 0
        assert len(caplog.records) == 1
        assert answered and set(answered) == {0.0}
        failing.failing = False
        # The calls go on: later windows are answered again.
        for f in audio[20:]:
            a.speech(f)
            b.speech(f)
            batch.flush()
        assert batch.runs > 0 and max(answered) > 0.9
    finally:
        a.close()
        b.close()


def test_the_setting_off_no_running_loop_or_no_listener_gives_immediate_windows() -> None:
    vad = VoiceActivityDetector(VadSettings(batch_across_calls=True), on_event=print)
    try:
        assert isinstance(vad._cls, SileroClassifier) and not vad._cls.batched  # no loop
        assert vad._defer is None
    finally:
        vad.close()


async def test_on_a_loop_every_call_of_an_iteration_shares_one_run(speech: bytes) -> None:
    off = VoiceActivityDetector(VadSettings(batch_across_calls=False), on_event=print)
    assert isinstance(off._cls, SileroClassifier) and not off._cls.batched
    off.close()
    alone_ = VoiceActivityDetector(VadSettings(batch_across_calls=True))  # no listener
    assert isinstance(alone_._cls, SileroClassifier) and not alone_._cls.batched
    alone_.close()
    settings = VadSettings(batch_across_calls=True, energy_gate_rms=0)
    vads = [VoiceActivityDetector(settings, on_event=print) for _ in range(4)]
    batch = running_batch()
    assert batch is not None and batch is vad_batch.running_batch()
    classifiers = [v._cls for v in vads if isinstance(v._cls, SileroClassifier) and v._cls._batch is batch]
    assert len(classifiers) == 4
    loop = asyncio.get_running_loop()
    audio = frames(speech)[:8]
    runs, windows = batch.runs, batch.windows
    try:
        for k, f in enumerate(audio):
            done = asyncio.Event()
            for v in vads:  # as the sockets' callbacks of one iteration
                loop.call_soon(v.process, f, k * 0.02)
            loop.call_soon(loop.call_soon, done.set)  # after the flush those schedule
            await asyncio.wait_for(done.wait(), 5)
            assert batch.pending == 0
        assert batch.windows - windows == sum(c.windows for c in classifiers)
        assert batch.runs - runs == classifiers[0].windows
    finally:
        for v in vads:
            v.close()
