"""VAD on real speech (espeak-ng Russian, resampled to 8 kHz by sox) and on clicks and noise."""

from __future__ import annotations

import random
import shutil
import struct
from pathlib import Path

import pytest

from bridge.vad import VadEvent, VadEventKind, VadSettings, VoiceActivityDetector
from orchestrator.adapters.tts.espeak import espeak_pcm_sync
from orchestrator.audio import FRAME_BYTES, rms

PHRASE = "Здравствуйте, я хотел бы узнать баланс моего счёта"


def make_russian_speech(directory: Path, text: str = PHRASE) -> bytes:
    """8 kHz mono s16 PCM of `text` spoken by espeak-ng (skips the test if it is missing)."""
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is needed (make system-deps)")
    pcm = espeak_pcm_sync(text)
    return pcm[: len(pcm) // FRAME_BYTES * FRAME_BYTES]


def noise(ms: int, amplitude: int = 8000, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    n = ms * 8
    return struct.pack(f"<{n}h", *(rnd.randint(-amplitude, amplitude) for _ in range(n)))


def click(amplitude: int = 30000) -> bytes:
    """A 20 ms frame with a sharp transient (a line click or a knock on the handset)."""
    samples = [0] * 160
    for i in range(8):
        samples[40 + i] = amplitude if i % 2 == 0 else -amplitude
    return struct.pack("<160h", *samples)


def silence(ms: int) -> bytes:
    return bytes(ms * 16)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_russian_speech(tmp_path_factory.mktemp("speech"))


_STAGES = (VadEventKind.SPEECH_ONSET, VadEventKind.SPEECH_REJECTED)


def run(vad: VoiceActivityDetector, pcm: bytes, t0: float = 0.0, *, stages: bool = False) -> list[VadEvent]:
    """The events for `pcm`; SPEECH_ONSET/REJECTED only with `stages`."""
    events = []
    for i in range(0, len(pcm), FRAME_BYTES):
        ev = vad.process(pcm[i : i + FRAME_BYTES], t0 + i // FRAME_BYTES * 0.02)
        if ev is not None and (stages or ev.kind not in _STAGES):
            events.append(ev)
    return events


def test_speech_starts_after_min_duration_and_ends_after_hangover(speech: bytes) -> None:
    vad = VoiceActivityDetector()
    events = run(vad, silence(500) + speech + silence(1000))
    assert [e.kind for e in events] == [VadEventKind.SPEECH_START, VadEventKind.SPEECH_END]
    start, end = events
    # Onset: where the speech begins (a neural VAD at its 0.7 threshold may take "Здравствуйте" for
    # speech only from its vowel, up to 0.3 s in).
    assert 0.5 <= start.at <= 0.8
    assert start.detected_at - start.at >= 0.2 - 0.02 - 1e-9  # min speech duration
    speech_end = 0.5 + len(speech) / 16000
    assert end.at <= speech_end
    assert end.detected_at - end.at >= 0.4 - 1e-9  # hangover
    assert not vad.speaking


def trim(pcm: bytes) -> bytes:
    """Drop leading and trailing quiet frames (espeak pads its output with silence)."""
    frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
    loud = [i for i, f in enumerate(frames) if rms(f) >= 100]
    return b"".join(frames[loud[0] : loud[-1] + 1])


def test_pauses_between_words_do_not_end_speech(speech: bytes) -> None:
    vad = VoiceActivityDetector()
    words = trim(speech)
    events = run(vad, words + silence(300) + words + silence(1000))
    assert [e.kind for e in events] == [VadEventKind.SPEECH_START, VadEventKind.SPEECH_END]


@pytest.mark.parametrize(
    "burst",
    [
        pytest.param(click() + silence(300), id="one click"),
        pytest.param((click() + silence(60)) * 3 + silence(300), id="click train"),
        pytest.param(noise(120) + silence(300), id="120 ms noise burst"),
        pytest.param(silence(2000), id="silence"),
        pytest.param(noise(2000, amplitude=40), id="quiet line hiss"),
    ],
)
def test_clicks_coughs_and_line_noise_do_not_start_speech(burst: bytes) -> None:
    assert run(VoiceActivityDetector(), burst) == []


def test_energy_gate_skips_webrtcvad_on_quiet_frames(speech: bytes) -> None:
    gated = VoiceActivityDetector()
    run(gated, silence(1000) + speech)
    assert gated.frames_gated >= 50  # all of the leading second of silence, at least
    ungated = VoiceActivityDetector(VadSettings(energy_gate_rms=0))
    run(ungated, silence(1000) + speech)
    assert ungated.frames_gated == 0
    assert ungated.frames_checked == gated.frames_checked + gated.frames_gated


def test_longer_min_speech_ignores_a_short_utterance(speech: bytes) -> None:
    vad = VoiceActivityDetector(VadSettings(min_speech_ms=5000))
    assert run(vad, speech + silence(500)) == []


def test_bad_frames_and_settings_are_named() -> None:
    with pytest.raises(ValueError, match="VAD frame of 319 bytes"):
        VoiceActivityDetector().process(bytes(319), 0.0)
    with pytest.raises(ValueError, match="aggressiveness"):
        VadSettings(aggressiveness=4)
    with pytest.raises(ValueError, match="hangover_ms"):
        VadSettings(hangover_ms=-1)
    with pytest.raises(ValueError, match=r"hangover_ms\n  Input should be less than or equal to 2000"):
        VadSettings(hangover_ms=4000)  # longer than the end of turn holds a final
    assert VadSettings(hangover_ms=2000).hangover_ms == 2000


def test_reset_forgets_speaking(speech: bytes) -> None:
    vad = VoiceActivityDetector()
    run(vad, speech[: 16 * 600])
    assert vad.speaking
    vad.reset()
    assert not vad.speaking
    assert run(vad, silence(1000)) == []


def test_without_the_gate_webrtcvad_hangover_turns_clicks_into_speech() -> None:
    # webrtcvad keeps saying "speech" for a while after a transient; the gate cuts that tail off
    # (silent frames never reach it), which is what keeps the click train above from barging in.
    train = (click() + silence(60)) * 3 + silence(300)
    ungated = VoiceActivityDetector(VadSettings(engine="webrtc", min_speech_ms=200, energy_gate_rms=0))
    assert [e.kind for e in run(ungated, train)] == [VadEventKind.SPEECH_START]


def test_onset_comes_early_and_then_start_confirms(speech: bytes) -> None:
    events = run(VoiceActivityDetector(), silence(200) + speech + silence(600), stages=True)
    kinds = [e.kind for e in events]
    assert kinds == [VadEventKind.SPEECH_ONSET, VadEventKind.SPEECH_START, VadEventKind.SPEECH_END]
    onset, start = events[0], events[1]
    assert onset.at == start.at  # the same run
    # Announced after pause_after_ms (60) of voiced audio, well before the 200 ms confirmation.
    assert onset.detected_at - onset.at < 0.1
    assert start.detected_at - onset.detected_at >= 0.12


@pytest.mark.parametrize(
    "burst", [noise(120), (click() + silence(40)) * 3], ids=["120 ms noise", "click train"]
)
def test_a_short_run_is_announced_then_rejected(burst: bytes) -> None:
    events = run(VoiceActivityDetector(), silence(200) + burst + silence(400), stages=True)
    kinds = [e.kind for e in events]
    # Either never announced, or announced and then rejected: never a start.
    assert kinds in ([], [VadEventKind.SPEECH_ONSET, VadEventKind.SPEECH_REJECTED])
    if kinds:
        assert events[1].detected_at - events[0].detected_at <= 0.2


def test_an_undecided_run_is_rejected_after_max_decision_ms(speech: bytes) -> None:
    vad = VoiceActivityDetector(VadSettings(min_speech_ms=10_000, max_decision_ms=300, max_gap_ms=10_000))
    events = run(vad, speech, stages=True)
    assert events[0].kind is VadEventKind.SPEECH_ONSET
    assert events[1].kind is VadEventKind.SPEECH_REJECTED
    assert 0.3 <= events[1].detected_at - events[0].at <= 0.34


def test_no_onset_events_when_pause_after_is_off(speech: bytes) -> None:
    events = run(VoiceActivityDetector(VadSettings(pause_after_ms=0)), speech + silence(600), stages=True)
    assert [e.kind for e in events] == [VadEventKind.SPEECH_START, VadEventKind.SPEECH_END]


# --- fast onset: energy rise over the noise floor, confirmed by the classifier ---


class _Stub:
    """A classifier that always answers `p` (the onset logic alone, no model)."""

    def __init__(self, p: float) -> None:
        self.p = p
        self.frames = 0

    def speech(self, frame: bytes | bytearray) -> float:
        self.frames += 1
        return self.p

    def skip(self) -> None:
        return None

    def close(self) -> None:
        return None


def _stubbed(p: float, settings: VadSettings | None = None) -> VoiceActivityDetector:
    vad = VoiceActivityDetector(settings)
    vad._cls = _Stub(p)
    return vad


def test_the_onset_fires_on_the_first_loud_frame(speech: bytes) -> None:
    pcm = silence(400) + trim(speech)
    first_loud = next(i for i in range(0, len(pcm), FRAME_BYTES) if rms(pcm[i : i + FRAME_BYTES]) >= 100)
    events = run(VoiceActivityDetector(), pcm + silence(600), stages=True)
    onset = events[0]
    assert onset.kind is VadEventKind.SPEECH_ONSET
    assert onset.at == onset.detected_at == first_loud // FRAME_BYTES * 0.02  # that very frame
    assert [e.kind for e in events[1:]] == [VadEventKind.SPEECH_START, VadEventKind.SPEECH_END]


def test_an_energy_onset_the_classifier_does_not_confirm_is_rejected() -> None:
    vad = _stubbed(0.0)  # never speech
    events = run(vad, silence(200) + noise(1000, amplitude=3000) + silence(200), stages=True)
    assert [e.kind for e in events] == [VadEventKind.SPEECH_ONSET, VadEventKind.SPEECH_REJECTED]
    onset, rejected = events
    assert onset.at == onset.detected_at == 0.2
    # Rejected on the frame that ends onset_confirm_ms (200) of the run: the 11th.
    assert rejected.detected_at == pytest.approx(onset.at + 0.2)


def test_a_confirmed_energy_onset_goes_on_to_speech_start() -> None:
    vad = _stubbed(1.0)  # every frame above the gate is speech
    events = run(vad, silence(200) + noise(1000, amplitude=3000), stages=True)
    assert [e.kind for e in events] == [VadEventKind.SPEECH_ONSET, VadEventKind.SPEECH_START]
    assert events[0].detected_at == 0.2
    assert events[1].at == 0.2 and events[1].detected_at == pytest.approx(0.2 + 0.28)  # 300 ms voiced


@pytest.mark.parametrize("level", [300, 3000])
def test_steady_noise_fires_at_most_once_when_it_begins(level: int) -> None:
    vad = _stubbed(0.0)
    events = run(vad, silence(200) + noise(3000, amplitude=level, seed=4), stages=True)
    # The noise's first frame may pause the bot once; then the floor is the noise's: nothing more.
    assert [e.kind for e in events] == [VadEventKind.SPEECH_ONSET, VadEventKind.SPEECH_REJECTED]
    assert events[1].detected_at <= 0.2 + 0.2 + 1e-9


def test_noise_present_from_the_start_sets_the_floor_and_a_louder_sound_still_fires() -> None:
    vad = _stubbed(0.0)
    quiet = noise(2000, amplitude=150, seed=5)  # about -50 dBFS: the floor settles on it
    events = run(vad, quiet + noise(200, amplitude=6000, seed=6) + silence(200), stages=True)
    kinds = [e.kind for e in events]
    assert kinds == [VadEventKind.SPEECH_ONSET, VadEventKind.SPEECH_REJECTED]
    assert events[0].at == pytest.approx(2.0)


def test_no_energy_onsets_when_the_rise_is_off() -> None:
    vad = _stubbed(0.0, VadSettings(onset_rise_db=0.0))
    assert run(vad, silence(200) + noise(1000, amplitude=3000), stages=True) == []


class _Calls:
    """A SpeechClassifier that logs what it is told."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def speech(self, frame: bytes | bytearray) -> float:
        self.calls.append("speech")
        return 0.0

    def skip(self) -> None:
        self.calls.append("skip")

    def close(self) -> None:
        return None


def test_the_classifier_is_told_skip_once_per_stretch_of_gated_frames() -> None:
    # No energy onset, and a classifier that hears no speech: no run, whose gated frames it would hear.
    vad = VoiceActivityDetector(VadSettings(engine="webrtc", onset_rise_db=0.0))
    cls = vad._cls = _Calls()
    loud = noise(20, amplitude=3000, seed=4)
    t = 0.0
    for frame in [silence(20)] * 3 + [loud] * 2 + [silence(20)] * 3 + [loud]:
        vad.process(frame, t)
        t += 0.02
    assert cls.calls == ["skip", "speech", "speech", "skip", "speech"]


def test_silero_after_one_skip_is_silero_after_a_skip_per_frame(speech: bytes) -> None:
    """The detector folds a gated stretch's skips into one: the model must see the same."""
    from bridge.vad_silero import SileroClassifier

    pytest.importorskip("onnxruntime")
    once, each = SileroClassifier(), SileroClassifier()
    out_once: list[float] = []
    out_each: list[float] = []
    try:
        for i in range(0, len(speech), FRAME_BYTES):
            frame = speech[i : i + FRAME_BYTES]
            if (i // FRAME_BYTES) % 9 in (3, 4, 5):  # a stretch of three gated frames
                once.skip() if (i // FRAME_BYTES) % 9 == 3 else None
                each.skip()
                continue
            out_once.append(once.speech(frame))
            out_each.append(each.speech(frame))
    finally:
        once.close()
        each.close()
    assert out_once == out_each
    assert max(out_once) > 0.5  # the model did hear speech
