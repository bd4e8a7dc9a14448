"""What the interruption decision knows of the call: its STT (whether it is known to work, how
far into the caller's audio its results reach) and the bot's words (what its echo would say).

The STT is known to work for `[interruption] stt_known_s` after it last gave words (any result,
taken or dropped: `words`), or after its service last answered the call's recognition
(`answered`: a status, an empty partial; `RecognitionStream.answered_at`). A stall
(`stt_lost`) forgets it at once, and until its next words its service's answers do not count
(it answers but does not hear the caller). `heard_to` is where its results reach on the
decider's clock: a result's audio end when its timing is known, else its arrival; without
timed results, an answer counts as a result at its arrival. Times in s, any monotonic origin.

A partial made of a run of what the bot is saying now or just said (`bot_says`) is its echo,
unless it has a stop word; `kind` tells what a text's words are by the call's lists
(`orchestrator.overlap_words.partial_kind`). `CallKnowledge` is the base of
`orchestrator.interruption.InterruptionDecider`.
"""

from __future__ import annotations

from orchestrator.interruption_settings import InterruptionSettings
from orchestrator.overlap_words import PartialKind, partial_kind, words_of

__all__ = ["CallKnowledge"]


class CallKnowledge:
    """One call's knowledge of its STT and the bot's words, by `settings` (`stt_known_s`, the
    word lists, `content_words`)."""

    __slots__ = (
        "_answered_at",
        "_backchannel",
        "_bot",
        "_content_words",
        "_floor",
        "_heard_to",
        "_known_s",
        "_lost",
        "_stop",
        "_timed",
        "_trust_answers",
        "_words_at",
    )

    def __init__(self, settings: InterruptionSettings) -> None:
        self._known_s = settings.stt_known_s
        self._backchannel = frozenset(words_of(settings.backchannel_words))
        self._stop = frozenset(words_of(settings.stop_words))
        self._floor = frozenset(words_of(settings.floor_words))
        self._content_words = settings.content_words
        self._bot = ""  # the bot's words now and just before, space-joined
        self._words_at: float | None = None  # when the STT last gave words
        self._lost = False  # the STT stalled (not merely silent since the call began)
        self._answered_at: float | None = None  # when its service last answered (words or not)
        self._trust_answers = True  # False from a stall to the STT's next words
        self._heard_to: float | None = None  # the STT's results reach the audio up to here
        self._timed = False  # a result carried its audio's timing (then answers alone do not count)

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
        known_s = self._known_s
        at = self._words_at
        if at is not None and now - at <= known_s:
            return True
        answered = self._answered_at
        return self._trust_answers and answered is not None and now - answered <= known_s

    @property
    def stalled(self) -> bool:
        """Whether the STT stalled on this call (`stt_lost`), not merely silent since it began."""
        return self._lost

    def heard_to(self) -> float | None:
        """Where the STT's results (or, without timed results, its service's answers) reach on
        the clock, s; None: nothing yet."""
        heard_to = self._heard_to
        answered = self._answered_at
        if not self._timed and answered is not None and (heard_to is None or answered > heard_to):
            heard_to = answered  # no timing: an answer is as good as a result at its arrival
        return heard_to

    def bot_says(self, text: str) -> None:
        """The bot starts saying `text`: partials made of a run of its words (with the previous
        text's) are its echo."""
        previous = self._bot.split()[-30:]  # the end of what it said before, still echoing
        self._bot = " ".join([*previous, *words_of(text)])

    def kind(self, text: str) -> PartialKind:
        """What `text`'s words say by this decider's lists (no state changes)."""
        return partial_kind(text, self._backchannel, self._bot, self._stop, self._floor, self._content_words)
