"""Does a Russian STT final look unfinished by its words? (end of turn, orchestrator/end_of_turn.py)

A caller who pauses inside an answer ("мне нужно" ... "к хирургу") leaves words that cannot end
a sentence: SpeechKit finalises the first part after its own pause detection, and taken as it
comes it would be a turn of its own. `looks_incomplete` tells such a final by its last word
(after a trailing "пожалуйста", which goes with any request and changes nothing):

- a preposition ("к", "на", "для", "по поводу"), a conjunction ("и", "а", "чтобы", "потому
  что"), the particles "не", "ни" and "бы" ("я хотел бы"), the pronoun "мне" ("можно мне");
- a modal or intent word that needs a complement ("нужно", "хочу", "можно", "скажите"), unless
  a yes/no or a negation answers with it ("да, можно", "нет, не нужно": complete); or such a
  word then a transitive infinitive with no object yet ("я хотела бы перенести", "нужно
  узнать"; not "хочу записаться");
- a hesitation ("э", "эм", "ну", "вот");
- a round number a smaller one may follow ("двадцать", "сто", "1000"; not "пять", "10").

A final that ends on "?" (SpeechKit's punctuation) is a whole question ("а?", "можно мне?"),
and question words are not in the lists: "что", "как", "а когда" are whole questions. A bare
"да" or "нет" is complete: it is the answer a yes/no state asks for (bench/README.md, 4b).
"""

from __future__ import annotations

import re

from orchestrator.entities.morph import analyzer, number_word
from orchestrator.text import normalize

__all__ = ["looks_incomplete"]

_PREPOSITIONS = frozenset({
    "в", "во", "на", "к", "ко", "с", "со", "у", "о", "об", "обо", "по", "за", "из", "от", "до",
    "для", "без", "про", "через", "при", "над", "под", "перед", "между", "около", "после",
    "насчет", "возле", "вместо", "кроме", "среди",
})  # fmt: skip
_CONJUNCTIONS = frozenset({"и", "а", "но", "или", "либо", "чтобы", "если", "хотя", "причем", "зато"})
_PARTICLES = frozenset({"не", "ни", "бы", "мне"})
# Word pairs that end nothing: "потому что ...", "то есть ...", "по поводу ..." (a compound
# preposition).
_PAIRS = frozenset({
    ("потому", "что"), ("так", "что"), ("то", "есть"), ("для", "того"), ("а", "то"),
    ("по", "поводу"), ("в", "течение"),
})  # fmt: skip
_MODALS = frozenset({
    "нужно", "надо", "нужен", "нужна", "нужны", "хочу", "хочется", "хотим", "хотел", "хотела",
    "хотели", "хотелось", "можно", "могу", "можете", "могли", "скажите", "подскажите",
    "расскажите", "объясните", "уточните", "давайте", "будьте",
})  # fmt: skip
# A modal after these is an answer in itself: "да, можно", "нет, не надо", "конечно, хочу".
_ANSWERED = frozenset({"да", "нет", "не", "конечно", "ага", "угу"})
_HESITATIONS = frozenset({"э", "ээ", "эээ", "эм", "эмм", "мм", "ммм", "ну", "вот", "типа", "короче"})
_TRANSPARENT = frozenset({"пожалуйста"})
_DIGITS = re.compile(r"[0-9]+")


def _dangling_number(word: str) -> bool:
    """A round number that a smaller one may follow: 20-90 by tens, hundreds, thousands."""
    if _DIGITS.fullmatch(word):
        value = int(word)
    else:
        num = number_word(word)
        if num is None or num.kind not in ("card", "mult"):
            return False
        value = int(num.value)
    return value >= 20 and value % 10 == 0


def _objectless_infinitive(words: list[str]) -> bool:
    """`words` end on a transitive infinitive right after a modal ("хочу узнать", "хотела бы
    перенести"): the object is still to come."""
    if not any(w in _MODALS or w == "бы" for w in words[-3:-1]):
        return False
    tag = analyzer().parse(words[-1])[0].tag
    return "INFN" in tag and "tran" in tag


def looks_incomplete(text: str) -> bool:
    """Whether `text` (an STT final, any case and punctuation) ends where a sentence cannot:
    on a preposition, conjunction, particle, modal needing a complement, hesitation or a round
    number; False for an empty text or a question ("а?": the caller asks to hear it again)."""
    if text.rstrip().endswith("?"):
        return False
    words = normalize(text).split()
    while words and words[-1] in _TRANSPARENT:
        words.pop()
    if not words:
        return False
    last = words[-1]
    before = words[-2] if len(words) > 1 else ""
    if last in _PREPOSITIONS or last in _CONJUNCTIONS or last in _PARTICLES or last in _HESITATIONS:
        return True
    if (before, last) in _PAIRS:
        return True
    if last in _MODALS:
        return before not in _ANSWERED
    return _dangling_number(last) or _objectless_infinitive(words)
