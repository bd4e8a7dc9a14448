"""STT partials for the turn-taking bench, modelled from the corpus's transcripts with timing.

A streaming recogniser (SpeechKit's partials) shows a word some time after it is spoken. The model:
the caller's words (`TurnItem.text`, split at spaces and hyphens: "да-да" is two words) share the
utterance's duration (`meta["speech_s"]`, the synthesised audio's length) in proportion to their
letters; partial k (the first k words) arrives `latency_s` after word k ends. Coughs, clicks and
noise give no partials. The bot's own echo, when loud (`ECHO_HEARD_DB` or louder), is recognised
as the bot's words (`echo_partials`: the same model over the bot's text and speech, on the
timeline of an unpaused bot).
"""

from __future__ import annotations

import re

from bench.turn_corpus import TurnItem

__all__ = ["ECHO_HEARD_DB", "STT_LATENCY_S", "echo_partials", "partials"]

# Word end -> its partial, s: SpeechKit streaming shows words about 0.2-0.4 s after they end.
STT_LATENCY_S = 0.3
# Echo this loud (dB under the bot) or louder is recognised as the bot's words.
ECHO_HEARD_DB = -12.0

_WORD = re.compile(r"[^\s\-,.?!]+")


def _timed(text: str, start: float, duration: float, latency_s: float) -> list[tuple[float, str]]:
    words = _WORD.findall(text)
    letters = sum(len(w) for w in words)
    if not words or duration <= 0 or letters == 0:
        return []
    out = []
    spoken = 0
    for k, word in enumerate(words, 1):
        spoken += len(word)
        end = start + duration * spoken / letters
        out.append((end + latency_s, " ".join(words[:k])))
    return out


def partials(item: TurnItem, latency_s: float = STT_LATENCY_S) -> list[tuple[float, str]]:
    """(arrival s into the item, partial text), in time order; [] for items with no words."""
    if item.category not in ("interruption", "backchannel") or item.onset_s is None:
        return []
    return _timed(item.text, item.onset_s, float(item.meta.get("speech_s", 0.0)), latency_s)


def echo_partials(item: TurnItem, latency_s: float = STT_LATENCY_S) -> list[tuple[float, str]]:
    """The bot's words recognised from its loud echo (`ECHO_HEARD_DB`), as `partials`; []
    for quieter echo or items without `meta["bot_text"]`."""
    text = str(item.meta.get("bot_text", ""))
    if item.echo_db < ECHO_HEARD_DB or not text:
        return []
    return _timed(text, item.echo_delay_ms / 1000, item.bot_end_s, latency_s)
