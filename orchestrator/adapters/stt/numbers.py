"""Could a raw (not yet normalized) SpeechKit final carry a number?

SpeechKit's normalization (`final_refinement`) turns spoken numbers into digits ("двести
пятьдесят рублей" -> "250 рублей"); a wrong figure is the worst mistake the bot can make, so a
final that might hold one always waits for its normalized text. A final that cannot (no digit,
no word starting like a Russian numeral, ordinal or collective numeral) need not: its raw text
is what the normalized one would say, give or take case and punctuation.

The test is deliberately loose: a stem matches every word starting with it ("сто" also matches
"стоит", "пол" also "получить"), which only costs such a final the wait it had before. For a
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
    "раз", "дробь", "запят", "процент", "минус", "плюс",
)  # fmt: skip
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
    return any(word.startswith(_RU_STEMS) for word in words)
