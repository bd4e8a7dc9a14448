"""The pause/cancel decision's settings (section `[interruption]`): `InterruptionSettings`.

What each bound does is told field by field below; the decision that reads them is
`orchestrator.interruption.InterruptionDecider` (its module docstring tells the whole of it).
"""

from __future__ import annotations

from typing import Annotated

import pydantic.dataclasses
from pydantic import ConfigDict, Field

from orchestrator.overlap_words import BACKCHANNEL_TEXT, FLOOR_WORDS, STOP_WORDS

__all__ = ["InterruptionSettings"]


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
