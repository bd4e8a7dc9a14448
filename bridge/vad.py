"""Voice activity detection for barge-in: a frame classifier behind an energy gate, with onset/hangover.

Sans-I/O: `process(frame, now)` takes one 10/20/30 ms frame of 8 kHz slin and the clock time it
arrived, and returns a `VadEvent` when the caller starts or stops speaking.

- Classifier (`engine`, bridge/vad_engines.py): Silero VAD (the default, MIT licence;
  bridge/vad_silero.py), TEN VAD (opt-in: Apache 2.0 with additional conditions, see
  bridge/vad_engines.py) or webrtcvad (the fallback); chosen on the turn-taking corpus (README
  "Measured here"); a frame is voiced when its speech probability is at least `threshold`.
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

import math
from collections.abc import Callable

from bridge.echo_gate import EchoGate
from bridge.vad_batch import running_batch
from bridge.vad_defer import DeferredFrames
from bridge.vad_engines import SpeechClassifier, classifier
from bridge.vad_events import VadEvent, VadEventKind
from bridge.vad_settings import VadSettings
from bridge.vad_silero import SileroClassifier
from orchestrator.audio import SAMPLE_RATE, SAMPLE_WIDTH, audioop_rms

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


class VoiceActivityDetector:
    """One call's detector (the classifiers keep per-stream state).

    `on_event`: with `[vad] batch_across_calls` and a running event loop, Silero's windows run in
    the loop's `SileroBatch`, and a frame that completes one is judged when the batch answers
    (bridge/vad_defer.py): its event, and those of the call's frames queued behind it, go to
    `on_event` from the batch's flush (same `at`/`detected_at`: the frames' arrival times), and
    `process()` returns None for them. Without `on_event`, windows run at once.
    """

    __slots__ = (
        "_audible",
        "_cheap",
        "_cls",
        "_defer",
        "_echo",
        "_energy_run",
        "_floor_db",
        "_level",
        "_masked",
        "_maybe_echo",
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
        "_paths_now",
        "_run_ms",
        "_settings",
        "_silent_ms",
        "_skipped",
        "_threshold",
        "_voiced_ms",
        "frames_checked",
        "frames_echo",
        "frames_gated",
        "frames_residual",
        "probability",
        "speaking",
    )

    def __init__(
        self,
        settings: VadSettings | None = None,
        echo: EchoGate | None = None,
        on_event: Callable[[VadEvent], None] | None = None,
    ) -> None:
        self._settings = s = settings or VadSettings()
        self._echo = echo
        batch = None
        if on_event is not None and s.batch_across_calls and s.engine == "silero":
            batch = running_batch()
        self._cls: SpeechClassifier = classifier(s.engine, s.aggressiveness, batch)
        self._defer: DeferredFrames | None = None
        if batch is not None and isinstance(self._cls, SileroClassifier) and self._cls.batched:
            self._defer = DeferredFrames(self, self._cls, on_event)  # type: ignore[arg-type]
        # webrtcvad for frames while the bot is quiet (`neural_only_over_bot`; needs the echo
        # gate's record of what the bot sent); None: `_cls` judges every frame.
        self._cheap: SpeechClassifier | None = None
        if s.engine != "webrtc" and s.neural_only_over_bot and echo is not None:
            self._cheap = classifier("webrtc", s.aggressiveness)
        self._skipped = False  # `_cls` was told `skip()` and has heard no frame since
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
        # The frame being judged, as the echo gate saw it on arrival (the arrival part of `process`).
        self._masked = False  # no louder than the bot's echo could be
        self._maybe_echo = False  # may be echo by the worst case (no path known yet)
        self._audible = False  # the bot audible on the line
        self._paths_now = 0

    @property
    def settings(self) -> VadSettings:
        """The settings in use."""
        return self._settings

    @property
    def frames_dropped(self) -> int:
        """Frames never judged: the batched path's queue was full and a flush could not empty it
        (re-entered from a listener; `bridge.vad_defer`). 0 on the immediate path."""
        defer = self._defer
        return defer.dropped if defer is not None else 0

    def _feed(self, audio: bytes | bytearray) -> float:
        """Give the frame to a classifier (the energy gate's and the cheap engine's choice);
        its probability, or with a batch a window queued (`_cls.pending`) to be answered."""
        if self._level < self._gate:
            self.frames_gated += 1
            if self._neural_run:
                # Inside a run (the stop before a syllable): the classifier still hears the frame,
                # so its window and state stay continuous and the next syllable counts at once.
                self._skipped = False
                self._cls.speech(audio)
            elif not self._skipped:
                # Once: a skip after a skip changes nothing (most frames are a listener's silence).
                self._skipped = True
                self._cls.skip()
            return 0.0
        # The classifier hears every frame above the gate, echo or not: a neural model's window
        # and recurrent state stay continuous through the caller talking over the bot.
        self.frames_checked += 1
        cheap = self._cheap
        # webrtcvad only while the bot is quiet and no run is being judged: a run that began over
        # the bot is judged to its end by the neural engine, also once the bot paused for it.
        if cheap is not None and not self._audible and not self._neural_run:
            if not self._neural_idle:
                self._neural_idle = True
                self._skipped = True
                self._cls.skip()  # its next window starts afresh when the bot speaks again
            return cheap.speech(audio)
        self._neural_idle = False
        self._skipped = False
        return self._cls.speech(audio)

    def process(self, frame: bytes, now: float) -> VadEvent | None:
        """Feed one frame (10, 20 or 30 ms of 8 kHz slin) that arrived at `now`; its event, or
        None (also when it waits for a batch: its event then goes to `on_event`)."""
        n = len(frame)
        if n not in (160, 320, 480):
            raise ValueError(f"VAD frame of {n} bytes: need 10, 20 or 30 ms of 8 kHz slin")
        # The arrival part (inline: it runs per frame), which must see the echo gate as it is
        # now: the residual (valid until the next frame), its level, and the gate's verdicts on
        # it, asked exactly as the judging would ask them (`is_echo` feeds the gate's search:
        # only for frames above the energy gate).
        echo = self._echo
        audio: bytes | bytearray = frame
        if echo is None:
            self._level = audioop_rms(audio, SAMPLE_WIDTH)
            self._masked = self._maybe_echo = self._audible = False
        else:
            audio = echo.cancel(frame)
            if audio is not frame:
                self.frames_residual += 1
            level = self._level = audioop_rms(audio, SAMPLE_WIDTH)
            self._audible = echo.bot_audible
            self._paths_now = echo.paths
            if level < self._gate:
                self._masked = self._maybe_echo = False
            else:
                self._masked = echo.is_echo(level)
                self._maybe_echo = echo.may_be_echo(level)
        defer = self._defer
        if defer is not None:
            return defer.push(audio, n // _BYTES_PER_MS, now)
        return self._decide(self._feed(audio), n // _BYTES_PER_MS, now)

    def _decide(self, p: float, ms: int, now: float) -> VadEvent | None:
        """The frame's class from its probability `p` and the arrival fields, then the state machine."""
        self.probability = p
        s = self._settings
        if self._masked:
            self.frames_echo += 1
            kind = _MASKED
        else:
            kind = _VOICED if p >= self._threshold else _SILENT
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
        if echo is not None and self._paths_now != self._paths:
            self._paths = self._paths_now
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
            if loud and self._maybe_echo:
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
        """The call is over: release the classifier (a pooled model goes back) and drop the
        frames waiting for a batch (no events after this). Idempotent."""
        if self._defer is not None:
            # It and the classifier point back at this detector and its owner: no cycle is left
            # (a finished call's gateway is freed by reference counting, not the collector).
            self._defer.close()
            self._defer = None
        self._cls.close()
        if self._cheap is not None:
            self._cheap.close()

    def reset(self) -> None:
        """Forget the current state (not the classifier's)."""
        self.speaking = False
        self._forget_run()
