"""Entity extraction for the classifier: the `orchestrator.entities` package, re-exported.

Kept so `from orchestrator.intents.entities import extract_entities, NUMBER_WORDS` goes on
working; the grammars live in `orchestrator/entities/` (numbers, times, dates, digit strings).
"""

from __future__ import annotations

from orchestrator.entities.extract import (
    extract_choice,
    extract_entities,
    extract_entity,
    extract_regex,
)
from orchestrator.entities.morph import NUMBER_WORDS
from orchestrator.entities.numbers import extract_number, iter_numbers

__all__ = [
    "NUMBER_WORDS",
    "extract_choice",
    "extract_entities",
    "extract_entity",
    "extract_number",
    "extract_regex",
    "iter_numbers",
]
