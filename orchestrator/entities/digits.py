"""Digit strings: phone, contract and order numbers, dictated in groups or keyed in (DTMF).

Callers dictate digits in groups of any size, in words or digits, and SpeechKit's normalization
may give either: "восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь",
"8 916 123-45-67", "+7 (916) 123 45 67" are all 89161234567 / 79161234567. Each group is one
number phrase written out in digits ("сто двадцать три" -> "123", "ноль ноль семь" -> "007",
"две тысячи двадцать пять" -> "2025"). Punctuation and hesitation words ("э", "ну", "так")
may sit between groups; any other word splits the digits into separate strings, and a word
that may be a misheard number word ("шестьдесят сем") spoils the string before it. The entity takes
the one string whose length is within its bounds; none or several (a number said in two pieces
with a word between them, or two numbers) -> missing, never a piece of one.
"""

from __future__ import annotations

from orchestrator.dialogue_map.models import DigitsEntity
from orchestrator.entities.integers import parse_integer
from orchestrator.entities.morph import Token, garbled, tokens

_FILLERS = frozenset({"э", "эм", "ээ", "м", "ну", "так", "вот", "это", "значит", "дальше", "и"})
_JOINERS = frozenset({"-", "(", ")", "+", ",", "."})


def _group(toks: list[Token], i: int) -> tuple[str | None, int] | None:
    """The digits of the group at `i` (None: a number that is no digit group), or None if none."""
    t = toks[i]
    if t.kind == "int":
        return t.text, i + 1
    if t.kind == "word" and t.text in ("ноль", "нуль"):
        return "0", i + 1
    r = parse_integer(toks, i)
    if r is None:
        return None
    if r.bad or r.ordinal or r.value != int(r.value) or toks[i].kind != "word":
        return None, r.end
    return str(int(r.value)), r.end


def digit_strings(text: str) -> list[str | None]:
    """Every digit string of `text`, in order (None: a run with a non-digit number in it)."""
    toks = tokens(text)
    runs: list[str | None] = []
    current: list[str] | None = None
    spoiled = False
    i = 0
    while i < len(toks):
        g = _group(toks, i)
        if g is not None:
            digits, i = g
            spoiled = spoiled or digits is None
            current = (current or []) + [digits or ""]
            continue
        t = toks[i]
        if current is not None and not (t.text in _FILLERS or t.text in _JOINERS or t.kind == "dec"):
            spoiled = spoiled or (t.kind == "word" and garbled(t.text))  # "шестьдесят сем"
            runs.append(None if spoiled else "".join(current))
            current, spoiled = None, False
        elif t.kind == "dec":  # "45.67" inside a dictated number: digits on both sides
            current = (current or []) + [t.text.replace(".", "").replace(",", "")]
        i += 1
    if current is not None:
        runs.append(None if spoiled else "".join(current))
    return runs


def _fits(digits: str, spec: DigitsEntity) -> bool:
    return spec.min_length <= len(digits) <= spec.max_length


def extract_digits(text: str, spec: DigitsEntity) -> str | None:
    """The one digit string of `text` that fits the entity's length, or None (missing)."""
    runs = digit_strings(text)
    if any(r is None for r in runs):
        return None
    fitting = {r for r in runs if r is not None and _fits(r, spec)}
    return fitting.pop() if len(fitting) == 1 else None


def digits_from_dtmf(keys: str, spec: DigitsEntity) -> str | None:
    """The entity's value from keys pressed on the phone ("89161234567#"), or None.

    A trailing "#" ends the input and is dropped; any other non-digit key ("*") or a length
    outside the entity's bounds gives None.
    """
    digits = keys[:-1] if keys.endswith("#") else keys
    if not digits.isascii() or not digits.isdigit() or not _fits(digits, spec):
        return None
    return digits
