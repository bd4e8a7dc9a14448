"""Is the caller's speech over the bot a real interruption? The decision between pause and cancel.

Sans-I/O and clock-free: the caller of `InterruptionDecider` passes times (s, any monotonic
origin) and acts on the `Verdict` each method returns. One overlap at a time:

- `onset`: the VAD heard tens of ms of possible speech: PAUSE (the bot goes quiet, keeps its place),
  and the decision window (`window_ms`) opens.
- `partial`: an STT partial while engaged. `content_words` (2) words beyond the backchannel list
  ("угу", "ага", "да-да", "так", "ну", "мхм", "понятно", ...), or one stop or floor word
  ("подождите", "сколько", "извините"): CANCEL at once, confirmed by the VAD or not. Fewer
  ("так, дальше": a listener's word the list lacks): the bot stays paused, and resumes when the
  run ends or the window closes unless more words come. Only backchannel words: RESUME (a later
  partial with content words still cancels). Words that are a run of what the bot is saying
  (`bot_says`): its own echo, recognised; ignored.
- `confirmed`: the VAD heard `[vad] min_speech_ms` of speech: CANCEL after a content partial (or
  with `use_partials` off: the VAD alone decides), else PAUSE (if not yet) and wait for words.
- `tick`: time passed. The window closed with no words (or one short of `content_words`):
  RESUME when the STT is known to work (`words`: it gave words within `stt_known_s`; or
  `answered`: the service answered the call's recognition within `stt_known_s`, e.g. the
  `status_code` SpeechKit sends first on a stream, and no stall since), since the caller then said
  nothing recognisable (noise, a cough, echo); if the VAD still hears the confirmed run, only at
  its end (its words may still come), at most `max_pause_ms` after the onset. While the STT is
  not known to work (no answer from it yet on this call, a stalled STT: `stt_lost`), speech the
  VAD confirmed that has lasted `sustained_ms` from its onset (`sustained_start_ms` before the
  STT's first words on the call; summed over the overlap's runs) CANCELs as soon as it reaches
  that, so a caller is heard even when the STT is down (`cancel_without_words`); shorter runs
  RESUME at the window's end.
- `rejected` / `speech_end`: the run was not speech, or ended: RESUME (confirmed speech that ended
  inside the window with no words yet: the window's end decides). Partials of that run still
  count for `partial_grace_ms` (a short "стоп" is recognised after the VAD gave up on it).
- Late words (`orchestrator.owed_words`): a confirmed run resumed with no words while the STT
  had not yet answered for its audio (`CallKnowledge.heard_to` short of the run's end) is owed
  its words: for `late_words_ms`, a result over the resumed bot whose audio is that run's
  (`OwedWords.covers`) is judged as its words (content words CANCEL, late; backchannel, short
  or echo words KEEP, the result dropped), until its final; results without timing count.
  With the STT timely (it answered for the whole run and gave no words) nothing is owed.

So the bot is paused for at most `max_pause_ms` after an onset before it goes on or is cancelled
(`window_ms` unless confirmed speech outlasts it); confirmed speech still going at `max_pause_ms`
with no STT result at all since its onset cancels (the STT is behind the caller: seen on a line
whose echo the recogniser took for the start of an utterance, whose partials then stopped while
the caller spoke); speech goes on being watched after a resume (a content partial cancels while
it lasts).
"""

from __future__ import annotations

import enum
import math

from orchestrator.call_knowledge import CallKnowledge
from orchestrator.interruption_settings import InterruptionSettings
from orchestrator.overlap_words import PartialKind
from orchestrator.owed_words import OwedRun, OwedWords

__all__ = ["InterruptionDecider", "Verdict"]


class Verdict(enum.Enum):
    """What the bot's audio should do now."""

    KEEP = "keep"  # as it is
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"


# What was heard so far leaves the overlap undecided: the window still runs.
_UNDECIDED = frozenset({PartialKind.EMPTY, PartialKind.SHORT})


class InterruptionDecider(CallKnowledge):
    """One call's decision; see the module's docstring. `deadline`: when `tick` may decide.
    What it knows of the STT and the bot's words (`words`, `answered`, `stt_lost`, `stt_known`,
    `bot_says`, `kind`) is its base's."""

    __slots__ = (
        "_confirmed",
        "_decided",
        "_engaged_until",
        "_heard",
        "_held",
        "_overlap_from",
        "owed_run",
        "_pause_end",
        "_results",
        "_run_from",
        "_settings",
        "_spoken_to",
        "_sustain_at",
        "_timed_out",
        "_voiced_s",
        "_window_end",
        "deadline",
    )

    def __init__(self, settings: InterruptionSettings | None = None) -> None:
        self._settings = s = settings or InterruptionSettings()
        super().__init__(s)
        self._engaged_until: float | None = None  # None: not engaged; inf: the run is on
        self._confirmed = False
        self._decided = False  # CANCEL given for this run
        self._heard = PartialKind.EMPTY  # the newest partial's kind in this run
        self._timed_out = False  # the window closed with no words: new runs of it do not pause
        self._window_end: float | None = None
        self._pause_end = 0.0  # the window's bound while the confirmed run goes on
        self._held = False  # the window closed during a confirmed run: held to its end
        self._results = False  # a partial of the caller's words arrived since the overlap opened
        self._run_from: float | None = None  # the current run's onset
        self._voiced_s = 0.0  # confirmed speech of the overlap's ended runs
        self._sustain_at: float | None = None  # the STT unknown: the confirmed run cancels then
        self._overlap_from = 0.0  # the overlap's first onset
        self._spoken_to = 0.0  # the end of the overlap's latest run
        self.owed_run = OwedRun()  # a run resumed unheard: its words still count (owed_words.py)
        self.deadline: float | None = None

    @property
    def settings(self) -> InterruptionSettings:
        """The settings in use."""
        return self._settings

    # ------------------------------------------------------------------ what is known of the call
    def engaged(self, now: float) -> bool:
        """Whether partials arriving now belong to the caller's speech over the bot."""
        until = self._engaged_until
        return until is not None and now <= until

    # ------------------------------------------------------------------ the VAD's events
    def onset(self, now: float) -> Verdict:
        """The VAD's onset: possible speech."""
        self._open(now)
        self._run_from = now
        if self._decided or self._timed_out or self._heard is PartialKind.BACKCHANNEL:
            return Verdict.KEEP  # the same overlap, already judged: only words change it now
        return Verdict.PAUSE

    def _open(self, now: float) -> None:
        if not self.engaged(now):  # a fresh overlap (else a new run inside the last one's grace)
            self._overlap_from = now
            self._confirmed = self._decided = self._timed_out = False
            self._heard = PartialKind.EMPTY
            self._window_end = self._sustain_at = self.deadline = None
            self._voiced_s = 0.0
            self._run_from = None
            self._results = False
        s = self._settings
        undecided = not (self._decided or self._timed_out) and self._heard in _UNDECIDED
        if self._window_end is None and undecided and s.use_partials:
            self._window_end = now + s.window_ms / 1000  # a window per run still unjudged
            self._held = False
            self._pause_end = now + max(s.window_ms, s.max_pause_ms) / 1000
            self._set_deadline()
        self._engaged_until = float("inf")

    def _set_deadline(self) -> None:
        times = [t for t in (self._window_end, self._sustain_at) if t is not None]
        self.deadline = min(times) if times else None

    def confirmed(self, now: float) -> Verdict:
        """The VAD confirmed speech (its `min_speech_ms`)."""
        self._open(now)
        if self._run_from is None:
            self._run_from = now
        self._confirmed = True
        if self._decided:
            return Verdict.KEEP
        s = self._settings
        if not s.use_partials or self._heard is PartialKind.CONTENT:
            return self._cancel()
        if s.cancel_without_words and not self.stt_known(now):
            sustained = s.sustained_ms if self.stalled else s.sustained_start_ms
            left = max(0.0, sustained / 1000 - self._voiced_s)
            self._sustain_at = max(now, self._run_from + left)
            self._set_deadline()
        # Paused already after an onset; with onsets off, this is the first word of it.
        return Verdict.KEEP if self._timed_out or self._heard is PartialKind.BACKCHANNEL else Verdict.PAUSE

    def pending(self, now: float) -> bool:
        """Whether a decision on speech the VAD heard is still open at `now`: its window runs,
        or it was resumed with its words still owed by the STT (`late_words_ms`)."""
        if self._decided:
            return False
        return self.deciding() or self.owed_run.onset(now) is not None

    def deciding(self) -> bool:
        """Whether a decision window on speech the VAD heard is open (not decided yet)."""
        return not self._decided and self._window_end is not None

    def owed(self, now: float) -> OwedWords | None:
        """The resumed run whose words the STT still owes at `now` (`late_words_ms`), if any."""
        return self.owed_run.owed(now)

    def partial(
        self,
        text: str,
        now: float,
        *,
        final: bool = False,
        audio_start: float | None = None,
        audio_end: float | None = None,
    ) -> Verdict:
        """An STT partial (or `final`) arrived; `audio_end` as for `words`, `audio_start` where
        its audio starts on the same clock (None: unknown)."""
        self.words(text, now, audio_end=audio_end)
        if not self._settings.use_partials or self._decided:
            return Verdict.KEEP
        if not self.engaged(now):
            return self._late_words(text, now, final, audio_start, audio_end)
        kind = self.kind(text)
        if kind is PartialKind.EMPTY or kind is PartialKind.ECHO:
            return Verdict.KEEP  # (no sign the STT hears the caller: nothing, or the bot's echo)
        if kind is PartialKind.SHORT:
            # Not a result for the no-result cancel: an STT behind the caller can give one word.
            if self._heard is PartialKind.EMPTY:
                self._heard = kind
            return Verdict.KEEP  # paused (if it was) until the run ends or more words come
        self._results = True
        self._heard = kind
        if kind is PartialKind.CONTENT:
            return self._cancel()
        self._window_end = self._sustain_at = self.deadline = None
        return Verdict.RESUME

    def tick(self, now: float) -> Verdict:
        """Time passed: at `deadline`, sustained speech with the STT not known to work CANCELs;
        a window closed with no words RESUMEs (see the module's docstring)."""
        deadline = self.deadline
        if deadline is None or now < deadline or self._decided:
            return Verdict.KEEP
        if self._sustain_at is not None and now >= self._sustain_at:
            if not self.stt_known(now):  # (words may have come meanwhile: then words decide)
                return self._cancel()
            self._sustain_at = None
        if self._window_end is not None and now >= self._window_end:
            self._window_end = None
            one_run = self._run_from is not None and self._voiced_s == 0.0  # none ended yet
            if self._held and self._confirmed and one_run and not self._results:
                return self._cancel()  # speech for max_pause_ms and the STT said nothing of it
            if self._confirmed and self._sustain_at is None and now < self._pause_end:
                self._window_end = self._pause_end  # the run goes on: wait for its end or words
                self._held = True
            elif not (self._confirmed and self._sustain_at is not None):
                # No words: nothing recognisable (or, the STT unknown, nothing sustained).
                self._sustain_at = None
                self._set_deadline()
                self._timed_out = True
                self._remember(now)
                return Verdict.RESUME
        self._set_deadline()
        return Verdict.KEEP

    def rejected(self, now: float) -> Verdict:
        """The VAD's run was not speech: RESUME (its partials still count for the grace)."""
        self._run_from = None
        self.owed_run.run_ended(now)  # (a remembered run resumed while it went on ended)
        return self._release(now)

    def speech_end(self, now: float) -> Verdict:
        """The confirmed speech ended: RESUME, unless it had no words yet (or one short of
        `content_words`) and the window is open: then the window still decides (KEEP, paused),
        as its words may still come (the STT lags the speech: a final 0.1-0.8 s after it)."""
        if self._run_from is not None and self._confirmed:
            self._voiced_s += max(0.0, now - self._run_from)
        self._run_from = None
        self._spoken_to = now
        self.owed_run.run_ended(now)
        self._sustain_at = None
        self._set_deadline()
        s = self._settings
        if self._window_end is not None and self._confirmed and self._heard in _UNDECIDED:
            # Its words may still come (the STT lags the speech: a final 0.3-0.8 s after it):
            # paused until the window's end, and `final_wait_ms` after this end, within
            # max_pause_ms of the onset.
            wait = min(now + s.final_wait_ms / 1000, self._pause_end)
            if not self._held:
                wait = max(wait, self._window_end)
            if wait > now:
                self._window_end = wait
                self._held = False
                self._set_deadline()
                self._engaged_until = wait + s.partial_grace_ms / 1000
                self._confirmed = False
                return Verdict.KEEP
        if self._confirmed and self._heard in _UNDECIDED and not self._decided:
            self._timed_out = True  # a whole run with no words: its further runs do not pause
            self._remember(now)
        return self._release(now)

    # ------------------------------------------------------------------ words the STT still owes
    def _remember(self, now: float) -> None:
        """A confirmed run resumed with no words (or one short): if the STT has not answered for
        all of its audio yet, its words are still to come: remember the overlap for them."""
        s = self._settings
        if not s.use_partials or s.late_words_ms <= 0 or self._heard not in _UNDECIDED:
            return
        spoken_to = now if self._run_from is not None else self._spoken_to  # (the run goes on)
        heard_to = self.heard_to()
        if heard_to is not None and heard_to >= spoken_to:
            return  # the STT heard it all and gave no words: none were said
        start = self._overlap_from
        late_from = self.owed_run.onset(now)
        if late_from is not None:
            start = min(start, late_from)  # an earlier overlap's words are still owed too
        end = math.inf if self._run_from is not None else spoken_to
        self.owed_run.remember(start, end, now + s.late_words_ms / 1000)

    def _late_words(
        self, text: str, now: float, final: bool, audio_start: float | None, audio_end: float | None
    ) -> Verdict:
        """A result after the overlap's engagement: its words if their audio is its run's."""
        owed = self.owed(now)
        if owed is None or not owed.covers(audio_start, audio_end):
            return Verdict.KEEP  # nothing owed, or audio from before it or after it
        kind = self.kind(text)
        if final and kind is not PartialKind.ECHO:
            self.owed_run.heard()  # the STT's verdict on that speech (the bot's echo is none)
        return self._cancel() if kind is PartialKind.CONTENT else Verdict.KEEP

    def _release(self, now: float) -> Verdict:
        self._window_end = self._sustain_at = self.deadline = None
        self._confirmed = False
        if self._engaged_until is None:
            return Verdict.RESUME
        self._engaged_until = now + self._settings.partial_grace_ms / 1000
        return Verdict.KEEP if self._decided else Verdict.RESUME

    def _cancel(self) -> Verdict:
        self._decided = True
        self._window_end = self._sustain_at = self.deadline = None
        return Verdict.CANCEL

    def reset(self) -> None:
        """The bot's turn is over: forget the overlap (not what is known of the STT, nor the
        bot's last words, whose echo may still be recognised)."""
        self._engaged_until = self.deadline = self._window_end = self._sustain_at = None
        self._run_from = None
        self._voiced_s = 0.0
        self._confirmed = self._decided = self._timed_out = False
        self._heard = PartialKind.EMPTY
        self.owed_run.forget()
