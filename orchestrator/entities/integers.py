"""The grammar of one Russian number phrase, in words, digits or both, in any case.

`parse_integer(toks, i)` reads the longest number that starts at token `i`:
- cardinals in any case ("о двухстах пятидесяти" 250, "с тремястами сорока" 340) with the
  Russian order of places: hundreds, tens, units, each at most once ("пять двадцать" stops after
  "пять": the caller said two numbers);
- multipliers in decreasing order ("миллион двести тысяч триста"), abbreviated ("10 тыс");
- digits, alone or mixed with words as SpeechKit's normalization splits them ("2 тысячи 300",
  "двести 50", "1,5 миллиона", "1 500"); digits never continue digits ("10 30" is two numbers);
- collective and colloquial forms: "пять сотен" 500, "полтора десятка" 15, "пол миллиона",
  "полмиллиона", "полсотни", "полтораста", "двое", "две с половиной тысячи", "тыща";
- ordinals end a number ("двадцать первое" 21, "сто первый", "21-е").
A phrase that cannot mean one number is marked `bad` ("сотни метров", "тысяч" with no count);
the caller of this module then reports nothing rather than a piece of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.entities.morph import DENOMINATORS, NumWord, Token, number_word, ordinal_digits

# Quantity words that make a following multiplier vague ("пару тысяч", "несколько сотен").
VAGUE = frozenset({"пара", "несколько", "много", "немного", "сколько", "столько", "мало"})


@dataclass(frozen=True, slots=True)
class Int:
    """A parsed number: `value`, tokens [start, end), and what kind of number it was."""

    value: float
    start: int
    end: int
    ordinal: bool = False
    bad: bool = False  # the words do not make one number: report nothing
    digits_only: bool = False  # one digit token ("10"), for the time and digit-string grammars


def word_at(toks: list[Token], i: int) -> NumWord | None:
    """The number meaning of token `i`, if it is a word."""
    if i >= len(toks) or toks[i].kind != "word":
        return None
    return number_word(toks[i].text)


def _pol_noun(toks: list[Token], i: int) -> tuple[NumWord, int, bool] | None:
    """'пол' + a multiplier noun: (noun, index after, noun is a separate token) or None."""
    t = toks[i]
    if t.kind != "word":
        return None
    if t.text == "пол":
        j = i + 1
        if j < len(toks) and toks[j].text == "-":
            j += 1
        nw = word_at(toks, j)
        if nw is not None and nw.kind in ("mult", "noun"):
            return nw, j, True
        return None
    if t.text.startswith("пол") and not t.text.startswith("полтор") and len(t.text) > 6:
        nw = number_word(t.text[3:])  # "полмиллиона", "полтысячи", "полсотни"
        if nw is not None and nw.kind in ("mult", "noun"):
            return nw, i + 1, False
    return None


def is_denominator(nw: NumWord | None) -> bool:
    """Whether a word is a decimal denominator form ("десятых", "сотых", "одна десятая")."""
    return nw is not None and nw.kind == "ord" and nw.lemma in DENOMINATORS


def _free_after(v: float) -> float:
    """Which smaller places may still follow a part worth `v` ("сто" leaves tens and units)."""
    if v < 20:
        return 0.0
    if v < 100:
        return 10.0 if v % 10 == 0 else 0.0
    if v < 1000:
        if v % 100 == 0:
            return 100.0
        return 10.0 if v % 10 == 0 else 0.0
    return 0.0


def parse_integer(toks: list[Token], i: int) -> Int | None:  # noqa: C901, PLR0912, PLR0915
    """The number starting at token `i` (see the module docstring), or None if none starts there."""
    total = 0.0  # completed multiplier groups
    group = 0.0  # the group below the last multiplier
    free = 1000.0  # a part may join the group only if it is below this (0: closed)
    last_mult = float("inf")
    seen = prev_digit = ordinal = bad = False
    j = i
    n = len(toks)
    while j < n:
        t = toks[j]
        if t.kind == "int":
            d = float(t.text)
            if (
                prev_digit
                and total == 0
                and len(t.text) == 3
                and t.gap == " "
                and len(toks[j - 1].text) <= 3
                and j - 1 == i
            ):
                group = group * 1000 + d  # "1 500": a thousands separator
            elif not seen:
                group, free = d, 0.0
            elif not prev_digit and d < free:
                group, free = group + d, 0.0
            else:
                break
            prev_digit = True
        elif t.kind == "dec":
            if seen:
                break
            group, free, prev_digit = float(t.text.replace(",", ".")), 0.0, True
        elif t.kind == "ord":
            d = float(ordinal_digits(t.text))
            if seen and (prev_digit or d >= free):
                break
            group, ordinal, j = group + d, True, j + 1
            seen = True
            break
        elif t.kind == "word":
            pol = _pol_noun(toks, j)
            if pol is not None:
                if seen:
                    break
                noun, j2, separate = pol
                seen, group, free = True, 0.5, 0.0
                if separate:
                    j = j2  # the noun itself is read next, with the count 0.5
                    continue
                total, group, free, last_mult = _apply_noun(noun, total, 0.5, last_mult)
                j = j2
                continue
            nw = number_word(t.text)
            if nw is None:
                if t.text == "с" and seen and j + 1 < n and toks[j + 1].text == "половиной":
                    if group <= 0 or group != int(group) or free == 100.0:
                        bad = True
                    group, free, j = group + 0.5, 0.0, j + 2
                    continue
                break
            if prev_digit and nw.kind != "mult":
                break
            if nw.kind == "card":
                if nw.value == 150 and seen:  # "полтораста" stands alone
                    break
                if nw.value >= free or (seen and nw.value == 0):
                    break  # "ноль" only starts a number: "двадцать ноль" is two
                group += nw.value
                free = 0.0 if nw.value == 150 else _free_after(nw.value)
            elif nw.kind == "mult":
                if nw.value >= last_mult:
                    break
                if not seen and nw.plural and nw.genitive:
                    bad = True  # "тысяч" with no count: "пару тысяч", "несколько тысяч"
                total, group, free, last_mult = _apply_noun(nw, total, group or 1.0, last_mult)
            elif nw.kind == "noun":
                if not seen:
                    if nw.plural:
                        bad = True  # "сотни метров": hundreds, no number
                    count = 1.0
                elif group in (0.5, 1.5) or (free == 0.0 and 1 <= group <= 9 and total == 0):
                    count = group
                else:
                    break
                group, free = count * nw.value, 0.0
            elif nw.kind in ("half", "coll"):
                if seen:
                    break
                group, free = nw.value, 0.0
            else:  # ordinal: ends the number
                if is_denominator(nw) and seen:
                    break
                if nw.value >= 1000:
                    total, group = total + (group or 1.0) * nw.value, 0.0
                elif nw.value >= free and seen:
                    break
                else:
                    group += nw.value
                ordinal, seen, j = True, True, j + 1
                break
            prev_digit = False
        else:
            break
        seen = True
        j += 1
    if not seen:
        return None
    digits_only = j == i + 1 and toks[i].kind == "int"
    return Int(total + group, i, j, ordinal=ordinal, bad=bad, digits_only=digits_only)


def _apply_noun(
    nw: NumWord, total: float, count: float, last_mult: float
) -> tuple[float, float, float, float]:
    """Apply a multiplier or noun to `count`: (total, group, free, last_mult) after it."""
    if nw.kind == "mult":
        return total + count * nw.value, 0.0, 1000.0, nw.value
    return total, count * nw.value, 0.0, last_mult
