"""`OwedRun`'s copy kept past the bot's turn (orchestrator/owed_words.py): its open end is closed
by the caller's next run end, and the clock is read only for that (most run ends, with nothing
kept, cost no clock read)."""

from __future__ import annotations

import math

from orchestrator.owed_words import OwedRun, OwedWords


def test_kept_run_ended_closes_the_kept_run_reading_the_clock_only_then() -> None:
    run = OwedRun()
    reads: list[float] = []

    def now() -> float:
        reads.append(5.0)
        return 5.0

    run.kept_run_ended(now)
    assert run.kept is None and reads == []  # nothing kept: no read
    run.remember(1.0, math.inf, until=10.0)  # a run resumed while it went on
    run.keep(2.0)
    run.forget()  # the decider's reset: the kept copy stays
    assert run.kept == OwedWords(1.0, math.inf)
    run.kept_run_ended(now)
    assert run.kept == OwedWords(1.0, 5.0) and len(reads) == 1
    run.kept_run_ended(now)  # already closed: neither moved nor read
    assert run.kept == OwedWords(1.0, 5.0) and len(reads) == 1
