"""The words of a caller's speech over the bot: which are backchannels, which take the floor.

Sans-I/O, no imports of ours: the lists behind `orchestrator.interruption` (pause, resume or
cancel on an STT partial) and `orchestrator.backchannel` (a yes/no state's answers), and
`partial_kind`, what one partial's words say.
"""

from __future__ import annotations

import enum
import re

__all__ = ["BACKCHANNEL_TEXT", "FLOOR_WORDS", "STOP_WORDS", "PartialKind", "partial_kind", "words_of"]

# Words a listener says to show they follow or agree, not to take the floor (normalised: "е" for
# "ё"): listening tokens, acknowledgements and agreement, not hesitations ("э", "эм": the caller
# is starting to talk) nor "а" ("а?": the caller did not hear). "записываю": callers take down
# prices and addresses (added after the second held-out set's only misses, "угу, записываю").
# The one list behind the barge-in decision (`[interruption] backchannel_words`' default) and the
# yes/no states' answers.
BACKCHANNEL_TEXT = (
    "да ага угу угум мхм мгм хм ну так ясно понятно понятненько ясненько хорошо ладно ладушки "
    "ок окей конечно разумеется естественно верно точно правильно именно понял поняла слушаю "
    "отлично замечательно прекрасно записываю записал записала"
)

# Words a caller stops the bot with: never taken for the bot's echo, even where its text has them.
STOP_WORDS = "стоп нет подождите погодите стойте постойте хватит алло оператор оператора"
# Words that take the floor at once, a question or a call for attention ("сколько?", "извините",
# "не то"), where a single other word would not (see `content_words`); echo of the bot's own text
# can still have them (its echo rule applies first).
FLOOR_WORDS = (
    "извините простите секунду секундочку минуту минутку минуточку подожди погоди постой слушайте "
    "послушайте девушка мужчина повторите сколько когда где куда откуда как какой какая какое какие "
    "почему зачем что чего кто чей можно не"
)


class PartialKind(enum.Enum):
    """What a partial's words say about the speech."""

    EMPTY = "empty"
    BACKCHANNEL = "backchannel"
    CONTENT = "content"
    SHORT = "short"  # fewer than `content_words` words outside the list, none a stop/floor word
    ECHO = "echo"  # a run of the bot's own words


_WORD = re.compile(r"[а-яёa-z0-9]+")


def words_of(text: str) -> list[str]:
    """The lower-case words of `text` ("ё" kept, hyphens and punctuation split)."""
    return _WORD.findall(text.lower())


def partial_kind(
    text: str,
    backchannel: frozenset[str],
    bot: str = "",
    stop: frozenset[str] = frozenset(),
    floor: frozenset[str] = frozenset(),
    content_words: int = 1,
) -> PartialKind:
    """EMPTY (no words), BACKCHANNEL (only words of `backchannel`), ECHO (its words are a
    contiguous run of `bot`'s, the bot's own text, space-joined lower-case words, and none is in
    `stop`), SHORT (fewer than `content_words` words outside `backchannel`, none in `stop` or
    `floor` nor a number in digits: a number said over the bot is an answer or a correction) or
    CONTENT."""
    words = words_of(text)
    if not words:
        return PartialKind.EMPTY
    if all(w in backchannel for w in words):
        return PartialKind.BACKCHANNEL
    if bot and not any(w in stop for w in words) and f" {' '.join(words)} " in f" {bot} ":
        return PartialKind.ECHO
    if (
        content_words > 1
        and not any(w in stop or w in floor or w.isdigit() for w in words)
        and sum(w not in backchannel for w in words) < content_words
    ):
        return PartialKind.SHORT
    return PartialKind.CONTENT
