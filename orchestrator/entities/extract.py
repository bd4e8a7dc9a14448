"""Entities of a map: what the caller said (`extract_*`) and what it means on this call (`resolve_*`).

Two steps, because the words alone do not fix every value:
1. `extract_entities(text, names, specs)` reads the words: numbers (`int`/`float`), digit
   strings and choices (`str`), regex matches (`str`), times (`SaidTime`), dates (`SaidDate`),
   or the shapes that need a question back (`Range`, `Approximate`, `Unreadable` for a phrase
   heard but not understood, kept so it blocks an older value). It runs once per STT
   final, in the classifier, and needs no clock.
2. `resolve_entities(dialogue_map, entities, context)` turns them into the values the session
   keeps: times with the map's business hours, dates against the call's date in the map's time
   zone; a range, a hedge the entity does not accept, a past date or an impossible one resolve to
   None, which the FlowEngine treats as missing (the intent's clarify playlist asks again).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from orchestrator.dialogue_map.models import (
    ChoiceEntity,
    DateEntity,
    DialogueMap,
    DigitsEntity,
    EntitySpec,
    NumberEntity,
    RegexEntity,
    TimeEntity,
)
from orchestrator.entities.choices import choice_heard, read_choice
from orchestrator.entities.dates import date_mentions, extract_date, resolve_date
from orchestrator.entities.digits import digit_strings, extract_digits
from orchestrator.entities.morph import tokens
from orchestrator.entities.numbers import extract_number, number_heard
from orchestrator.entities.times import extract_time, resolve_time, time_mentions
from orchestrator.entities.values import UNREADABLE, Approximate, Range, SaidDate, SaidTime


def extract_choice(text: str, spec: ChoiceEntity) -> str | None:
    """The value whose stem occurs earliest in `text` (at a word start), or None.

    Kept for callers that want the first value named; an entity's value is `read_choice`'s
    (corrections, "не", two values -> missing).
    """
    norm = " " + " ".join(t.text for t in tokens(text) if t.kind == "word" or t.kind == "int") + " "
    best: tuple[int, str] | None = None
    for value, stems in spec.values.items():
        for stem in stems:
            s = stem.lower().replace("ё", "е").strip()
            if not s:
                continue
            pos = norm.find(" " + s)
            if pos >= 0 and (best is None or pos < best[0]):
                best = (pos, value)
    return None if best is None else best[1]


def extract_regex(text: str, spec: RegexEntity) -> str | None:
    """Group 1 (or the whole match) of the first match, or None."""
    m = re.search(spec.pattern, text)
    if m is None:
        return None
    return m.group(1) if m.re.groups else m.group(0)


def _read(text: str, spec: EntitySpec) -> Any:
    if isinstance(spec, NumberEntity):
        return extract_number(text, spec)
    if isinstance(spec, ChoiceEntity):
        return read_choice(text, spec)
    if isinstance(spec, TimeEntity):
        return extract_time(text)
    if isinstance(spec, DateEntity):
        return extract_date(text)
    if isinstance(spec, DigitsEntity):
        return extract_digits(text, spec)
    return extract_regex(text, spec)


def _heard(text: str, spec: EntitySpec) -> bool:
    """Whether `text` has a phrase of the entity's kind that did not give one value."""
    if isinstance(spec, NumberEntity):
        return number_heard(text, spec)
    if isinstance(spec, TimeEntity):
        return bool(time_mentions(tokens(text)))
    if isinstance(spec, DateEntity):
        return bool(date_mentions(tokens(text)))
    if isinstance(spec, DigitsEntity):
        return any(r is None or spec.min_length <= len(r) <= spec.max_length for r in digit_strings(text))
    if isinstance(spec, ChoiceEntity):
        return choice_heard(text, spec)
    return False


def extract_entity(text: str, spec: EntitySpec) -> Any:
    """What the caller said for this entity in `text` (see the module docstring), or None if
    nothing; `UNREADABLE` if a phrase for it was heard but gave no one value."""
    value = _read(text, spec)
    if value is None and _heard(text, spec):
        return UNREADABLE
    return value


def extract_entities(text: str, names: list[str], specs: Mapping[str, EntitySpec]) -> dict[str, Any]:
    """The named entities found in `text` (absent ones left out)."""
    found: dict[str, Any] = {}
    for name in names:
        spec = specs.get(name)
        if spec is None:
            continue
        value = extract_entity(text, spec)
        if value is not None:
            found[name] = value
    return found


@dataclass(frozen=True, slots=True)
class ResolveContext:
    """What resolution needs from the call and the map: the call's date, business hours (minutes)."""

    today: date
    open_min: int = 9 * 60
    close_min: int = 21 * 60


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def context_for(dialogue_map: DialogueMap, now: datetime | None = None) -> ResolveContext:
    """The context of a turn at `now` (aware; default: the system clock) in the map's time zone."""
    s = dialogue_map.settings
    moment = (now or datetime.now(UTC)).astimezone(ZoneInfo(s.time_zone))
    return ResolveContext(moment.date(), _minutes(s.business_hours.open), _minutes(s.business_hours.close))


def resolve_value(spec: EntitySpec, value: Any, ctx: ResolveContext) -> Any:
    """The session value of an extracted `value` (see the module docstring), or None (missing)."""
    accept = getattr(spec, "approximate", "clarify") == "accept"
    if isinstance(value, Range):
        return None
    if isinstance(value, Approximate):
        if not accept or value.kind != "about":
            return None
        value = value.value
    if isinstance(value, SaidTime):
        return resolve_time(value, ctx.open_min, ctx.close_min)
    if isinstance(value, SaidDate):
        d = resolve_date(value, ctx.today, allow_past=isinstance(spec, DateEntity) and spec.allow_past)
        if d is None or not isinstance(spec, DateEntity):
            return d
        if d < ctx.today and not spec.allow_past:
            return None
        if spec.max_days_ahead is not None and d > ctx.today + timedelta(days=spec.max_days_ahead):
            return None
        return d
    if isinstance(value, date | time | int | float | str):
        return value
    return None


def resolve_entities(
    dialogue_map: DialogueMap, entities: Mapping[str, Any], ctx: ResolveContext
) -> dict[str, Any]:
    """Each extracted entity's session value; None for those that resolve to nothing."""
    out: dict[str, Any] = {}
    for name, value in entities.items():
        spec = dialogue_map.entities.get(name)
        if value is None:
            continue
        out[name] = value if spec is None else resolve_value(spec, value, ctx)
    return out
