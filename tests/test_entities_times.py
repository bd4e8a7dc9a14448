"""Times of day as callers say them, resolved with business hours 09:00-21:00 (the dental map's).

Each row: a phrase and the time it means, or missing (None), or a hedge/range reported as such.
"""

from __future__ import annotations

from datetime import date, time

import pytest

from orchestrator.dialogue_map.models import TimeEntity
from orchestrator.entities.extract import ResolveContext, resolve_value
from orchestrator.entities.times import TimeValue, extract_time
from orchestrator.entities.values import Approximate, Range, SaidTime

CTX = ResolveContext(today=date(2025, 6, 11), open_min=9 * 60, close_min=21 * 60)
SPEC = TimeEntity(type="time")
MISSING = None
RANGE = "range"
ABOUT = "about"
OVER = "over"

ROWS: list[tuple[str, time | str | None]] = [
    ("в десять тридцать", time(10, 30)), ("в 10 30", time(10, 30)), ("в 10:30", time(10, 30)),
    ("в 10.30", time(10, 30)), ("в половине третьего", time(14, 30)), ("полдесятого", time(9, 30)),
    ("без пятнадцати три", time(14, 45)), ("к обеду", ABOUT), ("в три", time(15, 0)),
    ("в час дня", time(13, 0)), ("в час", time(13, 0)), ("в час тридцать", time(13, 30)),
    ("в полдень", time(12, 0)), ("в восемь вечера", time(20, 0)),
    ("в десять часов тридцать минут", time(10, 30)), ("в четверть одиннадцатого", time(10, 15)),
    ("десять минут третьего", time(14, 10)), ("без четверти девять", time(20, 45)),
    ("без десяти пять", time(16, 50)), ("без пяти двенадцать", time(11, 55)),
    ("в десять ноль пять", time(10, 5)), ("в 10 05", time(10, 5)), ("пол третьего", time(14, 30)),
    ("пол-третьего", time(14, 30)), ("полпервого", time(12, 30)), ("в полдвенадцатого", time(11, 30)),
    ("в двадцать один тридцать", time(21, 30)), ("в 7 30", time(19, 30)),
    ("давайте на 15:00", time(15, 0)), ("можно в 18:00", time(18, 0)), ("удобно к 9:00", time(9, 0)),
    ("в 9", time(9, 0)), ("в девять утра", time(9, 0)), ("в десять ночи", time(22, 0)),
    ("в пятнадцать часов", time(15, 0)), ("в 14", time(14, 0)), ("в восемнадцать тридцать", time(18, 30)),
    ("в шесть вечера", time(18, 0)), ("в 6 вечера", time(18, 0)), ("в одиннадцать сорок пять", time(11, 45)),
    ("в двенадцать", time(12, 0)), ("в полночь", time(0, 0)), ("в восемь", time(20, 0)),
    ("давайте в десять пятнадцать", time(10, 15)), ("часов в пять", time(17, 0)),
    ("в пять утра", time(5, 0)), ("в семь тридцать вечера", time(19, 30)),
    ("в десять тридцать утра", time(10, 30)),
    # a time with other words after it, a shift before it, "не-не" before it
    ("полпятого нормально", time(16, 30)), ("в пять нормально", time(17, 0)),
    ("в десять тридцать подойдёт", time(10, 30)), ("на час позже в 12", time(12, 0)),
    ("а можно на два часа раньше, в девять", time(9, 0)), ("на полчаса позже, в пол двенадцатого", time(11, 30)),
    ("не-не на полседьмого", time(18, 30)), ("нет, нет, на полседьмого", time(18, 30)),
    ("на час позже", MISSING), ("на два часа раньше", MISSING),
    # a rough duration is no time of day (fifth intent tuning)
    ("а если я опоздаю минут на 10", MISSING), ("задержусь минут на пятнадцать", MISSING),
    ("опоздаю минут на десять, в 11 буду", time(11, 0)),
    # hedges and spans: the map asks again
    ("около трёх", ABOUT), ("утром", ABOUT), ("вечером", ABOUT), ("после обеда", OVER),
    ("в обед", ABOUT), ("с десяти до двенадцати", RANGE), ("между двумя и тремя", RANGE),
    # no time anyone can book
    ("в 25:00", MISSING), ("в десять семьдесят", MISSING), ("через пятнадцать минут", MISSING),
    ("в десять или в одиннадцать", MISSING), ("двадцать пятого числа", MISSING),
    ("восемь пять", MISSING), ("когда удобно", MISSING), ("в 10 тридцать", MISSING),
    # review 8, item 2: a misheard number word right after the time spoils it
    ("в десять сорокк", MISSING), ("в десять сорок пят", MISSING), ("в одиннадцать тридцат", MISSING),
    ("в десять сем", MISSING), ("в десять сорок", time(10, 40)), ("в десять сорок, хорошо", time(10, 40)),
    # item 5: a 24-hour clock is never flipped to pm; outside business hours (9-21) it is missing
    ("давайте в 08:00", MISSING), ("в 08 00", MISSING), ("в восемь ноль ноль", MISSING),
    ("в 08:30", MISSING), ("в 09:30", time(9, 30)), ("в 09 30", time(9, 30)),
    ("в двадцать ноль ноль", time(20, 0)), ("в 08:00 вечера", MISSING), ("в 07:00", MISSING),
    # a correction: only the time after it counts
    ("в десять, нет, в одиннадцать", time(11, 0)), ("в десять, вернее в половине одиннадцатого", time(10, 30)),
    ("в три, ой, в четыре", time(16, 0)), ("в десять, то есть в десять тридцать", time(10, 30)),
    ("нет, в одиннадцать", time(11, 0)), ("в десять или в одиннадцать, нет", MISSING),
]  # fmt: skip


@pytest.mark.parametrize(("text", "want"), ROWS)
def test_time_table(text: str, want: time | str | None) -> None:
    said = extract_time(text)
    if want is None:
        assert said is None or resolve_value(SPEC, said, CTX) is None, text
    elif want == RANGE:
        assert isinstance(said, Range), text
        assert resolve_value(SPEC, said, CTX) is None
    elif want in (ABOUT, OVER):
        assert isinstance(said, Approximate) and said.kind == want, text
        assert resolve_value(SPEC, said, CTX) is None  # default: clarify
    else:
        assert isinstance(said, SaidTime), text
        assert resolve_value(SPEC, said, CTX) == want, text


def test_business_hours_settle_twelve_hour_times() -> None:
    late = ResolveContext(today=CTX.today, open_min=12 * 60, close_min=23 * 60)
    assert resolve_value(SPEC, SaidTime(9, 30), late) == time(21, 30)  # "полдесятого" in an evening business
    assert resolve_value(SPEC, SaidTime(9, 30), CTX) == time(9, 30)
    wide = ResolveContext(today=CTX.today, open_min=8 * 60, close_min=22 * 60)
    assert resolve_value(SPEC, SaidTime(9, 0), wide) == time(9, 0)  # both fit: 7..11 are mornings
    assert resolve_value(SPEC, SaidTime(3, 0), wide) == time(15, 0)


def test_accepting_entity_takes_the_hedged_time_but_never_a_span() -> None:
    accepting = TimeEntity(type="time", approximate="accept")
    said: TimeValue | None = extract_time("к обеду")
    assert resolve_value(accepting, said, CTX) == time(13, 0)
    assert resolve_value(accepting, extract_time("с десяти до двенадцати"), CTX) is None


def test_a_24_hour_time_is_taken_as_said_inside_business_hours() -> None:
    early = ResolveContext(today=date(2025, 6, 11), open_min=8 * 60, close_min=20 * 60)
    for text in ("давайте в 08:00", "в 08 00", "в восемь ноль ноль"):
        said = extract_time(text)
        assert isinstance(said, SaidTime) and said.h24, text
        assert resolve_value(SPEC, said, early) == time(8, 0), text
    assert resolve_value(SPEC, extract_time("в 8"), early) == time(8, 0)  # 12-hour: as before
