"""Typed entity values beyond plain numbers and strings.

What the caller said is not always one exact value. The extractors report the other shapes as
such, so the flow can ask again instead of acting on a guess (a wrong price is the worst bug):
- `Range(low, high)`: "восемьдесят-девяносто", "от 80 до 90", "с десяти до двенадцати";
- `Approximate(value, kind)`: "около ста" (kind "about"), "сто с хвостиком" / "больше ста"
  ("over": the true value is above `value`), "не больше ста" ("under"), "к обеду" (a time);
- `SaidTime`: a time of day as said ("в половине третьего": 2:30 with no "дня"), turned into a
  `datetime.time` by `resolve` with the map's business hours;
- `SaidDate`: a date as said ("двадцать пятого", "в следующую пятницу"), turned into a
  `datetime.date` by `resolve` against the call's date in the map's time zone.
- `Unreadable`: the caller said something for the entity that could not be read as one value
  ("сто сорокк метров", "двести эээ пятьдесят"); it resolves to None, so the entity is missing
  even when the session holds an older value (the caller meant a new one).
Exact numbers stay `int`/`float` and digit strings stay `str`, so templates and `set_variables`
arithmetic use them as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
Number = int | float
ApproxKind = Literal["about", "over", "under"]
Period = Literal["am", "pm", "night"]


@dataclass(frozen=True, slots=True)
class Range(Generic[T]):
    """Two values said as a span ("80-90"); `low` is said first and is below `high`."""

    low: T
    high: T


@dataclass(frozen=True, slots=True)
class Approximate(Generic[T]):
    """A value said with a hedge: about it, somewhat over it, or at most it."""

    value: T
    kind: ApproxKind = "about"


@dataclass(frozen=True, slots=True)
class SaidTime:
    """A time of day as said: `hour` 0..24, `minute` 0..59, `period` if the caller named one.

    "в половине третьего" is SaidTime(2, 30, None): 2:30 or 14:30, settled by business hours;
    with `h24` (a leading zero or "ноль ноль") the hour is taken as said, never flipped.
    """

    hour: int
    minute: int = 0
    period: Period | None = None
    h24: bool = False  # said as a 24-hour clock ("08:00", "в 08 00", "в восемь ноль ноль")


@dataclass(frozen=True, slots=True)
class SaidDate:
    """A date as said, relative to the call's date; exactly one way of naming it is set.

    - `offset_days`: "сегодня" 0, "завтра" 1, "послезавтра" 2, "через неделю" 7;
    - `weekday` 0 (Monday) .. 6 with `week` "this" (the coming one, never today), "next" (in the
      next calendar week: "в следующую пятницу"), "past" (in the previous calendar week: "в
      прошлую пятницу");
    - `day` 1..31 with optional `month` 1..12 and `year`: the next such date from the call's day
      (see `dates.resolve_date` for dates just passed).
    """

    offset_days: int | None = None
    weekday: int | None = None
    week: Literal["this", "next", "past"] = "this"
    day: int | None = None
    month: int | None = None
    year: int | None = None


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A phrase for the entity that was heard but not understood (never a fragment of it)."""


UNREADABLE = Unreadable()
