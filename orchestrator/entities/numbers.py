"""Numbers said by callers: every number phrase of a text, and the one a number entity takes.

A mention is one number phrase (see `integers` for the grammar) with what surrounds it:
- decimals: "семь целых три десятых" 7.3, "семь и три десятых", "семь запятая пять", "сорок пять
  и пять" 45.5, "три десятых" 0.3;
- ranges: "восемьдесят-девяносто", "80-90", "от 80 до 90", "между восемьюдесятью и девяноста",
  "восемьдесят или девяносто", "метров восемьдесят девяносто" -> `Range`;
- hedges: "около ста", "примерно", "где-то", "порядка" (about), "сто с хвостиком", "с лишним",
  "больше ста" (over), "не больше ста", "до ста" (under) -> `Approximate`;
- never a fragment: a phrase the grammar cannot read as one number, or next to a word the
  dictionary does not know ("сто сорокк") or a vague quantity ("несколько сотен"), has the value
  None: the entity is missing and the map asks again, rather than taking part of it.

`extract_number(text, spec)` picks the entity's value: mentions next to the entity's unit words
win ("2 комнаты, 45 метров" -> 45); after a correction ("сорок, нет, пятьдесят") only the
mentions after it count; out-of-bounds numbers are skipped; if what is left is not one value (two
different numbers, or a spoiled phrase) the entity is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.dialogue_map.models import NumberEntity
from orchestrator.entities.integers import VAGUE, Int, is_denominator, parse_integer, word_at
from orchestrator.entities.morph import Token, garbled, is_known, is_numeral, lemma_of, tokens
from orchestrator.entities.values import Approximate, ApproxKind, Number, Range

NumberValue = Number | Range[Number] | Approximate[Number]

_INTEGER_PART = frozenset({"целых", "целая", "целое", "целые", "целой", "целую"})
_PREFIX_HEDGES: dict[str, ApproxKind] = {
    "около": "about", "примерно": "about", "приблизительно": "about", "порядка": "about",
    "почти": "about", "ориентировочно": "about", "больше": "over", "более": "over",
    "свыше": "over", "минимум": "over", "меньше": "under", "менее": "under",
    "максимум": "under", "до": "under", "от": "over", "может": "about",
}  # fmt: skip
_SUFFIX_OVER = frozenset({"хвостиком", "лишним", "небольшим", "копейками", "гаком"})
_CORRECTIONS = frozenset({"нет", "вернее", "точнее", "ой", "извините", "простите", "даже"})
_CORRECTION_PAIRS = frozenset({("то", "есть"), ("в", "смысле")})  # "то есть сто", "в смысле сто"
# What may sit between two parts of one number said with a pause: "двести эээ пятьдесят".
_PAUSES = frozenset({"ну", "вот", "так", "это", "значит", "и", "как", "бы", ",", ".", "..."})


@dataclass(frozen=True, slots=True)
class Mention:
    """One number phrase: tokens [start, end) and its value (None: spoiled, never a fragment)."""

    start: int
    end: int
    value: NumberValue | None
    ordinal: bool = False


def tidy(value: float) -> Number:
    """An int for integral values, else the float rounded to 6 places (7.3, not 7.300000001)."""
    rounded = round(value, 6)
    return int(rounded) if rounded.is_integer() else rounded


def _fraction(toks: list[Token], j: int, whole: float) -> tuple[float, int] | None:
    """The decimal part read at `j` ("три десятых", "двадцать пять", "ноль пять") after `whole`."""
    zeros = 0
    while j < len(toks) and toks[j].text in ("ноль", "нуль"):
        zeros, j = zeros + 1, j + 1
    frac = parse_integer(toks, j)
    if frac is None:
        return (whole, j) if zeros else None
    if frac.bad or frac.ordinal or frac.value != int(frac.value):
        return None
    den_word = word_at(toks, frac.end)
    if is_denominator(den_word) and not zeros:
        assert den_word is not None
        den = {"десятый": 10, "сотый": 100, "тысячный": 1000}[den_word.lemma]
        if frac.value >= den:
            return None
        return whole + frac.value / den, frac.end + 1
    digits = zeros + len(str(int(frac.value)))
    return whole + frac.value / 10**digits, frac.end


def _decimal(toks: list[Token], r: Int) -> tuple[float, int] | None:
    """`r` extended by a decimal part, or None if it has none; (value, end)."""
    j = r.end
    if r.ordinal or r.bad or j >= len(toks) or r.value != int(r.value):
        return None
    t = toks[j].text
    if t in _INTEGER_PART or t == "запятая":
        return _fraction(toks, j + 1, r.value) or (float("nan"), j + 1)
    nw = word_at(toks, j)
    if is_denominator(nw) and r.value < 1000:
        assert nw is not None
        den = {"десятый": 10, "сотый": 100, "тысячный": 1000}[nw.lemma]
        return (r.value / den, j + 1) if r.value < den else (float("nan"), j + 1)
    if t == "и" and j + 1 < len(toks):
        nxt = parse_integer(toks, j + 1)
        if nxt is None or nxt.bad or nxt.ordinal:
            return None
        if is_denominator(word_at(toks, nxt.end)):
            return _fraction(toks, j + 1, r.value)
        if 1 <= nxt.value <= 9 and r.value % 10 and parse_integer(toks, nxt.end) is None:
            return r.value + nxt.value / 10, nxt.end  # "сорок пять и пять", not "сорок и пять"
    return None


def _plain(toks: list[Token], i: int) -> Mention | None:
    """A number with its decimal part, no hedge or range; None if no number starts at `i`."""
    r = parse_integer(toks, i)
    if r is None:
        return None
    if r.bad:
        return Mention(i, r.end, None, r.ordinal)
    dec = _decimal(toks, r)
    if dec is not None:
        value, end = dec
        return Mention(i, end, None if value != value else tidy(value))  # NaN: broken decimal
    return Mention(i, r.end, tidy(r.value), r.ordinal)


def _shape(v: Number) -> int:
    """How many trailing zeros: numbers of one shape in a row are a range ("80 90", "2 3")."""
    n, z = int(v), 0
    if n != v or n == 0:
        return -1
    while n % 10 == 0:
        n, z = n // 10, z + 1
    return z if n < 10 else -2


def _range(a: Mention, b: Mention) -> Mention:
    if not isinstance(a.value, int | float) or not isinstance(b.value, int | float):
        return Mention(a.start, b.end, None)
    if a.ordinal != b.ordinal or a.value == b.value:
        return Mention(a.start, b.end, None)
    lo, hi = sorted((a.value, b.value))
    return Mention(a.start, b.end, Range(lo, hi), a.ordinal)


def _hedge_before(toks: list[Token], i: int) -> tuple[ApproxKind | None, int]:
    """The hedge word(s) right before token `i`: (kind, start index) or (None, i)."""
    if i >= 1 and toks[i - 1].text in _PREFIX_HEDGES:
        kind = _PREFIX_HEDGES[toks[i - 1].text]
        start = i - 1
        if start >= 1 and toks[start - 1].text == "не" and kind in ("over", "under"):
            return ("under" if kind == "over" else "over"), start - 1
        return kind, start
    if i >= 3 and [t.text for t in toks[i - 3 : i]] == ["где", "-", "то"]:
        return "about", i - 3
    if i >= 2 and [t.text for t in toks[i - 2 : i]] == ["где", "то"]:
        return "about", i - 2
    return None, i


def _hedge_after(toks: list[Token], j: int) -> tuple[ApproxKind | None, int]:
    """The hedge right after token `j - 1` ("с хвостиком", "или около того", "примерно")."""
    words = [t.text for t in toks[j : j + 3]]
    if len(words) >= 2 and words[0] == "с" and words[1] in _SUFFIX_OVER:
        return "over", j + 2
    if words[:2] == ["с", "чем"]:
        return "over", j + 2 + (words[2:3] == ["-"])
    if words[:3] == ["или", "около", "того"]:
        return "about", j + 3
    if words[:2] in (["или", "больше"], ["и", "больше"]):
        return "over", j + 2
    if words[:1] in (["примерно"], ["приблизительно"]):
        return "about", j + 1
    return None, j


def _spoiled_by_neighbours(toks: list[Token], m: Mention) -> bool:
    """An unknown word or a vague quantity right next to the phrase, or a word right after it
    that may be a misheard number word ("сто сем", "сто сорокк"): it may be part of it."""
    for k in (m.start - 1, m.end):
        if 0 <= k < len(toks) and toks[k].kind == "word":
            w = toks[k].text
            if not is_known(w) or (is_numeral(w) and word_at(toks, k) is None):
                return True
            if lemma_of(w) in VAGUE or (k == m.end and garbled(w)):
                return True
    return False


def is_pause(tok: Token) -> bool:
    """A filler word ("эээ", "ну"), "и" or punctuation: a pause inside one phrase."""
    t = tok.text
    return t in _PAUSES or (tok.kind == "word" and set(t) <= {"э", "м", "а"})


def _free_slot(a: Mention, b: Mention) -> bool:
    """Whether `b` fits the zeros of `a` as one number would: 200 + 50, 1000 + 300, 150 + 5."""
    if a.ordinal or not isinstance(a.value, int) or not isinstance(b.value, int) or b.value <= 0:
        return False
    zeros, n = 0, a.value
    while n and n % 10 == 0:
        n, zeros = n // 10, zeros + 1
    return b.value < int(10**zeros)


def _split_numbers(toks: list[Token], out: list[Mention]) -> list[Mention]:
    """Spoil both parts of a number said with a pause ("двести, пятьдесят", "сто и пятьдесят")."""
    res = list(out)
    for n in range(len(res) - 1):
        a, b = out[n], out[n + 1]
        if all(is_pause(t) for t in toks[a.end : b.start]) and _free_slot(a, b):
            res[n], res[n + 1] = Mention(a.start, a.end, None), Mention(b.start, b.end, None, b.ordinal)
    return res


def mentions(toks: Sequence[Token]) -> list[Mention]:  # noqa: C901, PLR0912
    """Every number phrase of `toks`, in order (see the module docstring)."""
    tl = list(toks)
    out: list[Mention] = []
    i = 0
    while i < len(tl):
        m = _plain(tl, i)
        if m is None:
            i += 1
            continue
        hedge, start = _hedge_before(tl, i)
        j = m.end
        nxt = tl[j].text if j < len(tl) else ""
        # a second number joined by a dash, "до" (after "от"), "и" (after "между"), "или", or nothing
        joined = (
            nxt == "-"
            or (nxt == "до" and hedge == "over" and tl[start].text == "от")
            or (nxt == "и" and start >= 1 and tl[start - 1].text == "между")
            or nxt == "или"
        )
        b = _plain(tl, j + 1) if joined else _plain(tl, j) if j < len(tl) and tl[j].gap != "" else None
        if b is not None and (joined or _shape_pair(m, b)):
            m = _range(m, b)
            hedge = None
            if start >= 1 and tl[start - 1].text == "между":
                start -= 1
        elif b is not None and not joined:
            m = Mention(m.start, b.end, None)  # "пять двадцать": not one number
        after, end = _hedge_after(tl, m.end)
        kind = hedge or after
        if kind is not None and isinstance(m.value, int | float):
            m = Mention(start, end, Approximate(m.value, kind), m.ordinal)
        else:
            m = Mention(min(start, m.start), max(end, m.end), m.value, m.ordinal)
        if m.value is not None and _spoiled_by_neighbours(tl, m):
            m = Mention(m.start, m.end, None, m.ordinal)
        out.append(m)
        i = m.end
    return _split_numbers(tl, out)


def _shape_pair(a: Mention, b: Mention) -> bool:
    """Two adjacent numbers of one shape, rising: "восемьдесят девяносто", "два три"."""
    if not isinstance(a.value, int | float) or not isinstance(b.value, int | float):
        return False
    return _shape(a.value) == _shape(b.value) >= 0 and a.value < b.value


def iter_numbers(text: str) -> list[NumberValue | None]:
    """The value of every number phrase of `text`, in order (None for a spoiled phrase)."""
    return [m.value for m in mentions(tokens(text))]


def _in_bounds(v: NumberValue, spec: NumberEntity) -> bool:
    if isinstance(v, Range):
        return _in_bounds(v.low, spec) or _in_bounds(v.high, spec)
    x = v.value if isinstance(v, Approximate) else v
    return (spec.min is None or x >= spec.min) and (spec.max is None or x <= spec.max)


def _unit_near(toks: list[Token], m: Mention, units: Sequence[str]) -> bool:
    near = [m.end, m.start - 1]
    if m.start >= 2 and len(toks[m.start - 1].text) <= 2:
        near.append(m.start - 2)  # "метров на пятьдесят"
    return any(0 <= k < len(toks) and toks[k].text.startswith(tuple(units)) for k in near)


def correction_points(words: Sequence[str]) -> list[int]:
    """Indices of the words that start a correction ("нет", "вернее", "то есть", "в смысле")."""
    return [
        k for k, w in enumerate(words) if w in _CORRECTIONS or (k and (words[k - 1], w) in _CORRECTION_PAIRS)
    ]


def number_heard(text: str, spec: NumberEntity) -> bool:
    """Whether `text` has a number phrase that may be meant for the entity: a spoiled one, or one
    within its bounds (a missing value after such a phrase is `Unreadable`, not absent)."""
    ms = mentions(tokens(text))
    if spec.forms != "any":
        ms = [m for m in ms if m.ordinal == (spec.forms == "ordinal")]
    return any(m.value is None or _in_bounds(m.value, spec) for m in ms)


def extract_number(text: str, spec: NumberEntity) -> NumberValue | None:
    """The entity's value in `text` (see the module docstring), or None (missing)."""
    toks = tokens(text)
    ms = mentions(toks)
    if spec.forms != "any":
        ms = [m for m in ms if m.ordinal == (spec.forms == "ordinal")]
    fixes = correction_points([t.text for t in toks])
    if fixes and ms:
        last = max((k for k in fixes if any(m.start > k for m in ms)), default=-1)
        ms = [m for m in ms if m.start > last] if any(m.end <= last for m in ms) else ms
    if spec.units:
        marked = [m for m in ms if _unit_near(toks, m, [u.lower() for u in spec.units])]
        if marked:
            others = {m.value for m in ms if m not in marked and m.value is not None}
            if any(_in_bounds(v, spec) for v in others - {m.value for m in marked}):
                return None  # "сто двадцать, может сто тридцать метров": which one?
            ms = marked
    if any(m.value is None for m in ms):
        return None
    values = {m.value for m in ms if m.value is not None and _in_bounds(m.value, spec)}
    return values.pop() if len(values) == 1 else None
