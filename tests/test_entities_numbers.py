"""Numbers as callers say them: one row per phrase, with its value, or missing, a range, a hedge.

No row may yield a wrong number: a phrase the grammar cannot read as one number is missing
(None), never a piece of it. The first block is the table of issue 8.
"""

from __future__ import annotations

import pytest

from orchestrator.dialogue_map.models import NumberEntity
from orchestrator.entities.extract import ResolveContext, resolve_value
from orchestrator.entities.numbers import NumberValue, extract_number
from orchestrator.entities.values import Approximate, Range

ANY = NumberEntity(type="number")
MISSING = None


def R(lo: float, hi: float) -> Range[float]:  # noqa: N802
    return Range(lo, hi)


def A(v: float, kind: str = "about") -> Approximate[float]:  # noqa: N802
    return Approximate(v, kind)  # type: ignore[arg-type]


ISSUE_ROWS: list[tuple[str, NumberValue | None]] = [
    ("у нас пять сотен метров", 500),
    ("полтора десятка метров", 15),
    ("пол миллиона рублей", 500000),
    ("семь целых три десятых метра", 7.3),
    ("о двухстах пятидесяти метрах", 250),
    ("с тремястами сорока", 340),
    ("двести 50 метров", 250),
    ("2 тысячи 300", 2300),
    ("на двадцать первое", 21),
]

ROWS: list[tuple[str, NumberValue | None]] = [
    # words, digits, mixed
    ("45", 45), ("45,5 метров", 45.5), ("45.5", 45.5), ("1 500 рублей", 1500), ("1500", 1500),
    ("сорок пять", 45), ("сорок пять квадратных метров", 45), ("сто двадцать", 120),
    ("сто одиннадцать", 111), ("двести сорок три", 243), ("тысяча двести", 1200),
    ("миллион двести тысяч триста", 1200300), ("девяносто девять", 99), ("семьдесят ёлок", 70),
    ("ноль", 0), ("без чисел", MISSING), ("2 тысячи", 2000), ("1,5 миллиона", 1500000),
    ("три миллиона", 3000000), ("10 тыс", 10000), ("2.5 млн", 2500000),
    ("3 тысячи двести", 3200), ("сто 20", 120), ("девятьсот девяносто девять", 999),
    ("сто один", 101), ("сто десять", 110), ("одна тысяча", 1000), ("тыща", 1000),
    ("две тыщи", 2000), ("45 м2", 45), ("60 кв.м", 60), ("75 квадратных метров", 75),
    # oblique cases
    ("сорока пяти", 45), ("ста двадцати", 120), ("пятьюдесятью", 50), ("о семистах", 700),
    ("к девятистам", 900), ("с двумястами", 200), ("сорока восьми", 48),
    ("шестидесяти трёх", 63), ("двух тысяч", 2000), ("трёх миллионов", 3000000),
    ("одиннадцатью", 11), ("восемьюстами", 800), ("с семью", 7), ("около миллиона", A(1000000)),
    ("о двухстах тридцати пяти метрах", 235), ("тысячей", 1000), ("полутора тысяч", 1500),
    # collective and colloquial
    ("сотня", 100), ("две сотни", 200), ("три сотни квадратов", 300), ("десяток", 10),
    ("два десятка", 20), ("полсотни", 50), ("пол сотни", 50), ("полтысячи", 500),
    ("пол-миллиона", 500000), ("полмиллиона", 500000), ("полтора", 1.5), ("полтора метра", 1.5),
    ("полторы тысячи", 1500), ("полторы сотни", 150), ("полтораста", 150),
    ("две с половиной тысячи", 2500), ("сорок пять с половиной", 45.5),
    ("семьдесят с половиной", 70.5), ("двое", 2), ("нас четверо", 4), ("на пятерых", 5),
    ("помыть пол сто метров", 100), ("мыть пол", MISSING),
    # decimals
    ("три целых пять десятых", 3.5), ("ноль целых пять десятых", 0.5),
    ("две целых двадцать пять сотых", 2.25), ("семь и три десятых", 7.3),
    ("семь запятая пять", 7.5), ("семь запятая двадцать пять", 7.25),
    ("пятьдесят три и восемь десятых", 53.8), ("сорок пять и пять", 45.5), ("три десятых", 0.3),
    ("семь целых одна десятая", 7.1), ("семь целых три", 7.3),
    ("три целых двадцать пять десятых", MISSING), ("семь целых", MISSING),
    # ordinals
    ("на пятом этаже", 5), ("квартира двадцать третья", 23), ("сто первый", 101),
    ("тридцатого", 30), ("в сорок второй квартире", 42), ("2-й этаж", 2), ("5-го", 5),
    ("21-е", 21),
    # ranges and hedges: reported as such
    ("восемьдесят-девяносто", R(80, 90)), ("от 80 до 90", R(80, 90)), ("80-90 метров", R(80, 90)),
    ("восемьдесят или девяносто", R(80, 90)), ("метров восемьдесят девяносто", R(80, 90)),
    ("между восемьюдесятью и девяноста", R(80, 90)), ("два-три", R(2, 3)),
    ("сто с хвостиком", A(100, "over")), ("сто с лишним метров", A(100, "over")),
    ("около ста", A(100)), ("примерно семьдесят", A(70)), ("где-то шестьдесят", A(60)),
    ("приблизительно сорок", A(40)), ("порядка двухсот", A(200)), ("больше ста", A(100, "over")),
    ("не больше ста", A(100, "under")), ("до ста метров", A(100, "under")),
    ("сто или около того", A(100)), ("пятьдесят примерно", A(50)),
    # never a fragment
    ("сто сорокк метров", MISSING), ("пять двадцать", MISSING), ("двадцать одиннадцать", MISSING),
    ("тысяча тысяча", MISSING), ("полтора двести", MISSING), ("несколько сотен", MISSING),
    ("пару тысяч", MISSING), ("сотни метров", MISSING), ("двести тридцать пять сорок", MISSING),
    ("сорок пять тридцать", MISSING), ("сто двадцатьь", MISSING), ("семьдесятт пять", MISSING),
    ("две комнаты, шестьдесят метров", MISSING), ("45 или 50 или 55", MISSING),
    ("двести эээ пятьдесят", MISSING), ("сто, двадцать", MISSING), ("десять и пять", MISSING),
    ("сто сем", MISSING), ("сто пят", MISSING), ("два, три", MISSING), ("сто, сто двадцать", MISSING),
]  # fmt: skip


@pytest.mark.parametrize(("text", "value"), ISSUE_ROWS + ROWS)
def test_number_table(text: str, value: NumberValue | None) -> None:
    got = extract_number(text, ANY)
    assert got == value, text
    assert type(got) is type(value), text  # 500, not 500.0; a Range is no number


AREA = NumberEntity(type="number", min=10, max=1000, units=["метр", "квадрат"], forms="cardinal")

AREA_ROWS: list[tuple[str, NumberValue | None]] = [
    ("две комнаты, шестьдесят метров", 60), ("2 комнаты 45 метров", 45),
    ("сорок пять метров на двенадцатом этаже", 45), ("пять метров", MISSING),
    ("две тысячи метров", MISSING), ("ровно тысяча", 1000), ("метров 38", 38),
    ("квадратов девяносто", 90), ("двушка метров на пятьдесят", 50),
    ("сорок, нет, пятьдесят метров", 50), ("сорок пять, вернее сорок семь", 47),
    ("квартира на пятом этаже, площадь сорок пять", 45), ("три комнаты, 70 и 12 балкон", MISSING),
    ("у нас пять сотен метров", 500), ("о двухстах пятидесяти метрах", 250),
    ("восемьдесят-девяносто метров", R(80, 90)), ("сто сорокк метров", MISSING),
    ("около ста метров", A(100)), ("метров сто с хвостиком", A(100, "over")),
    # review 8, item 1: a pause between two parts of one number spoils both (never the last part)
    ("двести эээ пятьдесят метров", MISSING), ("двести ну пятьдесят метров", MISSING),
    ("двести, пятьдесят метров", MISSING), ("двести... пятьдесят метров", MISSING),
    ("сто и пятьдесят метров", MISSING), ("тысяча, триста метров", MISSING),
    ("сто пятьдесят ну пять метров", MISSING), ("двести эм тридцать пять метров", MISSING),
    ("двести пятьдесят метров", 250), ("сорок, нет, пятьдесят", 50),
    # item 2: a typo that is still a dictionary word right after the number
    ("сто сем метров", MISSING), ("сто шестьдесят сем метров", MISSING),
    ("сто двадцать пят метров", MISSING), ("сто восем метров", MISSING),
    ("сто двадцать пятьдесять метров", MISSING), ("девяносто шест метров", MISSING),
    # item 4: "и" is a decimal point only after units or before a denominator
    ("сто пятьдесят и пять метров балкон", MISSING), ("сорок и пять метров", MISSING),
    ("сорок пять и пять метров", 45.5), ("сорок и пять десятых метра", 40.5),
    # item 4: corrections and hedges with the unit on the other number
    ("пятьдесят метров. ну то есть сто", 100), ("пятьдесят метров, в смысле сто", 100),
    ("метров сто, может сто двадцать", MISSING), ("сто двадцать, может сто тридцать метров", MISSING),
    ("сто двадцать метров, может сто тридцать", MISSING), ("может сто метров", A(100)),
    ("нет, у нас сто сорокк метров", MISSING), ("площадь не пятьдесят, а сто пядесят", MISSING),
]  # fmt: skip


@pytest.mark.parametrize(("text", "value"), AREA_ROWS)
def test_area_entity_picks_one_number_or_none(text: str, value: NumberValue | None) -> None:
    assert extract_number(text, AREA) == value, text


def test_hedges_and_ranges_resolve_to_missing_unless_accepted() -> None:
    ctx = ResolveContext(today=__import__("datetime").date(2025, 6, 11))
    accepting = AREA.model_copy(update={"approximate": "accept"})
    assert resolve_value(AREA, A(100), ctx) is None
    assert resolve_value(accepting, A(100), ctx) == 100
    assert resolve_value(accepting, A(100, "over"), ctx) is None  # "с хвостиком": not 100
    assert resolve_value(accepting, R(80, 90), ctx) is None
    assert resolve_value(AREA, 45, ctx) == 45
