"""Is the caller's speech over the bot a real interruption? The decision between pause and cancel.

Sans-I/O and clock-free: the caller of `InterruptionDecider` passes times (s, any monotonic
origin) and acts on the `Verdict` each method returns. One overlap at a time:

- `onset`: the VAD heard tens of ms of possible speech: PAUSE (the bot goes quiet, keeps its place),
  and the decision window (`window_ms`) opens.
- `partial`: an STT partial while engaged. Words beyond the backchannel list ("угу", "ага",
  "да-да", "так", "ну", "мхм", "понятно", ...): CANCEL at once, confirmed by the VAD or not.
  Only backchannel words: RESUME (a later partial with content words still cancels).
- `confirmed`: the VAD heard `[vad] min_speech_ms` of speech: CANCEL after a content partial (or
  with `use_partials` off: the VAD alone decides), else PAUSE (if not yet) and wait for words.
- `tick`: the window closed with no words: RESUME (the STT heard no words: noise, a cough, echo),
  or CANCEL if the VAD confirmed speech and `cancel_without_words` is on.
- `rejected` / `speech_end`: the run was not speech, or ended: RESUME (confirmed speech that ended
  inside the window with no words yet: the window's end decides). Partials of that run still
  count for `partial_grace_ms` (a short "стоп" is recognised after the VAD gave up on it).

So the bot is paused for at most `window_ms` after an onset before it goes on or is cancelled;
speech goes on being watched after a resume (a content partial cancels while it lasts).
"""

from __future__ import annotations

import enum
import re
from typing import Annotated

import pydantic.dataclasses
from pydantic import ConfigDict, Field

__all__ = ["InterruptionDecider", "InterruptionSettings", "PartialKind", "Verdict", "partial_kind"]

BACKCHANNEL_WORDS = "угу ага да так ну мхм мгм хм понятно ясно ок окей хорошо ладно конечно"


@pydantic.dataclasses.dataclass(
    frozen=True, slots=True, config=ConfigDict(extra="forbid", allow_inf_nan=False)
)
class InterruptionSettings:
    """The pause/cancel decision (section `[interruption]`).

    Invalid values raise `pydantic.ValidationError` (a `ValueError`) naming the field.
    """

    # Partials made only of these words (separated by spaces or commas, any case) are backchannels.
    backchannel_words: str = BACKCHANNEL_WORDS
    # After an onset, how long the bot stays paused waiting for words, ms.
    window_ms: Annotated[int, Field(ge=0, le=3000)] = 900
    # The window closed with no words but the VAD confirmed speech: cancel (True: a caller is
    # heard even when the STT gives no words in time) or resume.
    cancel_without_words: bool = True
    # Partials of a run the VAD rejected or ended still count this long after, ms.
    partial_grace_ms: Annotated[int, Field(ge=0, le=2000)] = 600
    # Off: partials are ignored, the VAD alone decides (confirmed speech cancels).
    use_partials: bool = True


class Verdict(enum.Enum):
    """What the bot's audio should do now."""

    KEEP = "keep"  # as it is
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"


class PartialKind(enum.Enum):
    """What a partial's words say about the speech."""

    EMPTY = "empty"
    BACKCHANNEL = "backchannel"
    CONTENT = "content"


_WORD = re.compile(r"[а-яёa-z]+")


def partial_kind(text: str, backchannel: frozenset[str]) -> PartialKind:
    """EMPTY (no words), BACKCHANNEL (only words of `backchannel`) or CONTENT."""
    words = _WORD.findall(text.lower())
    if not words:
        return PartialKind.EMPTY
    return PartialKind.BACKCHANNEL if all(w in backchannel for w in words) else PartialKind.CONTENT


class InterruptionDecider:
    """One call's decision; see the module's docstring. `deadline`: when `tick` may CANCEL."""

    __slots__ = (
        "_backchannel",
        "_confirmed",
        "_decided",
        "_engaged_until",
        "_heard",
        "_settings",
        "_timed_out",
        "deadline",
    )

    def __init__(self, settings: InterruptionSettings | None = None) -> None:
        self._settings = s = settings or InterruptionSettings()
        self._backchannel = frozenset(_WORD.findall(s.backchannel_words.lower()))
        self._engaged_until: float | None = None  # None: not engaged; inf: the run is on
        self._confirmed = False
        self._decided = False  # CANCEL given for this run
        self._heard = PartialKind.EMPTY  # the newest partial's kind in this run
        self._timed_out = False  # the window closed with no words: new runs of it do not pause
        self.deadline: float | None = None

    @property
    def settings(self) -> InterruptionSettings:
        """The settings in use."""
        return self._settings

    def engaged(self, now: float) -> bool:
        """Whether partials arriving now belong to the caller's speech over the bot."""
        until = self._engaged_until
        return until is not None and now <= until

    def onset(self, now: float) -> Verdict:
        """The VAD's onset: possible speech."""
        self._open(now)
        if self._decided or self._timed_out or self._heard is PartialKind.BACKCHANNEL:
            return Verdict.KEEP  # the same overlap, already judged: only words change it now
        return Verdict.PAUSE

    def _open(self, now: float) -> None:
        if not self.engaged(now):  # a fresh overlap (else a new run inside the last one's grace)
            self._confirmed = self._decided = self._timed_out = False
            self._heard = PartialKind.EMPTY
            self.deadline = None
        s = self._settings
        undecided = not (self._decided or self._timed_out) and self._heard is PartialKind.EMPTY
        if self.deadline is None and undecided and s.use_partials:
            self.deadline = now + s.window_ms / 1000  # a window per run still unjudged
        self._engaged_until = float("inf")

    def confirmed(self, now: float) -> Verdict:
        """The VAD confirmed speech (its `min_speech_ms`)."""
        self._open(now)
        self._confirmed = True
        if self._decided:
            return Verdict.KEEP
        s = self._settings
        if not s.use_partials or self._heard is PartialKind.CONTENT:
            return self._cancel()
        # Paused already after an onset; with onsets off, this is the first word of it.
        return Verdict.KEEP if self._timed_out or self._heard is PartialKind.BACKCHANNEL else Verdict.PAUSE

    def partial(self, text: str, now: float) -> Verdict:
        """An STT partial (or final) arrived."""
        if not self._settings.use_partials or self._decided or not self.engaged(now):
            return Verdict.KEEP
        kind = partial_kind(text, self._backchannel)
        if kind is PartialKind.EMPTY:
            return Verdict.KEEP
        self._heard = kind
        if kind is PartialKind.CONTENT:
            return self._cancel()
        self.deadline = None
        return Verdict.RESUME

    def tick(self, now: float) -> Verdict:
        """Time passed: once `deadline` is reached with no words, RESUME (or CANCEL, see above)."""
        deadline = self.deadline
        if deadline is None or now < deadline or self._decided:
            return Verdict.KEEP
        self.deadline = None
        if self._confirmed and (self._settings.cancel_without_words or not self._settings.use_partials):
            return self._cancel()
        self._timed_out = True
        return Verdict.RESUME

    def rejected(self, now: float) -> Verdict:
        """The VAD's run was not speech: RESUME (its partials still count for the grace)."""
        return self._release(now)

    def speech_end(self, now: float) -> Verdict:
        """The confirmed speech ended: RESUME, unless it had no words yet and no words would
        cancel it (`cancel_without_words`): then the window still decides (KEEP, paused)."""
        s = self._settings
        if (
            self.deadline is not None
            and self._confirmed
            and s.cancel_without_words
            and self._heard is PartialKind.EMPTY
        ):
            # Its words may still come (the STT lags the speech); the window's end is the bound.
            self._engaged_until = self.deadline + s.partial_grace_ms / 1000
            return Verdict.KEEP
        return self._release(now)

    def _release(self, now: float) -> Verdict:
        self.deadline = None
        self._confirmed = False
        if self._engaged_until is None:
            return Verdict.RESUME
        self._engaged_until = now + self._settings.partial_grace_ms / 1000
        return Verdict.KEEP if self._decided else Verdict.RESUME

    def _cancel(self) -> Verdict:
        self._decided = True
        self.deadline = None
        return Verdict.CANCEL

    def reset(self) -> None:
        """The bot's turn is over: forget the overlap."""
        self._engaged_until = self.deadline = None
        self._confirmed = self._decided = self._timed_out = False
        self._heard = PartialKind.EMPTY
