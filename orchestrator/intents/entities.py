"""Entity extraction from the caller's words: numbers, choices, regular expressions.

Numbers come in digits ("45", "45,5", "1 500") or in Russian words up to the millions, in the
nominative and the common oblique cases ("сорок пять", "сорока пяти", "сто двадцать",
"тысяча двести", "полторы тысячи", "две с половиной тысячи", "сорок пять с половиной").
A number ends where the next word cannot continue it: "пять двадцать" is two numbers. Digits
may be followed by a multiplier word ("2 тысячи", "1,5 миллиона"). A number entity takes the
first number of the text within its bounds; out-of-bounds numbers are skipped (a caller saying
"2 комнаты, 45 метров" gives area 45 when the area's minimum is 10).

Choices match a value when a word of the text starts with one of its stems ("дорог" matches
"дорого", "дороговато"); a stem with a space matches that phrase's prefix. The earliest match in
the text wins. Regex entities return group 1 if the pattern has groups, else the whole match.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from orchestrator.dialogue_map.models import ChoiceEntity, EntitySpec, NumberEntity, RegexEntity

Number = int | float

# word -> (value, rank): rank 1 units/teens, 2 tens, 3 hundreds. Oblique forms included.
_SMALL: dict[str, tuple[int, int]] = {}


def _add(rank: int, value: int, *forms: str) -> None:
    for f in forms:
        _SMALL[f] = (value, rank)


_add(1, 0, "ноль", "нуль", "нуля")
_add(1, 1, "один", "одна", "одно", "одного", "одной", "одному", "одним", "одну")
_add(1, 2, "два", "две", "двух", "двум", "двумя")
_add(1, 3, "три", "трех", "трем", "тремя")
_add(1, 4, "четыре", "четырех", "четырем", "четырьмя")
_add(1, 5, "пять", "пяти", "пятью")
_add(1, 6, "шесть", "шести", "шестью")
_add(1, 7, "семь", "семи", "семью")
_add(1, 8, "восемь", "восьми", "восемью")
_add(1, 9, "девять", "девяти", "девятью")
for _v, _w in enumerate(
    [
        "десять",
        "одиннадцать",
        "двенадцать",
        "тринадцать",
        "четырнадцать",
        "пятнадцать",
        "шестнадцать",
        "семнадцать",
        "восемнадцать",
        "девятнадцать",
    ],
    start=10,
):
    _add(1, _v, _w, _w[:-1] + "и")  # десяти, одиннадцати, ...
_add(2, 20, "двадцать", "двадцати")
_add(2, 30, "тридцать", "тридцати")
_add(2, 40, "сорок", "сорока")
_add(2, 50, "пятьдесят", "пятидесяти")
_add(2, 60, "шестьдесят", "шестидесяти")
_add(2, 70, "семьдесят", "семидесяти")
_add(2, 80, "восемьдесят", "восьмидесяти")
_add(2, 90, "девяносто", "девяноста")
_add(3, 100, "сто", "ста", "сотни", "сотня")
_add(3, 200, "двести", "двухсот")
_add(3, 300, "триста", "трехсот")
_add(3, 400, "четыреста", "четырехсот")
_add(3, 500, "пятьсот", "пятисот")
_add(3, 600, "шестьсот", "шестисот")
_add(3, 700, "семьсот", "семисот")
_add(3, 800, "восемьсот", "восьмисот")
_add(3, 900, "девятьсот", "девятисот")

_MULTIPLIERS: dict[str, int] = {
    **dict.fromkeys(("тысяча", "тысячи", "тысяч", "тысячу", "тысячей", "тыс"), 1000),
    **dict.fromkeys(("миллион", "миллиона", "миллионов", "млн"), 1_000_000),
}
_HALF = ("полтора", "полторы", "полутора")
# Every word that can be part of a number (for the embedder's number folding).
NUMBER_WORDS: frozenset[str] = frozenset({*_SMALL, *_MULTIPLIERS, *_HALF})
_TOKEN = re.compile(r"\d+(?: \d{3})*(?:[.,]\d+)?|[a-zа-я]+")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower().replace("ё", "е"))


def _digits(token: str) -> Number:
    token = token.replace(" ", "").replace(",", ".")
    return float(token) if "." in token else int(token)


def _tidy(value: float) -> Number:
    return int(value) if float(value).is_integer() else value


def iter_numbers(text: str) -> Iterator[Number]:
    """Every number said in `text`, in order."""
    toks = _tokens(text)
    i = 0
    while i < len(toks):
        value, i2 = _number_at(toks, i)
        if i2 == i:
            i += 1
            continue
        yield _tidy(value)
        i = i2


def _number_at(toks: list[str], i: int) -> tuple[float, int]:
    """Parse the number starting at toks[i]; returns (value, next index), next == i if none."""
    total = 0.0  # completed groups (thousands, millions)
    group = 0.0  # the group being read (below 1000)
    min_rank = 99  # smallest rank in the group so far: the next word must rank lower
    last_mult = 10**12  # multipliers must decrease: "миллион двести тысяч"
    j = i
    seen = False
    while j < len(toks):
        t = toks[j]
        if t[0].isdigit():
            if seen:
                break
            group = float(_digits(t))
            min_rank = 0
        elif t in _SMALL:
            v, rank = _SMALL[t]
            if rank >= min_rank or (rank == 1 and min_rank == 2 and v >= 10):
                break  # "пять двадцать", "двадцать одиннадцать": a new number
            group += v
            min_rank = rank
        elif t in _HALF:
            if seen and min_rank < 99:
                break
            group = 1.5
            min_rank = 0
        elif t in _MULTIPLIERS and seen:
            mult = _MULTIPLIERS[t]
            if mult >= last_mult:
                break
            total += (group or 1) * mult
            group, min_rank, last_mult = 0.0, 99, mult
        elif t in _MULTIPLIERS and not seen and t not in ("тыс", "млн"):
            # "тысяча двести" starts with its multiplier
            mult = _MULTIPLIERS[t]
            total, group, min_rank, last_mult = float(mult), 0.0, 99, mult
        elif t == "с" and seen and j + 1 < len(toks) and toks[j + 1] == "половиной":
            # "сорок пять с половиной", "две с половиной тысячи"
            group += 0.5
            min_rank = 0
            j += 2
            continue
        else:
            break
        seen = True
        j += 1
    if not seen:
        return 0.0, i
    return total + group, j


def extract_number(text: str, spec: NumberEntity) -> Number | None:
    """The first number of `text` within the entity's bounds, or None."""
    for n in iter_numbers(text):
        if spec.min is not None and n < spec.min:
            continue
        if spec.max is not None and n > spec.max:
            continue
        return n
    return None


def extract_choice(text: str, spec: ChoiceEntity) -> str | None:
    """The value whose stem occurs earliest in `text` (at a word start), or None."""
    norm = " " + " ".join(_TOKEN.findall(text.lower().replace("ё", "е"))) + " "
    best: tuple[int, str] | None = None
    for value, stems in spec.values.items():
        for stem in stems:
            s = stem.lower().replace("ё", "е").strip()
            if not s:
                continue
            pos = norm.find(" " + s)
            if pos >= 0 and (best is None or pos < best[0]):
                best = (pos, value)
    return None if best is None else best[1]


def extract_regex(text: str, spec: RegexEntity) -> str | None:
    """Group 1 (or the whole match) of the first match, or None."""
    m = re.search(spec.pattern, text)
    if m is None:
        return None
    return m.group(1) if m.re.groups else m.group(0)


def extract_entity(text: str, spec: EntitySpec) -> Any:
    """The entity's value in `text`, or None."""
    if isinstance(spec, NumberEntity):
        return extract_number(text, spec)
    if isinstance(spec, ChoiceEntity):
        return extract_choice(text, spec)
    return extract_regex(text, spec)


def extract_entities(text: str, names: list[str], specs: Mapping[str, EntitySpec]) -> dict[str, Any]:
    """The named entities found in `text` (absent ones left out)."""
    found: dict[str, Any] = {}
    for name in names:
        spec = specs.get(name)
        if spec is None:
            continue
        value = extract_entity(text, spec)
        if value is not None:
            found[name] = value
    return found
