"""STT partials for the turn-taking bench, modelled from the corpus's transcripts with timing.

A streaming recogniser (SpeechKit's partials) shows a word some time after it is spoken. The model:
the caller's words (`TurnItem.text`, split at spaces and hyphens: "да-да" is two words) share the
utterance's duration (`meta["speech_s"]`, the synthesised audio's length) in proportion to their
letters; partial k (the first k words) arrives `latency_s` after word k ends. Only the caller's
speech is recognised: coughs, clicks, noise and the bot's echo give no partials (a real STT may
turn loud echo into the bot's words: not modelled here).
"""

from __future__ import annotations

import re

from bench.turn_corpus import TurnItem

__all__ = ["STT_LATENCY_S", "partials"]

# Word end -> its partial, s: SpeechKit streaming shows words about 0.2-0.4 s after they end.
STT_LATENCY_S = 0.3

_WORD = re.compile(r"[^\s\-,.?!]+")


def partials(item: TurnItem, latency_s: float = STT_LATENCY_S) -> list[tuple[float, str]]:
    """(arrival s into the item, partial text), in time order; [] for items with no words."""
    if item.category not in ("interruption", "backchannel") or item.onset_s is None:
        return []
    words = _WORD.findall(item.text)
    duration = float(item.meta.get("speech_s", 0.0))
    letters = sum(len(w) for w in words)
    if not words or duration <= 0 or letters == 0:
        return []
    out = []
    spoken = 0
    for k, word in enumerate(words, 1):
        spoken += len(word)
        end = item.onset_s + duration * spoken / letters
        out.append((end + latency_s, " ".join(words[:k])))
    return out
