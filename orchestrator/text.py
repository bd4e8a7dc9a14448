"""Text facts every layer shares: normalisation for matching, and the one sentence splitter.

The splitter serves synthesis (utterances cut at sentence ends), the LLM safety gate and the
streaming paths (complete sentences taken off a growing buffer); Russian punctuation included.
"""

from __future__ import annotations

import re

_NON_WORD = re.compile(r"[^\w\s]|_", re.UNICODE)
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower-case, ё -> е, punctuation to spaces, spaces collapsed."""
    text = text.lower().replace("ё", "е")
    text = _NON_WORD.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


# A sentence ends at . ! ? … (possibly repeated, possibly followed by a closing quote or bracket)
# followed by whitespace.
_SENTENCE_END = re.compile(r"[.!?…]+[\"»)\]]*\s+")


def split_sentences(text: str) -> list[str]:
    """Split `text` into sentences, keeping their punctuation; blank pieces are dropped."""
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        out.append(text[start : m.end()].strip())
        start = m.end()
    out.append(text[start:].strip())
    return [p for p in out if p]


def complete_sentences_end(text: str) -> int:
    """Length of the run of complete sentences at the start of `text` (0 when none is complete).

    A sentence is complete once whitespace follows its final punctuation; the whitespace after
    the last one is included, so `text[:n]` / `text[n:]` cut between sentences.
    """
    last = None
    for m in _SENTENCE_END.finditer(text):
        last = m
    return 0 if last is None else last.end()


def take_complete_sentences(buffer: str) -> tuple[list[str], str]:
    """Split off the complete sentences at the start of `buffer`; returns (sentences, remainder).

    A sentence is complete once whitespace follows its final punctuation, so "т. е." mid-stream
    is not cut before more text shows whether the sentence goes on.
    """
    end = complete_sentences_end(buffer)
    if not end:
        return [], buffer
    return split_sentences(buffer[:end]), buffer[end:]


def chunk_text(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut at sentence ends, else at spaces, else hard."""
    pieces: list[str] = []
    current = ""
    for sentence in split_sentences(text) or [text.strip()]:
        while len(sentence) > limit:
            cut = sentence.rfind(" ", 0, limit + 1)
            cut = cut if cut > 0 else limit
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if not sentence:
            continue
        if current and len(current) + 1 + len(sentence) > limit:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        pieces.append(current)
    return [p for p in pieces if p]
