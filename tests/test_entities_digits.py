"""Digit strings dictated by callers (phone, contract, order numbers), and from DTMF keys."""

from __future__ import annotations

import pytest

from orchestrator.dialogue_map.models import DigitsEntity
from orchestrator.entities.digits import digits_from_dtmf, extract_digits

PHONE = DigitsEntity(type="digits", min_length=11, max_length=11)
ANY = DigitsEntity(type="digits")
MISSING = None

ROWS: list[tuple[str, DigitsEntity, str | None]] = [
    ("восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь", PHONE, "89161234567"),
    ("+7 916 123-45-67", PHONE, "79161234567"), ("+7 (916) 123 45 67", PHONE, "79161234567"),
    ("8 916 123 45 67", PHONE, "89161234567"), ("89161234567", PHONE, "89161234567"),
    ("мой номер восемь девять один шесть один два три четыре пять шесть семь", PHONE, "89161234567"),
    ("восемь, девятьсот шестнадцать, сто двадцать три, сорок пять, шестьдесят семь", PHONE, "89161234567"),
    ("восемь э девятьсот шестнадцать ну сто двадцать три сорок пять шестьдесят семь", PHONE, "89161234567"),
    ("восемь девятьсот шестнадцать один два три сорок пять шестьдесят семь", PHONE, "89161234567"),
    ("восемь девятьсот шестнадцать сто двадцать три ноль ноль ноль один", PHONE, "89161230001"),
    ("восемь девятьсот шестнадцать", PHONE, MISSING),
    ("восемь девятьсот шестнадцать блин сто двадцать три сорок пять шестьдесят семь", PHONE, MISSING),
    ("восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь восемь", PHONE, MISSING),
    ("номер договора двенадцать тридцать четыре пятьдесят шесть", ANY, "123456"),
    ("ноль ноль семь", ANY, "007"), ("сто два", ANY, "102"), ("двести пять", ANY, "205"),
    ("две тысячи двадцать пять", ANY, "2025"), ("девяносто девять ноль ноль", ANY, "9900"),
    ("двадцать ноль пять", ANY, "2005"), ("заказ 4512-77", ANY, "451277"),
    ("полтора", ANY, MISSING), ("сто с половиной", ANY, MISSING), ("нет номера", ANY, MISSING),
    ("договор 123, а заказ 456", ANY, MISSING),
    ("договор 123, а телефон 89161234567", PHONE, "89161234567"),
    # review 8, item 2: a misheard number word after a group spoils the string
    ("восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят сем", PHONE, MISSING),
    ("восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят пят", PHONE, MISSING),
    ("восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь спасибо", PHONE, "89161234567"),
    ("8 916 123 45 6 сем", PHONE, MISSING), ("сто двадцать три сорокк", ANY, MISSING),
]  # fmt: skip


@pytest.mark.parametrize(("text", "spec", "want"), ROWS)
def test_digit_table(text: str, spec: DigitsEntity, want: str | None) -> None:
    assert extract_digits(text, spec) == want, text


@pytest.mark.parametrize(
    ("keys", "want"),
    [
        ("89161234567", "89161234567"),
        ("89161234567#", "89161234567"),
        ("8916#", None),
        ("8916*1234567", None),
        ("", None),
    ],
)
def test_dtmf(keys: str, want: str | None) -> None:
    assert digits_from_dtmf(keys, PHONE) == want
