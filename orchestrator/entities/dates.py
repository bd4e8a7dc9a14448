"""Dates said by callers, and their resolution against the call's date.

Read (`extract_date`), as `SaidDate`:
- "сегодня", "завтра", "послезавтра" (or "после завтра"), "через три дня", "через пару дней",
  "через неделю";
- weekdays: "в пятницу" (the coming one, never today), "в эту пятницу", "в ближайшую пятницу",
  "в следующую пятницу" / "в пятницу на следующей неделе" (in the next calendar week);
- days of the month, said as ordinals ("двадцать пятого", "на двадцать первое", "25-го", "на 25е",
  "к 25му", "первого числа") or with a month ("15 июля", "пятнадцатого июля", "15.07", "15.07.2026");
- spans: "на выходных", "в будни" / "в любой будний день", "на следующей неделе" -> `Range` (the
  map asks which day).
"вчера" and past weekdays ("в прошлую пятницу": Friday of the previous calendar week) are read,
and missing unless the entity allows past dates. Two different dates in one phrase are missing.

Resolved (`resolve_date`) to a `datetime.date` from the call's date: a day of the month without a
month is the next such day (today included; "тридцать первого" in June is July 31), or this
month's passed one when the entity allows past dates; a date without a year is the next such
date, unless it passed within the last month ("25 декабря" on December 30): then it is that past
date, and missing unless the entity allows past dates.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from orchestrator.entities.integers import parse_integer
from orchestrator.entities.morph import Token, analyzer, lemma_of, lemmas_of, tokens
from orchestrator.entities.values import Range, SaidDate

DateValue = SaidDate | Range[SaidDate]

_OFFSETS = {"сегодня": 0, "завтра": 1, "послезавтра": 2, "вчера": -1, "позавчера": -2}
_CLOCK_WORDS = frozenset({"пол", "половина", "четверть", "минута"})
_WEEKDAYS = ["понедельник", "вторник", "среда", "четверг", "пятница", "суббота", "воскресенье"]
_MONTHS = ["январь", "февраль", "март", "апрель", "май", "июнь", "июль", "август", "сентябрь",
           "октябрь", "ноябрь", "декабрь"]  # fmt: skip


@dataclass(frozen=True, slots=True)
class DateMention:
    """One date phrase: tokens [start, end) and its value (None: no such date)."""

    start: int
    end: int
    value: DateValue | None


def _text(toks: list[Token], i: int) -> str:
    return toks[i].text if 0 <= i < len(toks) else ""


def _lemma(toks: list[Token], i: int) -> str:
    return lemma_of(toks[i].text) if 0 <= i < len(toks) and toks[i].kind == "word" else ""


def _month_at(toks: list[Token], i: int) -> int | None:
    lemma = _lemma(toks, i)
    return _MONTHS.index(lemma) + 1 if lemma in _MONTHS else None


_PART_OF_DAY_FORMS = frozenset({"утром", "днем", "вечером", "ночью"})


def _counted_noun(toks: list[Token], i: int) -> bool:
    """Whether token `i` is a noun an ordinal before it would count ("второй день")."""
    if i >= len(toks) or toks[i].kind != "word" or toks[i].text in _PART_OF_DAY_FORMS:
        return False
    return "NOUN" in analyzer().parse(toks[i].text)[0].tag


def _week_words(toks: list[Token], i: int, j: int) -> Literal["this", "next", "past"]:
    """'next', 'this' or 'past' from the words around a weekday at [i, j)."""
    around = {_lemma(toks, i - 1), _lemma(toks, i - 2)}
    around |= {x for k in (i - 1, i - 2) if k >= 0 for x in lemmas_of(_text(toks, k))}  # "прошлое"
    if _text(toks, j) == "на" and _lemma(toks, j + 2) == "неделя":  # "в пятницу на следующей неделе"
        around.add(_lemma(toks, j + 1))
    if "следующий" in around:
        return "next"
    if "прошлый" in around:
        return "past"
    return "this"


def _numeric(toks: list[Token], i: int) -> DateMention | None:
    """'15.07' or '15.07.2026'."""
    t = toks[i]
    if t.kind != "dec" or "." not in t.text:
        return None
    d, m = (int(x) for x in t.text.split("."))
    year, end = None, i + 1
    if _text(toks, end) == "." and end + 1 < len(toks) and toks[end + 1].kind == "int":
        y = int(toks[end + 1].text)
        year, end = (y + 2000 if y < 100 else y), end + 2
    return DateMention(i, end, SaidDate(day=d, month=m, year=year) if 1 <= m <= 12 else None)


def _one(toks: list[Token], i: int) -> DateMention | None:  # noqa: PLR0911
    """The date phrase starting at token `i`, or None."""
    t = _text(toks, i)
    if t in _OFFSETS:
        return DateMention(i, i + 1, SaidDate(offset_days=_OFFSETS[t]))
    if t == "после" and _text(toks, i + 1) == "завтра":
        return DateMention(i, i + 2, SaidDate(offset_days=2))
    if t == "через":
        n = parse_integer(toks, i + 1)
        count, j = (1, i + 1) if n is None else (int(n.value), n.end)
        if n is None and _lemma(toks, i + 1) == "пара":  # "через пару дней"
            count, j = 2, i + 2
        unit = _lemma(toks, j)
        if unit in ("день", "сутки", "неделя") and (n is None or n.value == int(n.value)):
            return DateMention(i, j + 1, SaidDate(offset_days=count * (7 if unit == "неделя" else 1)))
        return None
    lemmas = lemmas_of(t) if toks[i].kind == "word" else frozenset()
    wd = next((k for k, w in enumerate(_WEEKDAYS) if w in lemmas), None)
    if wd is not None:
        week = _week_words(toks, i, i + 1)
        end = i + 4 if _text(toks, i + 1) == "на" and _lemma(toks, i + 3) == "неделя" else i + 1
        return DateMention(i, end, SaidDate(weekday=wd, week=week))
    if "выходной" in lemmas and _text(toks, i - 1) in ("в", "на"):
        return DateMention(i, i + 1, Range(SaidDate(weekday=5), SaidDate(weekday=6)))
    if lemmas & {"будний", "будни"}:  # "в будни", "по будням", "в любой будний день"
        start = i - 1 if "любой" in lemmas_of(_text(toks, i - 1)) else i
        end = i + 2 if _lemma(toks, i + 1) == "день" else i + 1
        return DateMention(start, end, Range(SaidDate(weekday=0), SaidDate(weekday=4)))
    if "неделя" in lemmas and "следующий" in lemmas_of(_text(toks, i - 1)):
        return DateMention(
            i - 1, i + 1, Range(SaidDate(weekday=0, week="next"), SaidDate(weekday=6, week="next"))
        )
    num = _numeric(toks, i)
    if num is not None:
        return num
    r = parse_integer(toks, i)
    if r is None or r.bad or r.value != int(r.value):
        return None
    if _lemma(toks, i - 1) in _CLOCK_WORDS or _text(toks, i - 1) == "-" and _text(toks, i - 2) == "пол":
        return None  # "в половине двенадцатого", "пол-третьего": a time
    month = _month_at(toks, r.end)
    after = _lemma(toks, r.end)
    if after == "год" or not (r.ordinal or month is not None or after == "число"):  # "в 25ом году"
        return None
    if month is None and after != "число" and _counted_noun(toks, r.end):
        return None  # "второй день", "третий этаж": an ordinal of something else
    day, end = int(r.value), r.end + (month is not None or after == "число")
    year = None
    if month is not None and end < len(toks) and toks[end].kind == "int" and len(toks[end].text) == 4:
        year, end = int(toks[end].text), end + 1 + (_lemma(toks, end + 1) == "год")
    if not 1 <= day <= 31:
        return DateMention(i, end, None)
    return DateMention(i, end, SaidDate(day=day, month=month, year=year))


def date_mentions(toks: list[Token]) -> list[DateMention]:
    """Every date phrase of `toks`, in order."""
    out: list[DateMention] = []
    i = 0
    while i < len(toks):
        m = _one(toks, i)
        if m is None:
            i += 1
            continue
        out.append(m)
        i = max(m.end, i + 1)
    return out


def extract_date(text: str) -> DateValue | None:
    """The one date said in `text` (see the module docstring), or None."""
    values = {m.value for m in date_mentions(tokens(text))}
    return values.pop() if len(values) == 1 else None


_RECENT = 31  # days: "25 декабря" said on December 30 is that past date, not next year's


def _day_in(year: int, month: int, day: int) -> date | None:
    return date(year, month, day) if day <= calendar.monthrange(year, month)[1] else None


def resolve_date(said: SaidDate, today: date, *, allow_past: bool = False) -> date | None:
    """`said` as a calendar date, counted from `today` (the call's date in the map's time zone).

    A weekday of the past week is that day of the previous calendar week. A day and month that
    passed less than `_RECENT` days ago is that past date (so the entity's `allow_past` decides,
    never a date a year ahead); longer ago it is next year's. A day of the month alone is the
    next such day, or this month's passed one when `allow_past`.
    """
    if said.offset_days is not None:
        return today + timedelta(days=said.offset_days)
    if said.weekday is not None:
        monday = today - timedelta(days=today.weekday())
        if said.week in ("next", "past"):
            return monday + timedelta(days=(7 if said.week == "next" else -7) + said.weekday)
        return today + timedelta(days=(said.weekday - today.weekday()) % 7 or 7)
    if said.day is None:
        return None
    if said.month is not None:
        if said.year is not None:
            return _day_in(said.year, said.month, said.day)
        this_year = _day_in(today.year, said.month, said.day)
        if this_year is not None and (this_year >= today or (today - this_year).days < _RECENT):
            return this_year
        return _day_in(today.year + 1, said.month, said.day)
    if allow_past:
        this_month = _day_in(today.year, today.month, said.day)
        if this_month is not None:
            return this_month
    year, month = today.year, today.month
    for _ in range(13):  # the next month that has this day
        d = _day_in(year, month, said.day)
        if d is not None and d >= today:
            return d
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return None
