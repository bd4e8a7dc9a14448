"""Voice activity detection for barge-in: a frame classifier behind an energy gate, with onset/hangover.

Sans-I/O: `process(frame, now)` takes one 10/20/30 ms frame of 8 kHz slin and the clock time it
arrived, and returns a `VadEvent` when the caller starts or stops speaking.

- Classifier (`engine`, bridge/vad_engines.py): Silero VAD (the default, MIT licence), TEN VAD
  (opt-in: Apache 2.0 with additional conditions, see below) or webrtcvad (the fallback); chosen
  on the turn-taking corpus (README "Measured here"); a frame is voiced when its speech
  probability is at least `threshold`.
- Energy gate: frames whose RMS is below `energy_gate_rms` are silence without calling into
  the classifier. Most of a call is the caller listening, so most frames take the cheap path
  (measured here: ~0.25 us for the RMS vs ~2.3 us for webrtcvad per 20 ms frame).
- Minimum speech duration: speech starts only after `min_speech_ms` of voiced audio, with gaps of
  up to `max_gap_ms` tolerated inside it, so a cough, a click or a line-noise burst does not cut
  the bot off.
- Hangover: speech ends only after `hangover_ms` without a voiced frame, so the pauses between
  words do not end the turn.
- Two stages: after `pause_after_ms` of voiced audio in a starting run, SPEECH_ONSET (the bot may
  pause: it costs nothing if the run turns out to be a cough); if the run then dies before
  `min_speech_ms`, or is still undecided after `max_decision_ms`, SPEECH_REJECTED (resume).
- Fast onset: a frame whose RMS rises `onset_rise_db` above the running noise floor (and is above
  the energy gate, and not possibly echo) fires SPEECH_ONSET on that very frame (the bot pauses
  within a frame of the caller's sound); the classifier must then confirm it (`pause_after_ms` of
  voiced frames) within `onset_confirm_ms`, or the run is SPEECH_REJECTED (the bot resumes). The
  floor (dB) follows the frames between runs only (down fast, up slowly) and jumps to a rejected
  run's level, so steady background noise fires at most once, when it begins.
- Echo: with an `EchoGate` (bridge/echo_gate.py), each frame first has the bot's echo subtracted
  (once the gate found the echo path); the residual is what the gates and the classifier judge
  (the STT keeps the raw audio). A frame no louder than the bot's echo could be (the residual's
  echo, or before the path is known, the raw echo's) is no evidence either way.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Annotated

import pydantic.dataclasses
from pydantic import ConfigDict, Field

from bridge.echo_gate import EchoGate
from bridge.vad_batch import running_batch
from bridge.vad_engines import Engine, SpeechClassifier, classifier
from orchestrator.audio import SAMPLE_RATE, SAMPLE_WIDTH, rms

__all__ = ["VadEvent", "VadEventKind", "VadSettings", "VoiceActivityDetector"]

_BYTES_PER_MS = SAMPLE_RATE * SAMPLE_WIDTH // 1000  # 16
# Frame classes: below the gates or not speech; speech; no louder than the bot's echo could be.
_SILENT, _VOICED, _MASKED = 0, 1, 2
# Voiced audio after which echo-masked frames stop counting as gaps when onsets are off, ms.
_TRUSTED_MS = 60
# The noise floor's step toward a quieter frame (fast: a cough's level is forgotten in a few
# frames) and toward a louder one (slow: about 0.4 s), per frame between runs.
_FLOOR_DOWN = 0.5
_FLOOR_UP = 0.05


@pydantic.dataclasses.dataclass(
    frozen=True, slots=True, config=ConfigDict(extra="forbid", allow_inf_nan=False)
)
class VadSettings:
    """Tuning of the detector (section `[vad]`); the defaults suit 8 kHz telephone audio.

    `engine` defaults to Silero VAD (MIT). TEN VAD (`engine = "ten"`) is opt-in: its licence adds
    non-competition and deployment conditions to Apache 2.0 (see the field's comment).

    Invalid values raise `pydantic.ValidationError` (a `ValueError`) naming the field.
    """

    # Frame classifier: "silero" (Silero VAD, MIT), "webrtc" (webrtcvad, BSD; the fallback) or
    # "ten" (TEN VAD; needs Debian's libc++1). TEN is opt-in because of its licence: Apache 2.0
    # WITH additional conditions (its wheel's licenses/LICENSE: no deployment that competes with
    # Agora's offerings or lets third parties build or deploy applications), which an open
    # voice-agent system's users should choose knowingly, not inherit from a default.
    engine: Engine = "silero"
    # A neural engine judges frames only while the bot is audible on the line (its audio sent
    # within the echo window): the barge-in decisions, where telling a cough or an echo from a
    # caller matters; otherwise webrtcvad does, about a tenth of the CPU (a caller talking to a
    # quiet bot is heard by the STT anyway); a run that began while the bot was audible is judged
    # by it to its end, also once the bot paused. false: the neural engine judges every frame.
    neural_only_over_bot: bool = True
    # Silero: the calls' windows of one loop iteration run as one batch (bridge/vad_batch.py; ~134 us
    # a window alone, ~45 us in 16+; bridge CPU per call-second 10-27 % lower at 150-250 calls). Each
    # answer comes a frame later, costing a run a voiced frame per syllable: off until the detector
    # judges a frame once its answer is in (the barge-in "подождите" was missed: tests/test_bench_smoke).
    batch_across_calls: bool = False
    # Speech probability at or above which a frame is voiced (the neural engines; webrtc gives 0/1).
    threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.7
    # webrtcvad mode: 0 (least) .. 3 (most eager to call audio noise "not speech").
    aggressiveness: Annotated[int, Field(ge=0, le=3)] = 2
    # Voiced audio needed before speech starts, ms (shorter runs are clicks and coughs).
    min_speech_ms: Annotated[int, Field(ge=20)] = 300
    # Silence needed before speech ends, ms (the pauses between words are shorter); at most 2000:
    # a longer one would outlast the end of turn's bound on a held final (4 s).
    hangover_ms: Annotated[int, Field(ge=20, le=2000)] = 400
    # Voiced audio after which a starting run is announced (SPEECH_ONSET: the bot pauses), ms;
    # 0, or not below min_speech_ms: no onset events.
    pause_after_ms: Annotated[int, Field(ge=0)] = 60
    # A starting run still undecided this long after its first voiced frame is rejected, ms (the
    # bot's echo can hide the caller's frames; a paused bot must not wait for ever).
    max_decision_ms: Annotated[int, Field(ge=20)] = 800
    # Unvoiced gap tolerated inside a starting run, ms.
    max_gap_ms: Annotated[int, Field(ge=0)] = 60
    # Frames below this RMS (s16) are silence without asking webrtcvad; 100 is about -50 dBFS, 0: off.
    energy_gate_rms: Annotated[int, Field(ge=0, le=32767)] = 100
    # A frame this much louder than the noise floor fires SPEECH_ONSET at once, dB; 0: off (onsets
    # only after pause_after_ms of voiced frames). Needs pause_after_ms > 0.
    onset_rise_db: Annotated[float, Field(ge=0.0, le=60.0)] = 10.0
    # After such an onset, the classifier must confirm (pause_after_ms of voiced frames) within
    # this, ms, or the run is rejected (the bot resumes).
    onset_confirm_ms: Annotated[int, Field(ge=20, le=2000)] = 200


class VadEventKind(enum.Enum):
    """What changed."""

    SPEECH_ONSET = "speech_onset"  # a starting run reached pause_after_ms: maybe speech
    SPEECH_REJECTED = "speech_rejected"  # that run was not speech after all
    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"


@dataclass(frozen=True, slots=True)
class VadEvent:
    """A change of speaking state.

    `at` is the arrival time of the first voiced frame of the run (onset, rejected, start), or of
    the last voiced frame before the hangover ran out (end). `detected_at` is when the event was
    emitted.
    """

    kind: VadEventKind
    at: float
    detected_at: float


class VoiceActivityDetector:
    """One call's detector (the classifiers keep per-stream state)."""

    __slots__ = (
        "_cheap",
        "_cls",
        "_echo",
        "_energy_run",
        "_floor_db",
        "_level",
        "_rise_db",
        "_run_db",
        "_run_frames",
        "_neural_idle",
        "_neural_run",
        "_gap_ms",
        "_gate",
        "_announced",
        "_last_voiced",
        "_onset",
        "_paths",
        "_run_ms",
        "_settings",
        "_silent_ms",
        "_threshold",
        "_voiced_ms",
        "frames_checked",
        "frames_echo",
        "frames_gated",
        "frames_residual",
        "probability",
        "speaking",
    )

    def __init__(self, settings: VadSettings | None = None, echo: EchoGate | None = None) -> None:
        self._settings = s = settings or VadSettings()
        self._echo = echo
        batch = running_batch() if s.batch_across_calls and s.engine == "silero" else None
        self._cls: SpeechClassifier = classifier(s.engine, s.aggressiveness, batch)
        # webrtcvad for frames while the bot is quiet (`neural_only_over_bot`; needs the echo
        # gate's record of what the bot sent); None: `_cls` judges every frame.
        self._cheap: SpeechClassifier | None = None
        if s.engine != "webrtc" and s.neural_only_over_bot and echo is not None:
            self._cheap = classifier("webrtc", s.aggressiveness)
        self._neural_idle = False  # the neural classifier missed frames: restart its window
        self._neural_run = False  # the current run began over the bot: the neural engine judges it
        self._threshold = s.threshold
        self.probability = 0.0  # the classifier's last answer
        self._gate = s.energy_gate_rms
        self.speaking = False
        self._onset: float | None = None
        self._announced = False  # SPEECH_ONSET sent for the starting run
        self._run_ms = 0  # since the starting run's first voiced frame
        self._voiced_ms = 0
        self._gap_ms = 0
        self._silent_ms = 0
        self._last_voiced = 0.0
        self.frames_gated = 0  # decided by the energy gate alone
        self.frames_checked = 0  # passed to the classifier
        self.frames_echo = 0  # silence because no louder than the bot's echo could be
        self.frames_residual = 0  # judged after the bot's echo was subtracted
        # Fast onset: the noise floor (dB re 1 LSB RMS), the rise that fires, the run it started.
        self._rise_db = s.onset_rise_db if 0 < s.pause_after_ms < s.min_speech_ms else 0.0
        # The floor starts at the energy gate's level (a call's first frames are no floor yet);
        # a quieter line pulls it down within a few frames.
        self._floor_db = 20.0 * math.log10(max(s.energy_gate_rms, 1))
        self._level = 0  # the last frame's RMS (after echo subtraction)
        self._energy_run = False  # the current run was announced by energy, not yet confirmed
        self._run_db = 0.0  # sum of the run's frame levels, dB (for the floor if it is rejected)
        self._run_frames = 0
        self._paths = 0  # the echo gate's `paths` when last seen

    @property
    def settings(self) -> VadSettings:
        """The settings in use."""
        return self._settings

    def is_voiced(self, frame: bytes) -> bool:
        """Classify one frame (echo subtraction, energy gate, classifier, echo gate)."""
        return self._classify(frame) is _VOICED

    def _classify(self, frame: bytes) -> int:
        gate = self._gate
        echo = self._echo
        audio: bytes | bytearray = frame
        if echo is not None:
            audio = echo.cancel(frame)
            if audio is not frame:
                self.frames_residual += 1
        level = self._level = rms(audio)
        if level < gate:
            self.frames_gated += 1
            if self._neural_run:
                # Inside a run (the stop before a syllable): the classifier still hears the frame,
                # so its window and state stay continuous and the next syllable counts at once.
                self._cls.speech(audio)
            else:
                self._cls.skip()
            self.probability = 0.0
            return _SILENT
        # The classifier hears every frame above the gate, echo or not: a neural model's window
        # and recurrent state stay continuous through the caller talking over the bot.
        self.frames_checked += 1
        cheap = self._cheap
        # webrtcvad only while the bot is quiet and no run is being judged: a run that began over
        # the bot is judged to its end by the neural engine, also once the bot paused for it.
        if cheap is not None and echo is not None and not echo.bot_audible and not self._neural_run:
            if not self._neural_idle:
                self._neural_idle = True
                self._cls.skip()  # its next window starts afresh when the bot speaks again
            p = self.probability = cheap.speech(audio)
        else:
            self._neural_idle = False
            p = self.probability = self._cls.speech(audio)
        if echo is not None and echo.is_echo(level):
            self.frames_echo += 1
            return _MASKED
        return _VOICED if p >= self._threshold else _SILENT

    def process(self, frame: bytes, now: float) -> VadEvent | None:
        """Feed one frame (10, 20 or 30 ms of 8 kHz slin) that arrived at `now`."""
        n = len(frame)
        if n not in (160, 320, 480):
            raise ValueError(f"VAD frame of {n} bytes: need 10, 20 or 30 ms of 8 kHz slin")
        ms = n // _BYTES_PER_MS
        s = self._settings
        kind = self._classify(frame)
        voiced = kind is _VOICED
        if self.speaking:
            if voiced:
                self._last_voiced = now
                self._silent_ms = 0
                return None
            self._silent_ms += ms
            if self._silent_ms < s.hangover_ms:
                return None
            self.speaking = False
            self._forget_run()
            return VadEvent(VadEventKind.SPEECH_END, self._last_voiced, now)
        onset = self._onset
        echo = self._echo
        if echo is not None and echo.paths != self._paths:
            self._paths = echo.paths
            if onset is not None and self._voiced_ms:
                # A new echo path: what the run heard so far may have been the bot's echo. Its
                # voiced audio is forgotten; an announced run must be confirmed on the residual.
                self._voiced_ms = self._gap_ms = 0
                if self._announced:
                    self._energy_run = True
                    self._run_ms = 0
                    # Its levels so far were the raw line's (echo included): not a noise floor.
                    self._run_db = 0.0
                    self._run_frames = 0
        rise = self._rise_db
        level_db = 0.0
        loud = False
        if rise:
            level = self._level
            level_db = 20.0 * math.log10(level) if level > 1 else 0.0
            loud = kind is not _MASKED and level >= self._gate and level_db >= self._floor_db + rise
            if loud and echo is not None and echo.may_be_echo(level):
                loud = False  # no echo path yet: only a frame louder than any echo could be fires
        if onset is not None:
            self._run_ms += ms
            if self._energy_run:
                self._run_db += level_db
                self._run_frames += 1
        elif rise:
            if loud:
                # Fast onset: the first frame well above the floor; the classifier confirms later.
                self._onset = now
                self._neural_run = not self._neural_idle
                self._run_ms = ms
                self._voiced_ms = ms if voiced else 0
                self._gap_ms = 0
                self._start_energy_run(level_db)
                return VadEvent(VadEventKind.SPEECH_ONSET, now, now)
            # Between runs: the floor follows the line, down fast, up slowly.
            floor = self._floor_db
            self._floor_db = floor + (_FLOOR_DOWN if level_db < floor else _FLOOR_UP) * (level_db - floor)
        if voiced:
            if onset is None:
                self._onset = onset = now
                self._neural_run = not self._neural_idle
                self._run_ms = ms
            self._voiced_ms += ms
            self._gap_ms = 0
            if self._voiced_ms >= s.min_speech_ms:
                self.speaking = True
                self._last_voiced = now
                self._silent_ms = 0
                self._announced = False
                self._energy_run = False
                return VadEvent(VadEventKind.SPEECH_START, onset, now)
            if self._energy_run and self._voiced_ms >= s.pause_after_ms:
                self._energy_run = False  # confirmed: from here on a run like any other
            if not self._announced and 0 < s.pause_after_ms <= self._voiced_ms:
                self._announced = True
                return VadEvent(VadEventKind.SPEECH_ONSET, onset, now)
            if not self._announced and loud:
                self._start_energy_run(level_db)
                return VadEvent(VadEventKind.SPEECH_ONSET, onset, now)
            return self._undecided(onset, now)
        if onset is not None:
            if self._energy_run:
                # Announced by its energy: the classifier has onset_confirm_ms to hear speech in
                # it (a neural model's window lags the sound); gaps do not count until then.
                if self._run_ms > s.onset_confirm_ms:
                    return self._reject(onset, now)
                return None
            if not self._announced and loud:
                self._start_energy_run(level_db)
                return VadEvent(VadEventKind.SPEECH_ONSET, onset, now)
            if loud and self._announced:
                pass  # still well above the floor (a syllable the classifier lags on): no gap
            elif kind is not _MASKED or self._voiced_ms < (s.pause_after_ms or _TRUSTED_MS):
                # Once a run has enough voiced audio to be announced, a frame the bot's echo may
                # hide is no evidence either way: the caller's quieter syllables under the bot's
                # loud ones must not restart it. Before, it is a gap: stray frames of echo must
                # not add up to an onset.
                self._gap_ms += ms
            if self._gap_ms > s.max_gap_ms:
                # Too short to be speech (a click, a cough): start over.
                return self._reject(onset, now)
            return self._undecided(onset, now)
        return None

    def _start_energy_run(self, level_db: float) -> None:
        self._announced = True
        self._energy_run = True
        self._run_db = level_db
        self._run_frames = 1

    def _undecided(self, onset: float, now: float) -> VadEvent | None:
        if self._run_ms > self._settings.max_decision_ms:
            return self._reject(onset, now)
        return None

    def _reject(self, onset: float, now: float) -> VadEvent | None:
        announced = self._announced
        if self._energy_run and self._run_frames:
            # Not speech: the floor rises to its level, so steady noise that just began does not
            # fire again (a cough's level is forgotten in a few quiet frames: the floor falls fast).
            self._floor_db = max(self._floor_db, self._run_db / self._run_frames)
        self._forget_run()
        return VadEvent(VadEventKind.SPEECH_REJECTED, onset, now) if announced else None

    def _forget_run(self) -> None:
        self._onset = None
        self._announced = self._energy_run = self._neural_run = False
        self._voiced_ms = self._gap_ms = self._silent_ms = self._run_ms = 0

    def close(self) -> None:
        """The call is over: release the classifier (a pooled model goes back). Idempotent."""
        self._cls.close()
        if self._cheap is not None:
            self._cheap.close()

    def reset(self) -> None:
        """Forget the current state (not the classifier's)."""
        self.speaking = False
        self._forget_run()
