"""Could a raw (not yet normalized) SpeechKit final carry a number?

SpeechKit's normalization (`final_refinement`) turns spoken numbers into digits ("двести
пятьдесят рублей" -> "250 рублей"); a wrong figure is the worst mistake the bot can make, so a
final that might hold one always waits for its normalized text. A final that cannot (no digit,
no word starting like a Russian numeral, ordinal or collective numeral) need not: its raw text
is what the normalized one would say, give or take case and punctuation.

The test is deliberately loose: a stem matches every word starting with it ("сто" also matches
"стопка", "пол" also "полдень"), which only costs such a final the wait it had before. The
commonest such words in our held-out caller phrases ("стоит", weekdays, "сотрудник",
"стоматолог", "первичный") are listed as no numbers, each by a start that no form of any number word has
(tests/test_stt_numbers.py checks every form the dialogue's number grammar reads). For a
language without a word list here, every final may carry a number.
"""

from __future__ import annotations

import re

__all__ = ["may_carry_number"]

# Word starts of Russian cardinals, ordinals, collectives and fractions (lower case, ё as е).
_RU_STEMS = (
    "нол", "нул", "один", "одн", "единиц", "перв", "пол",
    "два", "две", "двух", "двум", "дво", "втор", "двад",
    "три", "трех", "трем", "трое", "трои", "трет",
    "четыр", "четв", "пят", "шест", "сем", "седьм", "восем", "восьм", "девят", "девян",
    "десят", "дюжин", "сорок", "сто", "ста", "сот", "тыс", "тыщ", "милл", "млн", "млрд",
    "дробь", "запят", "процент", "минус", "плюс",
)  # fmt: skip
# Whole words only: as a stem, "раз" matched "разве", "размер", "разговор".
_RU_WORDS = frozenset({"раз"})
# Starts of frequent words that match a stem above but are no number ("вторник": "втор"); none
# is the start of a number word's form. Of the 955 phrases in tests/data/heldout*.json now, 755
# have no digit and no word `number_word` reads: 29 of them waited before "стоит", "стоить",
# "стоимост" were listed, 6 do now (3 of those say a time, "в полпятого"; 2 are "раз"); 200 of
# the 200 others wait.
_RU_NOT_NUMBERS = (
    "стоит", "стоить", "стоимост", "стоя", "стой", "стоп", "сторон", "стол", "стомат", "став", "стал", "стан", "стар", "стат",
    "стаж", "вторник", "четверг", "пятниц", "сотрудн", "сотов", "получ", "полност", "польз",
    "полез", "полит", "полиц", "полож", "полечи", "первичн", "одинаков", "однако", "однажды",
    "двор", "семей", "семейн",
)  # fmt: skip
# Whole words, where a start would also catch a number ("пятна": "пятнадцать").
_RU_NOT_NUMBER_WORDS = frozenset({
    "полы", "пятно", "пятна", "пятен", "пятнам", "пятнами", "пятнах", "пятну", "пятном",
    "семья", "семьи", "семье", "семьей", "семьям", "семьями", "семьях",
})  # fmt: skip
_WORD = re.compile(r"[^\W\d_]+")


def may_carry_number(text: str, language: str) -> bool:
    """True unless `text` surely holds no number: no digit and, for ru-*, no numeral-like word.

    `language`: the recognition's language code ("ru-RU"); any other language is always True.
    """
    if any(ch.isdigit() for ch in text):
        return True
    if not language.lower().startswith("ru"):
        return True
    words = _WORD.findall(text.lower().replace("ё", "е"))
    return any(_ru_numeral_like(word) for word in words)


def _ru_numeral_like(word: str) -> bool:
    """Whether `word` (lower case, ё as е) may be a Russian number word."""
    if word in _RU_WORDS:
        return True
    if not word.startswith(_RU_STEMS):
        return False
    return not (word in _RU_NOT_NUMBER_WORDS or word.startswith(_RU_NOT_NUMBERS))
