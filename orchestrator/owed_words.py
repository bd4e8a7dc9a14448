"""Words the STT still owes: a confirmed run over the bot, resumed with no words before the STT
had answered for its audio (`[interruption] late_words_ms`).

The STT lags the audio (seen 1.8-5.1 s under load), so such a run was not judged on its words.
`OwedRun` remembers it: its first onset and its end (s, on the decider's clock; inf while it
goes on), for `late_words_ms` after the resume or until its final. A result whose audio
reaches that onset and does not start after the run's end (`AFTER_RUN_TOLERANCE_S`;
`OwedWords.covers`) is judged as its words. `OwedRun` is the record's one owner: the
`InterruptionDecider` remembers, ends and forgets it while the bot's turn lasts; `keep` holds
a copy past the turn's end (the decider's `reset`), for `BargeIn`'s finals heard after the
turn, and that copy's open end too is closed by the caller's next run end
(`kept_run_ended`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

__all__ = ["AFTER_RUN_TOLERANCE_S", "OwedRun", "OwedWords"]

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


class OwedRun:
    """One call's owed run: the decider's while the bot's turn lasts (onset `None`: none owed),
    and the copy kept past the turn's end (`kept`). Times in s on the decider's clock."""

    __slots__ = ("_from", "_to", "_until", "kept")

    def __init__(self) -> None:
        self._from: float | None = None  # an overlap resumed unheard: its words still count
        self._until = 0.0  # ... until then
        self._to = 0.0  # ... the end of its run (inf while it goes on)
        # The owed run as it stood when the last bot turn ended (`keep`); None: none.
        self.kept: OwedWords | None = None

    def remember(self, onset: float, end: float, until: float) -> None:
        """A run resumed unheard: its words count until `until`. `onset`: its overlap's first
        onset (or an earlier overlap's, whose words are still owed too); `end`: its end (inf
        while it goes on)."""
        self._from = onset
        self._to = end
        self._until = until

    def onset(self, now: float) -> float | None:
        """The onset of the remembered overlap whose words are still owed at `now`, if any."""
        if self._from is not None and now > self._until:
            self._from = None
        return self._from

    def owed(self, now: float) -> OwedWords | None:
        """The resumed run whose words the STT still owes at `now`, if any."""
        late_from = self.onset(now)
        return None if late_from is None else OwedWords(late_from, self._to)

    def run_ended(self, now: float) -> None:
        """The caller's run ended at `now`: a remembered run still going (resumed while it went
        on) ended then."""
        if self._from is not None and self._to == math.inf:
            self._to = now

    def heard(self) -> None:
        """The STT gave its verdict on the run (a final): nothing is owed any more."""
        self._from = None

    def keep(self, now: float) -> None:
        """The bot's turn ends at `now`: keep the run owed then (None if none) past `forget`."""
        self.kept = self.owed(now)

    def kept_run_ended(self, now: Callable[[], float]) -> None:
        """The caller's run ended at clock time `now()`: if the kept run was still going, this
        is its end. (A callable: most runs end with nothing kept; the clock is read only if needed.)"""
        kept = self.kept
        if kept is not None and kept.end == math.inf:
            self.kept = dataclasses.replace(kept, end=now())

    def forget(self) -> None:
        """The bot's turn is over: the decider owes nothing (the kept copy stays)."""
        self._from = None
