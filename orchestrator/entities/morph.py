"""Words and tokens for the entity grammars: one pymorphy3 analyzer per process, cached parses.

`number_word(w)` says what a Russian word means as a number in any grammatical case
("двухстах" -> cardinal 200, "тридцатого" -> ordinal 30, "сотен" -> the noun 100, "тыщи" ->
1000): the morphological analyzer finds the lemma, and the lemma tables below give the value,
so no per-case word lists are kept. `tokens(text)` splits STT text into words, digit runs and
the punctuation the grammars need ("-", ",", ":", "."), lower-cased with ё -> е; a run of more
than `MAX_TOKEN_DIGITS` digits is one token of kind "long" that no grammar reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import pymorphy3

NumKind = Literal["card", "mult", "noun", "half", "coll", "ord"]

_CARD = {
    "ноль": 0, "нуль": 0, "один": 1, "два": 2, "три": 3, "четыре": 4, "пять": 5, "шесть": 6,
    "семь": 7, "восемь": 8, "девять": 9, "десять": 10, "одиннадцать": 11, "двенадцать": 12,
    "тринадцать": 13, "четырнадцать": 14, "пятнадцать": 15, "шестнадцать": 16,
    "семнадцать": 17, "восемнадцать": 18, "девятнадцать": 19, "двадцать": 20, "тридцать": 30,
    "сорок": 40, "пятьдесят": 50, "шестьдесят": 60, "семьдесят": 70, "восемьдесят": 80,
    "девяносто": 90, "сто": 100, "двести": 200, "триста": 300, "четыреста": 400,
    "пятьсот": 500, "шестьсот": 600, "семьсот": 700, "восемьсот": 800, "девятьсот": 900,
    "полтораста": 150,
}  # fmt: skip
_MULT = {"тысяча": 1000, "миллион": 1_000_000, "миллиард": 1_000_000_000}
_ABBR = {"тыс": 1000, "млн": 1_000_000, "млрд": 1_000_000_000}
_NOUN = {"сотня": 100, "десяток": 10}  # "пять сотен", "полтора десятка"
_COLL = {
    "двое": 2, "трое": 3, "четверо": 4, "пятеро": 5, "шестеро": 6, "семеро": 7,
    "восьмеро": 8, "девятеро": 9, "десятеро": 10,
}  # fmt: skip
_ORD_UNITS = ["первый", "второй", "третий", "четвертый", "пятый", "шестой", "седьмой",
              "восьмой", "девятый", "десятый", "одиннадцатый", "двенадцатый", "тринадцатый",
              "четырнадцатый", "пятнадцатый", "шестнадцатый", "семнадцатый", "восемнадцатый",
              "девятнадцатый"]  # fmt: skip
_ORD_TENS = ["двадцатый", "тридцатый", "сороковой", "пятидесятый", "шестидесятый",
             "семидесятый", "восьмидесятый", "девяностый"]  # fmt: skip
_ORD_HUNDREDS = ["сотый", "двухсотый", "трехсотый", "четырехсотый", "пятисотый", "шестисотый",
                 "семисотый", "восьмисотый", "девятисотый"]  # fmt: skip
_ORD = {
    **{w: i for i, w in enumerate(_ORD_UNITS, start=1)},
    **{w: 10 * i for i, w in enumerate(_ORD_TENS, start=2)},
    **{w: 100 * i for i, w in enumerate(_ORD_HUNDREDS, start=1)},
    "тысячный": 1000,
    "миллионный": 1_000_000,
}
_TABLES: list[tuple[NumKind, dict[str, int]]] = [
    ("card", _CARD), ("mult", _MULT), ("noun", _NOUN), ("coll", _COLL), ("ord", _ORD),
]  # fmt: skip
# Denominators of decimals said in words: "три десятых", "двадцать пять сотых".
DENOMINATORS = {"десятый": 10, "сотый": 100, "тысячный": 1000}


@dataclass(frozen=True, slots=True)
class NumWord:
    """A number word: its kind, value, lemma and whether this form is plural or genitive."""

    kind: NumKind
    value: float
    lemma: str
    plural: bool
    genitive: bool


_morph: pymorphy3.MorphAnalyzer | None = None


def analyzer() -> pymorphy3.MorphAnalyzer:
    """The process-wide analyzer (loaded once, ~0.2 s and ~15 MB; the dictionary ships in a wheel)."""
    global _morph
    if _morph is None:
        _morph = pymorphy3.MorphAnalyzer(lang="ru")
    return _morph


def _lemma(normal_form: str) -> str:
    return normal_form.replace("ё", "е")


@lru_cache(maxsize=65536)
def number_word(word: str) -> NumWord | None:
    """What `word` (lower case, ё -> е) means as a number, or None if it is no number word.

    Number readings win over homonyms ("семью": семь, not семья; "сорока": сорок).
    """
    if word in _ABBR:
        return NumWord("mult", _ABBR[word], word, False, False)
    if word == "полтора" or word in ("полторы", "полутора"):
        return NumWord("half", 1.5, "полтора", False, word == "полутора")
    for p in analyzer().parse(word):
        lemma = _lemma(p.normal_form)
        for kind, table in _TABLES:
            if lemma in table:
                tag = p.tag
                return NumWord(kind, table[lemma], lemma, "plur" in tag, "gent" in tag)
    return None


@lru_cache(maxsize=65536)
def lemma_of(word: str) -> str:
    """The most likely lemma of `word` (ё -> е)."""
    return _lemma(analyzer().parse(word)[0].normal_form)


@lru_cache(maxsize=65536)
def lemmas_of(word: str) -> frozenset[str]:
    """Every lemma `word` may have ("стали": сталь, стать)."""
    return frozenset(_lemma(p.normal_form) for p in analyzer().parse(word))


@lru_cache(maxsize=65536)
def is_known(word: str) -> bool:
    """Whether the dictionary knows `word` (an unknown word next to a number spoils it)."""
    return bool(analyzer().word_is_known(word)) or word in _ABBR


@lru_cache(maxsize=65536)
def is_numeral(word: str) -> bool:
    """Whether the analyzer tags `word` as a numeral (NUMR), known to our tables or not."""
    return any("NUMR" in p.tag for p in analyzer().parse(word))


TokKind = Literal["word", "int", "dec", "ord", "clock", "punct", "long"]

# A digit run longer than this is kind "long", which no grammar reads: its entity is missing
# and the map asks again. Longer runs are no phone, card or account number, and a 5,000-digit
# one would overflow float arithmetic or hit Python's int-string limit (4,300 digits).
MAX_TOKEN_DIGITS = 24


@dataclass(frozen=True, slots=True)
class Token:
    """One token: `text` as written (lower case), `kind`, and `gap`, the text before it."""

    text: str
    kind: TokKind
    gap: str


_UNIT_FIXES = [
    (re.compile(r"(?<=\d)\s*(?:м2|м²|кв\.?\s*м\.?|квм)(?=\W|$)"), " квадратных метров"),
    (re.compile(r"(?<=\d)\s*кв\.?(?=\W|$)"), " квадратных"),
    (re.compile(r"(?<=\d)\s*м\.?(?=\W|$)"), " метров"),
]
_TOKEN = re.compile(
    r"(?P<clock>\d{1,2}:\d{2})"
    r"|(?P<ord>\d+(?:-(?:ый|ой|ий|ого|го|ому|му|ом|ым|м|ая|ую|ое|ые|ых|х|е|я|й)"
    r"|(?:ый|ой|ий|ого|го|ому|му|ым|ом|ых|ая|ую|ое|ые|й|е|я))(?![а-я]))"
    r"|(?P<dec>\d+[.,]\d+)"
    r"|(?P<int>\d+)"
    r"|(?P<word>[а-яa-z]+)"
    r"|(?P<punct>[-–—,:.?!;()+])"
)


def tokens(text: str) -> list[Token]:
    """The tokens of `text` (see the module docstring); other characters are dropped."""
    norm = text.lower().replace("ё", "е")
    for rx, repl in _UNIT_FIXES:
        norm = rx.sub(repl, norm)
    out: list[Token] = []
    pos = 0
    for m in _TOKEN.finditer(norm):
        kind = m.lastgroup
        assert kind is not None
        tok_kind: TokKind = "punct" if kind == "punct" else kind  # type: ignore[assignment]
        text_ = m.group(0)
        if tok_kind == "punct" and text_ in "–—":
            text_ = "-"
        elif tok_kind != "word" and m.end() - m.start() > MAX_TOKEN_DIGITS and _too_many_digits(text_):
            tok_kind = "long"
        out.append(Token(text_, tok_kind, norm[pos : m.start()]))
        pos = m.end()
    return out


def _too_many_digits(text: str) -> bool:
    return sum(c.isdigit() for c in text) > MAX_TOKEN_DIGITS


def ordinal_digits(text: str) -> int:
    """The number of an ordinal digit token ("21-е" -> 21)."""
    return int(re.match(r"\d+", text).group(0))  # type: ignore[union-attr]


def _all_forms(lemmas: list[str]) -> frozenset[str]:
    forms: set[str] = set()
    for lemma in lemmas:
        for p in analyzer().parse(lemma):
            if _lemma(p.normal_form) == lemma:
                forms |= {f.word.replace("ё", "е") for f in p.lexeme}
                break
    return frozenset(forms)


# Every form of every cardinal, multiplier and collective noun ("двухстах", "тысячами"), for
# the n-gram embedder's number folding.
NUMBER_WORDS: frozenset[str] = _all_forms([*_CARD, *_MULT, *_NOUN]) | frozenset(
    {"полтора", "полторы", "полутора", *_ABBR}
)


_NUMERAL_STEMS = ("сем", "пят", "шест", "восем", "девят", "десят", "двадцат", "тридцат", "четыр")
_NOT_TYPOS = frozenset({"сотка", "сотки", "соток", "сотку", "сеть", "сети", "сетью"})


def _one_edit(a: str, b: str) -> bool:
    """Whether `a` and `b` differ by exactly one insertion, deletion or substitution."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i + (len(a) == len(b)) :] == b[i + 1 :]


@lru_cache(maxsize=65536)
def garbled(word: str) -> bool:
    """Whether `word` may be a misheard number word: unknown, a numeral stem ("сем", "пят"), or
    one edit from a number form ("сорокк", "пятьдесть") while being no number word itself."""
    if not is_known(word):
        return True
    if word in NUMBER_WORDS or word in _NOT_TYPOS or number_word(word) is not None:
        return False
    if word in _NUMERAL_STEMS:
        return True
    return len(word) >= 4 and any(_one_edit(word, f) for f in NUMBER_WORDS if len(f) >= 4)
