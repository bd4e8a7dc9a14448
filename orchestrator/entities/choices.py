"""Choices said by callers ("к хирургу", "в среду"): one value of a choice entity, or none.

Each value of a choice entity has stems that match at a word start. What the caller said is
read like a number phrase (`numbers`): after a correction ("ой нет", "вернее", "то есть") only
the stems after it count; a stem right after "не" ("не к терапевту") is a value ruled out; if
what is left names two different values ("к терапевту или к хирургу") the entity is missing.
A phrase that names a value but gives none is heard (`choice_heard`), so it is `Unreadable`,
never the older value.
"""

from __future__ import annotations

from orchestrator.dialogue_map.models import ChoiceEntity
from orchestrator.entities.morph import tokens
from orchestrator.entities.numbers import correction_points


def _hits(text: str, spec: ChoiceEntity) -> tuple[list[str], list[tuple[int, str]]]:
    """The words of `text` and every (word index, value) whose stem starts at that word."""
    toks = [t for t in tokens(text) if t.kind in ("word", "int")]
    words = [t.text for t in toks]
    norm = " " + " ".join(words) + " "
    hits: set[tuple[int, str]] = set()
    for value, stems in spec.values.items():
        for stem in stems:
            s = stem.lower().replace("ё", "е").strip()
            pos = norm.find(" " + s) if s else -1
            while pos >= 0:
                hits.add((norm[: pos + 1].count(" ") - 1, value))
                pos = norm.find(" " + s, pos + 1)
    return words, sorted(hits)


def _negated(words: list[str], k: int) -> bool:
    """ "не" right before word `k`, or before a short preposition before it ("не к хирургу")."""
    return (k >= 1 and words[k - 1] == "не") or (k >= 2 and words[k - 2] == "не" and len(words[k - 1]) <= 2)


def read_choice(text: str, spec: ChoiceEntity) -> str | None:
    """The one value the caller chose in `text` (see the module docstring), or None."""
    words, hits = _hits(text, spec)
    fixes = correction_points(words)
    later = [k for k in fixes if any(h > k for h, _ in hits)]
    if later:
        hits = [(h, v) for h, v in hits if h > max(later)]
    values = {v for h, v in hits if not _negated(words, h)}
    return values.pop() if len(values) == 1 else None


def choice_heard(text: str, spec: ChoiceEntity) -> bool:
    """Whether `text` names any value of the entity (chosen, ruled out or one of several)."""
    return bool(_hits(text, spec)[1])
