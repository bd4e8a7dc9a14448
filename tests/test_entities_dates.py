"""Dates as callers say them, resolved against a call on Wednesday 2025-06-11 (Moscow time)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from orchestrator.dialogue_map.models import DateEntity
from orchestrator.entities.dates import extract_date
from orchestrator.entities.extract import ResolveContext, resolve_value
from orchestrator.entities.values import Range

TODAY = date(2025, 6, 11)  # a Wednesday
CTX = ResolveContext(today=TODAY)
SPEC = DateEntity(type="date")
MISSING = None
RANGE = "range"

ROWS: list[tuple[str, date | str | None]] = [
    ("двадцать пятого", date(2025, 6, 25)), ("на двадцать первое", date(2025, 6, 21)),
    ("послезавтра", date(2025, 6, 13)), ("в следующую пятницу", date(2025, 6, 20)),
    ("пятого", date(2025, 7, 5)), ("одиннадцатого", date(2025, 6, 11)), ("сегодня", TODAY),
    ("завтра", date(2025, 6, 12)), ("после завтра", date(2025, 6, 13)),
    ("в пятницу", date(2025, 6, 13)), ("в эту пятницу", date(2025, 6, 13)),
    ("в ближайшую пятницу", date(2025, 6, 13)), ("в среду", date(2025, 6, 18)),
    ("в следующий понедельник", date(2025, 6, 16)), ("в понедельник", date(2025, 6, 16)),
    ("через неделю", date(2025, 6, 18)), ("через два дня", date(2025, 6, 13)),
    ("через три дня", date(2025, 6, 14)), ("пятнадцатого июля", date(2025, 7, 15)),
    ("15 июля", date(2025, 7, 15)), ("15.07", date(2025, 7, 15)), ("15.07.2026", date(2026, 7, 15)),
    ("1 мая", date(2026, 5, 1)), ("двадцать пятого числа", date(2025, 6, 25)),
    ("25 числа", date(2025, 6, 25)), ("тридцать первого", date(2025, 7, 31)),
    ("в субботу", date(2025, 6, 14)), ("в воскресенье", date(2025, 6, 15)),
    ("во вторник", date(2025, 6, 17)), ("в четверг", date(2025, 6, 12)),
    ("первого числа", date(2025, 7, 1)), ("на первое июля", date(2025, 7, 1)),
    ("третьего сентября", date(2025, 9, 3)), ("25-го", date(2025, 6, 25)),
    ("в пятницу на следующей неделе", date(2025, 6, 20)), ("давайте на двадцатое", date(2025, 6, 20)),
    ("к пятнадцатому", date(2025, 6, 15)), ("десятого января", date(2026, 1, 10)),
    ("в следующую среду", date(2025, 6, 18)), ("в следующее воскресенье", date(2025, 6, 22)),
    # digits with a case ending, relative days, a day with more words around it
    ("на 25е", date(2025, 6, 25)), ("на 25-е", date(2025, 6, 25)), ("к 25му", date(2025, 6, 25)),
    ("к 25-му", date(2025, 6, 25)), ("25-го числа", date(2025, 6, 25)), ("давайте 30ого", date(2025, 6, 30)),
    ("через пару дней", date(2025, 6, 13)), ("через пару недель", date(2025, 6, 25)),
    ("через день", date(2025, 6, 12)), ("через 5 дней", date(2025, 6, 16)),
    ("мне удобнее всего в воскресенье", date(2025, 6, 15)),
    ("в четверг после обеда", date(2025, 6, 12)), ("в субботу с утра нормально", date(2025, 6, 14)),
    ("в половине двенадцатого", MISSING), ("пол-третьего", MISSING), ("в 25ом году", MISSING),
    ("зуб болит второй день", MISSING), ("на третий этаж", MISSING), ("двадцать пятого утром", date(2025, 6, 25)),
    # spans: the map asks which day
    ("в выходные", RANGE), ("на выходных", RANGE), ("на следующей неделе", RANGE),
    ("в любой будний день", RANGE), ("по будням", RANGE), ("в будни после обеда", RANGE),
    # no such date, a past one, or two of them
    ("тридцать второго", MISSING), ("вчера", MISSING), ("в прошлую пятницу", MISSING),
    ("позавчера", MISSING), ("пятого или шестого", MISSING), ("31 июня", MISSING),
    ("в 10:30", MISSING), ("сорок пять метров", MISSING), ("когда-нибудь", MISSING),
    # review 8, item 7: a date with its month that passed within the last month is that past
    # date (missing here), never next year's; longer ago it is next year's
    ("10 июня", MISSING), ("десятого июня", MISSING), ("первого июня", MISSING),
    ("20 мая", MISSING), ("в прошлый понедельник", MISSING), ("в прошлую среду", MISSING),
    ("в прошлое воскресенье", MISSING), ("в прошлую субботу", MISSING),
    ("30 апреля", date(2026, 4, 30)), ("11 июня", TODAY), ("двенадцатого июня", date(2025, 6, 12)),
]  # fmt: skip

PAST = DateEntity(type="date", allow_past=True)

PAST_ROWS: list[tuple[date, str, date | None]] = [
    # (the call's date, the phrase, the date with allow_past)
    (TODAY, "в прошлую пятницу", date(2025, 6, 6)), (TODAY, "в прошлый понедельник", date(2025, 6, 2)),
    (TODAY, "в прошлую среду", date(2025, 6, 4)), (TODAY, "в прошлое воскресенье", date(2025, 6, 8)),
    (date(2025, 6, 30), "двадцать девятого", date(2025, 6, 29)),
    (date(2025, 6, 30), "29-го", date(2025, 6, 29)), (TODAY, "пятого", date(2025, 6, 5)),
    (TODAY, "двадцать пятого", date(2025, 6, 25)), (TODAY, "тридцать первого", date(2025, 7, 31)),
    (date(2025, 12, 30), "25 декабря", date(2025, 12, 25)),
    (date(2025, 12, 30), "10 января", date(2026, 1, 10)), (TODAY, "10 июня", date(2025, 6, 10)),
    (TODAY, "1 мая", date(2026, 5, 1)),
]  # fmt: skip


@pytest.mark.parametrize(("today", "text", "want"), PAST_ROWS)
def test_past_dates_when_the_entity_allows_them(today: date, text: str, want: date | None) -> None:
    assert resolve_value(PAST, extract_date(text), ResolveContext(today=today)) == want, text


@pytest.mark.parametrize(
    ("today", "text", "want"),
    [
        (date(2025, 12, 30), "25 декабря", None), (date(2025, 12, 30), "10 января", date(2026, 1, 10)),
        (date(2025, 6, 30), "двадцать девятого", date(2025, 7, 29)), (TODAY, "в прошлую пятницу", None),
    ],
)  # fmt: skip
def test_a_passed_date_never_moves_to_next_year_without_past(
    today: date, text: str, want: date | None
) -> None:
    assert resolve_value(SPEC, extract_date(text), ResolveContext(today=today)) == want, text


@pytest.mark.parametrize(("text", "want"), ROWS)
def test_date_table(text: str, want: date | str | None) -> None:
    said = extract_date(text)
    if want == RANGE:
        assert isinstance(said, Range), text
        assert resolve_value(SPEC, said, CTX) is None
    else:
        assert resolve_value(SPEC, said, CTX) == want, text


def test_past_and_horizon_are_entity_settings() -> None:
    assert resolve_value(DateEntity(type="date", allow_past=True), extract_date("вчера"), CTX) == date(
        2025, 6, 10
    )
    near = DateEntity(type="date", max_days_ahead=30)
    assert resolve_value(near, extract_date("двадцать пятого"), CTX) == date(2025, 6, 25)
    assert resolve_value(near, extract_date("десятого января"), CTX) is None


def test_the_call_date_is_taken_in_the_maps_time_zone() -> None:
    from orchestrator.dialogue_map.loader import load_dialogue_map
    from orchestrator.entities.extract import context_for
    from tests.test_example_maps import MAPS

    m = load_dialogue_map(MAPS / "dental_appointment.ru.json")
    # 22:30 UTC on June 10 is already June 11 in Moscow (UTC+3)
    ctx = context_for(m, datetime(2025, 6, 10, 22, 30, tzinfo=UTC))
    assert ctx.today == TODAY
    assert resolve_value(SPEC, extract_date("завтра"), ctx) == date(2025, 6, 12)
