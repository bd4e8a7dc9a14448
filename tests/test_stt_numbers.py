"""`may_carry_number`: which raw SpeechKit finals may hold a number (and so wait for normalization)."""

from __future__ import annotations

import pytest

from orchestrator.adapters.stt.numbers import may_carry_number


@pytest.mark.parametrize(
    "raw",
    [
        "двести пятьдесят рублей",
        "стоимость 250",
        "а за три комнаты",
        "одиннадцатого числа",
        "в полпятого",
        "полтора часа",
        "нас будет двое",
        "на девятнадцатое",
        "тысяча",
        "первый этаж",
        "квартира сорок",
        "ноль",
        "трёхкомнатная",
        "восемь утра",
        "сто",
        "миллион",
        "в четверг",  # "четв": a false alarm that only costs the wait
    ],
)
def test_a_final_that_may_carry_a_number_waits(raw: str) -> None:
    assert may_carry_number(raw, "ru-RU")


@pytest.mark.parametrize(
    "raw", ["а вы работаете в субботу", "да оформляйте заказ", "подождите", "нет спасибо", ""]
)
def test_a_final_without_any_numeral_does_not(raw: str) -> None:
    assert not may_carry_number(raw, "ru-RU")


def test_digits_count_in_any_language_and_other_languages_always_wait() -> None:
    assert may_carry_number("room 12", "en-US")
    assert may_carry_number("yes please", "en-US")  # no word list for it: always wait
    assert not may_carry_number("да", "ru")
