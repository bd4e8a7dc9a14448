"""`may_carry_number`: which raw SpeechKit finals may hold a number (and so wait for normalization)."""

from __future__ import annotations

import pytest

from orchestrator.adapters.stt.numbers import may_carry_number
from orchestrator.entities.morph import NUMBER_WORDS, analyzer, number_word

# Lemmas the dialogue's number grammar reads beyond `NUMBER_WORDS` (cardinals, multipliers,
# "сотня"/"десяток", "полтора"): ordinals, collectives, and fractions SpeechKit writes in digits.
_MORE_LEMMAS = (
    "первый", "второй", "третий", "четвертый", "пятый", "шестой", "седьмой", "восьмой",
    "девятый", "десятый", "одиннадцатый", "двенадцатый", "тринадцатый", "четырнадцатый",
    "пятнадцатый", "шестнадцатый", "семнадцатый", "восемнадцатый", "девятнадцатый",
    "двадцатый", "тридцатый", "сороковой", "пятидесятый", "шестидесятый", "семидесятый",
    "восьмидесятый", "девяностый", "сотый", "двухсотый", "трехсотый", "пятисотый",
    "тысячный", "миллионный", "двое", "трое", "четверо", "пятеро", "шестеро", "семеро",
    "восьмеро", "девятеро", "десятеро", "половина", "треть", "четверть", "полночь",
)  # fmt: skip


def _forms(lemma: str) -> set[str]:
    for parse in analyzer().parse(lemma):
        if parse.normal_form.replace("ё", "е") == lemma:
            # Not the superlatives the analyzer lists for "первый" ("наипервейший"): no figure.
            return {f.word.replace("ё", "е") for f in parse.lexeme if not f.word.startswith("наи")}
    raise AssertionError(f"the analyzer does not know {lemma!r}")


def test_every_form_of_every_number_word_waits() -> None:
    # 700-odd forms ("двухстах", "тридцатого", "четверыми", "тыщи"): a stem dropped or a
    # no-number start that eats a number ("пятн" would eat "пятнадцать") fails here.
    forms = set(NUMBER_WORDS).union(*(_forms(lemma) for lemma in _MORE_LEMMAS))
    assert len(forms) > 700
    missed = sorted(f for f in forms if not may_carry_number(f, "ru-RU"))
    assert missed == []


@pytest.mark.parametrize(
    "raw",
    [
        "двести пятьдесят рублей",
        "стоимость 250",
        "а за три комнаты",
        "одиннадцатого числа",
        "в полпятого",
        "полтора часа",
        "полутора тысяч",
        "нас будет двое",
        "на девятнадцатое",
        "тысяча",
        "пару тыщ",
        "первый этаж",
        "квартира сорок",
        "ноль",
        "трёхкомнатная",
        "восемь утра",
        "сто",
        "сколько стоит сто метров",  # "стоит" is no number, "сто" is
        "пятнадцать пятен",  # "пятен" is none, "пятнадцать" is
        "миллион",
        "раз",
        "сотню",
        "пол литра",
        "в полночь",
    ],
)
def test_a_final_that_may_carry_a_number_waits(raw: str) -> None:
    assert may_carry_number(raw, "ru-RU")


@pytest.mark.parametrize(
    "raw",
    [
        "а вы работаете в субботу",
        "да оформляйте заказ",
        "подождите",
        "нет спасибо",
        "",
        # Frequent words that start like a numeral (each waited up to 300 ms before).
        "можно во вторник",
        "в четверг после обеда",
        "лучше в пятницу",
        "пришлите сотрудника",
        "мне к стоматологу",
        "первичный приём",
        "разве это дорого",
        "стоп",
        "как получить скидку",
        "пятна на ковре",
        "помыть полы",
        "вся семья",
        # "сто" starts them, but they ask for a price: the normalized text adds only its "?".
        "сколько стоит уборка",
        "а сколько это будет стоить",
        "а стоимость какая будет",
    ],
)
def test_a_final_without_any_numeral_does_not(raw: str) -> None:
    assert not may_carry_number(raw, "ru-RU")


def test_no_number_word_is_listed_as_none() -> None:
    # The exclusions are words the analyzer reads as no number at all.
    words = ("стоит", "стоить", "стоимость", "вторник", "сотрудника", "стоматологу", "первичный", "пятна")
    for word in (*words, "полы"):
        assert number_word(word) is None, word


def test_digits_count_in_any_language_and_other_languages_always_wait() -> None:
    assert may_carry_number("room 12", "en-US")
    assert may_carry_number("yes please", "en-US")  # no word list for it: always wait
    assert not may_carry_number("да", "ru")
