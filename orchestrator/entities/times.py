"""Times of day said by callers, and their resolution with the map's business hours.

Read (`extract_time`), as `SaidTime`:
- "в 10:30", "в 10.30", "в 10 30", "в десять тридцать", "в десять часов тридцать минут",
  "в десять ноль пять", "в пятнадцать", "в три", "в час", "в полдень", "в полночь";
- "в половине третьего", "полтретьего", "пол третьего" (2:30), "в четверть одиннадцатого"
  (10:15), "десять минут третьего" (2:10), "без пятнадцати три", "без четверти девять" (x:45);
- a period after the time: "утра", "дня", "вечера", "ночи";
- hedges and spans: "около трёх", "после трёх" -> `Approximate`; "к обеду", "в обед", "утром",
  "вечером" -> `Approximate` of a typical time; "с десяти до двенадцати" -> `Range`.
A shift ("на час позже", "на два часа раньше") is no time of day: "на час позже, в 12" is 12:00;
nor is a rough duration ("опоздаю минут на 10", "часа на два").
After a correction ("в десять, нет, в одиннадцать", "вернее", "то есть") only the times after it
count; two different times left in one phrase, or a time that cannot be (25:00, 10:70), are
missing.

Resolved (`resolve_time`) to a `datetime.time`: a time said as a 24-hour clock ("в 08:00", "в 08
00", "в восемь ноль ноль") is taken as said, and is missing outside business hours; else a named
period decides between 2:30 and 14:30; else the one inside business hours; if both or neither
are, 7..11 are morning and 1..6 afternoon.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time

from orchestrator.entities.integers import Int, parse_integer, word_at
from orchestrator.entities.morph import Token, garbled, lemma_of, number_word, tokens
from orchestrator.entities.numbers import correction_points
from orchestrator.entities.values import Approximate, ApproxKind, Period, Range, SaidTime

TimeValue = SaidTime | Range[SaidTime] | Approximate[SaidTime]

_PERIODS: dict[str, Period] = {
    "утра": "am", "утром": "am", "дня": "pm", "днем": "pm", "вечера": "pm", "вечером": "pm",
    "ночи": "night", "ночью": "night",
}  # fmt: skip
# A part of the day said instead of a time: its typical time, as a hedge.
_VAGUE: dict[str, tuple[SaidTime, ApproxKind]] = {
    "обед": (SaidTime(13, 0, "pm"), "about"),
    "утро": (SaidTime(10, 0, "am"), "about"),
    "вечер": (SaidTime(18, 0, "pm"), "about"),
}
_VAGUE_ADVERBS = {"утром": "утро", "вечером": "вечер", "днем": "обед"}
# "на час позже", "на два часа раньше": a shift of the booked time, not a time of day.
_SHIFTS = frozenset({"позже", "попозже", "раньше", "пораньше"})
_BEFORE: dict[str, ApproxKind] = {"около": "about", "примерно": "about", "после": "over"}


@dataclass(frozen=True, slots=True)
class TimeMention:
    """One time phrase: tokens [start, end) and its value (None: not a time that can be)."""

    start: int
    end: int
    value: TimeValue | None


def _card(toks: list[Token], i: int, hi: float) -> Int | None:
    r = parse_integer(toks, i)
    if r is None or r.bad or r.ordinal or r.value != int(r.value) or not 0 <= r.value <= hi:
        return None
    return r


def _hour_ordinal(toks: list[Token], i: int) -> int | None:
    """The hour named by an ordinal in the genitive ("третьего" -> 2; "первого" -> 12)."""
    r = parse_integer(toks, i)
    if r is None or not r.ordinal or not 1 <= r.value <= 12:
        return None
    h = int(r.value) - 1
    return 12 if h == 0 else h


def _text(toks: list[Token], i: int) -> str:
    return toks[i].text if 0 <= i < len(toks) else ""


def _skip(toks: list[Token], i: int, lemma: str) -> int:
    """`i + 1` if token `i` is a form of `lemma` ("часов", "минуты"), else `i`."""
    return i + 1 if i < len(toks) and toks[i].kind == "word" and lemma_of(toks[i].text) == lemma else i


def _half_past(toks: list[Token], i: int) -> tuple[SaidTime, int] | None:
    """'половина/четверть/N минут' + hour ordinal, and 'полтретьего'."""
    t = _text(toks, i)
    if t.startswith("пол") and len(t) > 6 and not t.startswith(("полт", "полов")):
        nw = number_word(t[3:])  # "полдесятого"
        if nw is not None and nw.kind == "ord" and 1 <= nw.value <= 12:
            return SaidTime(12 if nw.value == 1 else int(nw.value) - 1, 30), i + 1
    lemma = lemma_of(t) if toks[i].kind == "word" else ""
    if t == "пол" or lemma in ("половина", "четверть"):
        j = i + 2 if _text(toks, i + 1) == "-" else i + 1
        h = _hour_ordinal(toks, j)
        if h is not None:
            end = parse_integer(toks, j).end  # type: ignore[union-attr]
            return SaidTime(h, 15 if lemma == "четверть" else 30), end
    m = _card(toks, i, 59)
    if m is not None and m.value >= 1:
        j = _skip(toks, m.end, "минута")
        h = _hour_ordinal(toks, j) if j > m.end else None
        if h is not None:
            return SaidTime(h, int(m.value)), parse_integer(toks, j).end  # type: ignore[union-attr]
    return None


def _to_hour(toks: list[Token], i: int) -> tuple[SaidTime, int] | None:
    """'без пятнадцати три', 'без четверти девять' (token `i` is "без")."""
    j = i + 1
    if lemma_of(_text(toks, j)) == "четверть":
        mins, j = 15, j + 1
    else:
        m = _card(toks, j, 30)
        if m is None or m.value < 1:
            return None
        mins, j = int(m.value), _skip(toks, m.end, "минута")
    h = _card(toks, j, 24)
    if h is None or h.value < 1:
        return None
    return SaidTime(int(h.value) - 1 if h.value > 1 else 12, 60 - mins), h.end


def _clock(toks: list[Token], i: int) -> tuple[SaidTime | None, int] | None:
    """An hour with optional minutes: digits "10:30", "10 30", words "десять тридцать"."""
    t = toks[i]
    if t.kind in ("clock", "dec") and ":" in t.text or (t.kind == "dec" and "." in t.text):
        hh, mm = t.text.replace(".", ":").split(":")
        ok = len(mm) == 2 and int(hh) <= 24 and int(mm) < 60
        return (SaidTime(int(hh), int(mm), h24=len(hh) == 2 and hh[0] == "0") if ok else None), i + 1
    if t.kind == "word" and lemma_of(t.text) == "час" and word_at(toks, i - 1) is None:
        hour: Int | None = Int(1.0, i, i + 1)  # "в час", "в час тридцать"
    else:
        hour = _card(toks, i, 99)
        if hour is None:
            return None
    assert hour is not None
    j = _skip(toks, hour.end, "час")
    lead = toks[hour.start].text
    h24 = hour.digits_only and len(lead) == 2 and lead[0] == "0"  # "в 08 00"
    if _text(toks, j) in ("ноль", "нуль") and toks[j].kind == "word":
        m = _card(toks, j + 1, 9)
        h24 = h24 or (m is not None and toks[m.start].text in ("ноль", "нуль"))  # "восемь ноль ноль"
        mins, j = (0, j + 1) if m is None else (int(m.value), m.end)
    else:
        m = _card(toks, j, 99)
        if m is not None and m.digits_only != hour.digits_only:
            m = None  # "10 тридцать" is no time anyone says
        mins, j = (0, j) if m is None else (int(m.value), m.end)
        if m is not None and m.value < 10 and toks[m.start].kind == "word":
            return None, j  # "восемь пять": no minute is said like that
    if _skip(toks, j, "минута") > j:
        if mins == 0 and j == _skip(toks, hour.end, "час"):
            return None  # "пятнадцать минут": a duration
        j += 1
    if hour.value > 24 or mins > 59:
        return None, j
    return SaidTime(int(hour.value), mins, h24=h24), j


def _one(toks: list[Token], i: int) -> TimeMention | None:  # noqa: PLR0911
    """The time phrase starting at token `i`, or None."""
    t = _text(toks, i)
    if t in ("полдень", "полночь"):
        return TimeMention(i, i + 1, SaidTime(12, 0, "pm") if t == "полдень" else SaidTime(0, 0))
    if t == "без":
        r = _to_hour(toks, i)
        return None if r is None else TimeMention(i, r[1], r[0])
    if toks[i].kind == "word" and t in _VAGUE_ADVERBS:
        typical, kind = _VAGUE[_VAGUE_ADVERBS[t]]
        return TimeMention(i, i + 1, Approximate(typical, kind))
    if (
        toks[i].kind == "word"
        and lemma_of(t) in _VAGUE
        and _text(toks, i - 1) in ("к", "в", "на", "с", "после", "до")
    ):
        typical, kind = _VAGUE[lemma_of(t)]
        kind = {"после": "over", "до": "under"}.get(_text(toks, i - 1), kind)  # type: ignore[assignment]
        return TimeMention(i - 1, i + 1, Approximate(typical, kind))
    hp = _half_past(toks, i)
    if hp is not None:
        return TimeMention(i, hp[1], hp[0])
    c = _clock(toks, i)
    if c is None:
        return None
    said, end = c
    if end < len(toks) and said is not None and toks[end].text in _PERIODS:
        return TimeMention(i, end + 1, SaidTime(said.hour, said.minute, _PERIODS[toks[end].text], said.h24))
    return TimeMention(i, end, said)


def _duration_before(toks: list[Token], start: int) -> bool:
    """Whether "минут на" / "часа на" leads into the number at `start` ("опоздаю минут на 10"):
    a rough duration, no time of day."""
    return _text(toks, start - 1) == "на" and lemma_of(_text(toks, start - 2)) in ("минута", "час")


def time_mentions(toks: list[Token]) -> list[TimeMention]:
    """Every time phrase of `toks`, in order, with its hedge or span."""
    out: list[TimeMention] = []
    i = 0
    while i < len(toks):
        m = _one(toks, i)
        if (
            m is None
            or _text(toks, i - 1) == "через"
            or lemma_of(_text(toks, m.end)) in ("число", "месяц")
            or (_text(toks, m.start - 1) == "на" and _text(toks, m.end) in _SHIFTS)
            or _duration_before(toks, m.start)
        ):
            i += 1
            continue
        before = _text(toks, m.start - 1)
        nxt = _text(toks, m.end)
        if nxt in ("до", "-", "и") and before in ("с", "от", "между") or nxt == "или":
            b = _one(toks, m.end + 1) if m.end + 1 < len(toks) else None
            if b is not None and isinstance(m.value, SaidTime) and isinstance(b.value, SaidTime):
                m = TimeMention(m.start, b.end, Range(m.value, b.value))
        elif before in _BEFORE and isinstance(m.value, SaidTime):
            m = TimeMention(m.start - 1, m.end, Approximate(m.value, _BEFORE[before]))
        if m.end < len(toks) and toks[m.end].kind == "word" and garbled(toks[m.end].text):
            m = TimeMention(m.start, m.end, None)  # "в десять сорокк": a minute misheard
        out.append(m)
        i = max(m.end, i + 1)
    return out


def extract_time(text: str) -> TimeValue | None:
    """The one time said in `text` (see the module docstring), or None."""
    toks = tokens(text)
    ms = time_mentions(toks)
    later = [k for k in correction_points([t.text for t in toks]) if any(m.start > k for m in ms)]
    if later:  # "в десять, нет, в одиннадцать": only what follows the last correction counts
        ms = [m for m in ms if m.start > max(later)]
    values = {m.value for m in ms}
    if len(values) != 1:
        return None
    return values.pop()


def resolve_time(said: SaidTime, open_min: int, close_min: int) -> time | None:
    """`said` as a time of day; `open_min`/`close_min`: business hours in minutes after midnight."""
    h, m, period = said.hour, said.minute, said.period
    if h == 24 and m == 0:
        h = 0
    if h > 23 or m > 59:
        return None
    if said.h24:  # "в 08:00" is 8 in the morning: never flipped; outside business hours -> ask
        clash = (period == "pm" and h < 12) or (period == "am" and h >= 12)
        return time(h, m) if not clash and open_min <= h * 60 + m < close_min else None
    if period is not None and h > 12:
        return time(h, m) if period != "am" else None  # "в 15 дня" is still 15:00
    if period == "am":
        return time(0 if h == 12 else h, m)
    if period == "pm":
        return time(h if h == 12 else h + 12, m) if h else time(12, m)
    if period == "night":
        return time(0 if h == 12 else h + 12 if h >= 9 else h, m) if h <= 5 or h >= 9 else None
    if not 1 <= h <= 12:
        return time(h, m)
    am, pm = (12, 0) if h == 12 else (h, h + 12)
    inside = [x for x in (am, pm) if open_min <= x * 60 + m < close_min]
    if len(inside) == 1:
        return time(inside[0], m)
    return time(am if 7 <= h <= 12 else pm, m)
