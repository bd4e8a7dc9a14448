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
- Late words: a confirmed run whose window closed with no words (RESUME) while the STT had not
  yet answered for its audio (no result reached the run's end: `words`' `audio_end`, the
  result's audio end on this clock when its timing is known, else its arrival; without timed
  results, `answered` too) was not judged on its words, which the STT still owes (it lags the
  audio: seen 1.8-5.1 s under load). So the overlap is remembered for `late_words_ms`: a
  result over the resumed bot whose audio reaches the overlap's first onset and does not start
  after its run's end (`AFTER_RUN_TOLERANCE_S`; `OwedWords`) is judged as its words (content
  words CANCEL, late; backchannel, short or echo words KEEP: the bot goes on and the result is
  dropped), until its final or the bound; results without timing count (nothing says
  otherwise). With the STT timely (it answered for the whole run and gave no words) nothing is
  remembered: no words means none were said.

So the bot is paused for at most `max_pause_ms` after an onset before it goes on or is cancelled
(`window_ms` unless confirmed speech outlasts it); confirmed speech still going at `max_pause_ms`
with no STT result at all since its onset cancels (the STT is behind the caller: seen on a line
whose echo the recogniser took for the start of an utterance, whose partials then stopped while
the caller spoke); speech goes on being watched after a resume (a content partial cancels while
it lasts).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Annotated

import pydantic.dataclasses
from pydantic import ConfigDict, Field

from orchestrator.overlap_words import (
    BACKCHANNEL_TEXT,
    FLOOR_WORDS,
    STOP_WORDS,
    PartialKind,
    partial_kind,
    words_of,
)

__all__ = [
    "AFTER_RUN_TOLERANCE_S",
    "InterruptionDecider",
    "InterruptionSettings",
    "OwedWords",
    "PartialKind",
    "Verdict",
    "partial_kind",
]

# How far after a remembered run's end (the VAD's speech end, itself after the hangover) a
# result's audio may start and still be that run's words, s: the STT's word boundaries are off
# by up to 0.1-0.2 s, and the audio's origin by up to a frame (its first frame's arrival).
# Audio starting later is speech the VAD did not hear as the caller's (the bot's echo misheard).
AFTER_RUN_TOLERANCE_S = 0.3


@dataclasses.dataclass(frozen=True, slots=True)
class OwedWords:
    """A resumed run whose words the STT still owes: its first onset and its end (s, on the
    decider's clock; the end is inf while the run goes on)."""

    onset: float
    end: float

    def covers(self, audio_start: float | None, audio_end: float | None) -> bool:
        """Whether a result whose audio spans `audio_start`..`audio_end` (s, same clock; None:
        unknown) may be this run's words: its audio reaches the onset and does not start after
        the end (plus `AFTER_RUN_TOLERANCE_S`; without a start, its end stands for it)."""
        if audio_end is not None and audio_end < self.onset:
            return False  # audio from before it: an earlier echo, another word
        begin = audio_start if audio_start is not None else audio_end
        return begin is None or begin <= self.end + AFTER_RUN_TOLERANCE_S


@pydantic.dataclasses.dataclass(
    frozen=True, slots=True, config=ConfigDict(extra="forbid", allow_inf_nan=False)
)
class InterruptionSettings:
    """The pause/cancel decision (section `[interruption]`).

    Invalid values raise `pydantic.ValidationError` (a `ValueError`) naming the field.
    """

    # Partials made only of these words (separated by spaces or commas, any case) are backchannels.
    backchannel_words: str = BACKCHANNEL_TEXT
    # A partial with one of these words is the caller's, even if the bot's own text has it too
    # ("стоп" in "скажите стоп"): the echo rule never hides them.
    stop_words: str = STOP_WORDS
    # Words beyond the backchannel list that cancel at once when a partial has them (unless it is
    # the bot's echo), with `stop_words`.
    floor_words: str = FLOOR_WORDS
    # A partial cancels once it has this many words outside the backchannel list (or one of
    # `stop_words`/`floor_words`); fewer ("так, дальше", "аха": a listener's word the list lacks)
    # keep the bot paused until the caller's run ends, then it resumes (a later partial with
    # more words still cancels). 1: every word outside the list cancels (Pipecat's and LiveKit's
    # "minimum words to interrupt" is the same idea).
    content_words: Annotated[int, Field(ge=1, le=10)] = 2
    # After an onset, how long the bot stays paused waiting for words, ms.
    window_ms: Annotated[int, Field(ge=0, le=3000)] = 900
    # While the STT is not known to work, confirmed speech of `sustained_ms` cancels without
    # words (True: a caller is heard even when the STT is down) or never does (False).
    cancel_without_words: bool = True
    # The STT is known to work for this long after it last gave words (any result) or its
    # service last answered (`answered`), s; a stall (`stt_lost`) forgets it at once, and until
    # the STT's next words its answers do not count.
    stt_known_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # Voiced speech (from its onset, summed over the overlap's runs) that cancels without words
    # after the STT stalled (`stt_lost`), ms.
    sustained_ms: Annotated[int, Field(ge=0, le=5000)] = 600
    # The same while the STT is not known to work and has not stalled on this call (no words or
    # answer yet: the service not reached, or down from the start; or none for `stt_known_s`),
    # ms: longer, as callers answer a greeting with "алло",
    # "угу" whose words come 0.3 s after them (turn corpus, call start with no answer yet:
    # backchannel false cancels 44.8 % at 600 ms, 3.2 % at 900; with an STT dead from the start,
    # recall 98.4 % and 88.8 %).
    sustained_start_ms: Annotated[int, Field(ge=0, le=5000)] = 900
    # The window closed while the VAD still hears the confirmed run: its words may still come,
    # so the bot stays paused until the run ends, at most this long after the onset, ms. A run
    # still going then, with no STT result at all since its onset, cancels (the STT is behind
    # the caller: the bot must not talk over that much speech; an empty partial or the bot's
    # echo is no sign of the caller's); one with results resumes.
    max_pause_ms: Annotated[int, Field(ge=0, le=10000)] = 2000
    # Confirmed speech with no words yet ended (the VAD's speech end, `[vad] hangover_ms` after
    # its last voiced frame): the bot stays paused this long for its words, within max_pause_ms,
    # ms. SpeechKit finalises 0.3-0.8 s after the speech; an STT whose partials lag shows it too.
    final_wait_ms: Annotated[int, Field(ge=0, le=3000)] = 400
    # Partials of a run the VAD rejected or ended still count this long after, ms.
    partial_grace_ms: Annotated[int, Field(ge=0, le=2000)] = 600
    # A confirmed run resumed with no words while the STT had not answered for its audio yet
    # (it lags: 1.8-5.1 s seen at 200 calls): results over the bot whose audio reaches its onset
    # are its words for this long after the resume (content words cut late; backchannels stay
    # dropped), until its final, ms; 0: off (such words are dropped as a backchannel).
    late_words_ms: Annotated[int, Field(ge=0, le=30000)] = 6000
    # Off: partials are ignored, the VAD alone decides (confirmed speech cancels).
    use_partials: bool = True


class Verdict(enum.Enum):
    """What the bot's audio should do now."""

    KEEP = "keep"  # as it is
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"


# What was heard so far leaves the overlap undecided: the window still runs.
_UNDECIDED = frozenset({PartialKind.EMPTY, PartialKind.SHORT})


class InterruptionDecider:
    """One call's decision; see the module's docstring. `deadline`: when `tick` may decide."""

    __slots__ = (
        "_backchannel",
        "_answered_at",
        "_bot",
        "_confirmed",
        "_decided",
        "_engaged_until",
        "_floor",
        "_heard",
        "_heard_to",
        "_held",
        "_late_from",
        "_late_to",
        "_late_until",
        "_lost",
        "_overlap_from",
        "_pause_end",
        "_results",
        "_run_from",
        "_settings",
        "_spoken_to",
        "_stop",
        "_sustain_at",
        "_timed",
        "_timed_out",
        "_trust_answers",
        "_voiced_s",
        "_window_end",
        "_words_at",
        "deadline",
    )

    def __init__(self, settings: InterruptionSettings | None = None) -> None:
        self._settings = s = settings or InterruptionSettings()
        self._backchannel = frozenset(words_of(s.backchannel_words))
        self._stop = frozenset(words_of(s.stop_words))
        self._floor = frozenset(words_of(s.floor_words))
        self._bot = ""  # the bot's words now and just before, space-joined
        self._words_at: float | None = None  # when the STT last gave words
        self._lost = False  # the STT stalled (not merely silent since the call began)
        self._answered_at: float | None = None  # when its service last answered (words or not)
        self._trust_answers = True  # False from a stall to the STT's next words
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
        self._heard_to: float | None = None  # the STT's results reach the audio up to here
        self._timed = False  # a result carried its audio's timing (then answers alone do not count)
        self._overlap_from = 0.0  # the overlap's first onset
        self._spoken_to = 0.0  # the end of the overlap's latest run
        self._late_from: float | None = None  # an overlap resumed unheard: its words still count
        self._late_until = 0.0  # ... until then
        self._late_to = 0.0  # ... the end of its run (inf while it goes on)
        self.deadline: float | None = None

    @property
    def settings(self) -> InterruptionSettings:
        """The settings in use."""
        return self._settings

    # ------------------------------------------------------------------ what is known of the call
    def words(self, text: str, now: float, *, audio_end: float | None = None) -> None:
        """Any STT result (taken or dropped): if it has words, the STT is known to work.
        `audio_end`: where the result's audio ends, on the clock of `now` (s; from the result's
        audio timing); None: unknown, taken as `now` (a timely STT)."""
        if words_of(text):
            self._words_at = now
            self._trust_answers = True
        if audio_end is None:
            audio_end = now
        else:
            self._timed = True
        if self._heard_to is None or audio_end > self._heard_to:
            self._heard_to = audio_end

    def answered(self, at: float | None) -> None:
        """When the STT's service last answered this call's recognition, on the clock of the
        `now` arguments (s; any response: a status, an empty partial; None: not yet, or its
        connection failed since): a service that answers is working, so the caller's words, if
        any, will come (`RecognitionStream.answered_at`)."""
        self._answered_at = at

    def stt_lost(self) -> None:
        """The STT stalled: it is not known to work until it gives words again (its service's
        answers meanwhile do not count: it answers but does not hear the caller)."""
        self._words_at = None
        self._lost = True
        self._trust_answers = False

    def stt_known(self, now: float) -> bool:
        """Whether the STT gave words, or its service answered (no stall since), within
        `stt_known_s` of `now`."""
        known_s = self._settings.stt_known_s
        at = self._words_at
        if at is not None and now - at <= known_s:
            return True
        answered = self._answered_at
        return self._trust_answers and answered is not None and now - answered <= known_s

    def bot_says(self, text: str) -> None:
        """The bot starts saying `text`: partials made of a run of its words (with the previous
        text's) are its echo."""
        previous = self._bot.split()[-30:]  # the end of what it said before, still echoing
        self._bot = " ".join([*previous, *words_of(text)])

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
            sustained = s.sustained_ms if self._lost else s.sustained_start_ms
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
        return self.deciding() or self._late(now) is not None

    def deciding(self) -> bool:
        """Whether a decision window on speech the VAD heard is open (not decided yet)."""
        return not self._decided and self._window_end is not None

    def owed(self, now: float) -> OwedWords | None:
        """The resumed run whose words the STT still owes at `now` (`late_words_ms`), if any."""
        late_from = self._late(now)
        return None if late_from is None else OwedWords(late_from, self._late_to)

    def kind(self, text: str) -> PartialKind:
        """What `text`'s words say by this decider's lists (no state changes)."""
        s = self._settings
        return partial_kind(text, self._backchannel, self._bot, self._stop, self._floor, s.content_words)

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
        self._late_run_ended(now)
        return self._release(now)

    def speech_end(self, now: float) -> Verdict:
        """The confirmed speech ended: RESUME, unless it had no words yet (or one short of
        `content_words`) and the window is open: then the window still decides (KEEP, paused),
        as its words may still come (the STT lags the speech: a final 0.1-0.8 s after it)."""
        if self._run_from is not None and self._confirmed:
            self._voiced_s += max(0.0, now - self._run_from)
        self._run_from = None
        self._spoken_to = now
        self._late_run_ended(now)
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
        heard_to = self._heard_to
        answered = self._answered_at
        if not self._timed and answered is not None and (heard_to is None or answered > heard_to):
            heard_to = answered  # no timing: an answer is as good as a result at its arrival
        if heard_to is not None and heard_to >= spoken_to:
            return  # the STT heard it all and gave no words: none were said
        start = self._overlap_from
        late_from = self._late(now)
        if late_from is not None:
            start = min(start, late_from)  # an earlier overlap's words are still owed too
        self._late_from = start
        self._late_to = math.inf if self._run_from is not None else spoken_to
        self._late_until = now + s.late_words_ms / 1000

    def _late_run_ended(self, now: float) -> None:
        if self._late_from is not None and self._late_to == math.inf:
            self._late_to = now  # the remembered run (resumed while it went on) ended

    def _late(self, now: float) -> float | None:
        """The onset of the remembered overlap whose words are still owed at `now`, if any."""
        if self._late_from is not None and now > self._late_until:
            self._late_from = None
        return self._late_from

    def _late_words(
        self, text: str, now: float, final: bool, audio_start: float | None, audio_end: float | None
    ) -> Verdict:
        """A result after the overlap's engagement: its words if their audio is its run's."""
        owed = self.owed(now)
        if owed is None or not owed.covers(audio_start, audio_end):
            return Verdict.KEEP  # nothing owed, or audio from before it or after it
        kind = self.kind(text)
        if final and kind is not PartialKind.ECHO:
            self._late_from = None  # the STT's verdict on that speech (the bot's echo is none)
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
        self._late_from = None
