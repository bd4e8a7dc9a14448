"""A small curated lexicon of Russian call-centre speech for the local intent classifier.

The n-gram embedder (`orchestrator.intents.ngram`) sees shared stems and, through lemmas, the
same word however it is inflected; it cannot see that different words mean the same thing
("сотрудник" and "оператор", "наличка" and "картой", "годится" and "подходит"). This module
supplies that, for the vocabulary callers use on any script, applied identically to a map's
examples and to the caller's words (so it never makes two texts less alike, only more):

- `SPELLINGS`: colloquial or STT spellings folded to one word before anything else
  ("ок", "оке" -> "окей"; "щас" -> "сейчас"; a diminutive "скидочка" -> "скидка"), where the analyzer would misread them ("ок" is
  parsed as the preposition "около").
- `CONTENT_WORDS`: words the analyzer tags as particles, conjunctions or interjections that still
  say what the caller means on a phone call: "да", "нет", "ага", "конечно", "спасибо", "верно".
  They count as content words (full n-gram weight, a lemma feature).
- `FILLER_WORDS`: discourse fillers that say nothing about the intent ("пожалуйста", "знаете",
  "слушайте", "вообще"): weighed like function words.
- Two rules of spoken word order: a "не" right before a pause (a comma) is "нет" ("не, давайте
  другое"), and "или нет" closing a question is no answer ("приём платный или нет").
- `CONCEPTS` (data in `concepts.py`): lemma (or word form) -> concept. Each content word whose lemma or form is listed adds one "~concept"
  feature besides its own lemma, so "дайте сотрудника" and "соедините с оператором" share
  "~person". Groups are synonyms in the call-centre sense (what a caller would use for the same
  request), not dictionary synonyms; a word belongs to at most one group. A negated word adds
  its concept negated ("~!yes" for "неправильно", "не подходит"), see `orchestrator.intents.ngram`;
  a negated word always counts as content, so "не надо" and "не нужна" share "~!need" although
  "надо" alone is as weak as a function word.
- `IDIOMS` also fold hedges away ("в принципе"), the bot's misunderstanding ("вы не поняли") to
  "ошиблись" and a wrong number ("ошибся номером") to "не туда позвонил"; an answer that is
  "можно" among particles ("ну можно") is consent. `QUESTION_WORDS` and `DECISIVE_CONCEPTS` feed
  the classifier's question penalty and its exception to FAQ precedence; `TOPIC_CONCEPTS`, what
  a question measures ("сколько длится"), feeds `orchestrator.intents.topics`. A "не" opening
  the answer before "давайте" is "нет"; a "спасибо" after nothing but confirming words is dropped
  ("да, именно так, спасибо" confirms, it takes no leave).
- `NOT_NEGATIONS`: words starting with "не" that are not a negated word ("несколько",
  "некогда"); every other adjective or adverb "не" + a known word of the same part of speech is
  read as "не" + that word ("неправильно" = "не правильно").

Keep it small and generic: a map's own wording belongs in its examples. Adding a word here
changes scores on every map, so re-run `voicebridge map lint dialogue_maps/` and
`tests/test_heldout.py` after an edit.
"""

from __future__ import annotations

import re
from types import MappingProxyType

from orchestrator.intents.concepts import CONCEPTS

SPELLINGS = MappingProxyType(
    {
        "ок": "окей",
        "оке": "окей",
        "окэй": "окей",
        "окей": "окей",
        "ok": "окей",
        "okay": "окей",
        "щас": "сейчас",
        "ща": "сейчас",
        "щаc": "сейчас",
        "чо": "что",
        "че": "что",
        "норм": "нормально",
        "нал": "наличные",
        "налом": "наличные",
        "безналом": "безнал",
        "стойте": "подождите",  # the analyzer reads it as "стоить" (a price word)
        "стой": "подожди",
        "неа": "нет",
        "не-а": "нет",
        "угум": "угу",
        "пжлст": "пожалуйста",
        "плиз": "пожалуйста",
        # diminutives said to soften a request: the same word to the caller
        "скидочка": "скидка",
        "скидочку": "скидку",
        "скидочки": "скидки",
        "скидочек": "скидок",
        "спс": "спасибо",
        "пасиб": "спасибо",
        "пасибо": "спасибо",
    }
)

CONTENT_WORDS = frozenset(
    {
        "да",
        "нет",
        "ага",
        "угу",
        "конечно",
        "разумеется",
        "естественно",
        "верно",
        "так",
        "спасибо",
        "окей",
        "ладно",
        "хватит",
        "стоп",
        "алло",
    }
)

FILLER_WORDS = frozenset(
    {
        "пожалуйста",
        "знаете",
        "знаешь",
        "слушайте",
        "послушайте",
        "слушай",
        "смотрите",
        "вообще",
        "короче",
        "типа",
        "просто",
        "кстати",
        "сколько",  # price, opening hours, duration, headcount: the rest of the phrase says which
        "девушка",
        "извините",
        "простите",
        "скажите",
        "подскажите",
        "пожалуй",
        "наверное",
        "вот",
        "ну",
        "эээ",
        "ээ",
        "эм",
        "ммм",
        "хм",
    }
)

NOT_NEGATIONS = frozenset(
    {
        "несколько",
        "некогда",
        "немного",
        "нечего",
        "некуда",
        "негде",
        "незачем",
        "неоткуда",
        "некоторый",
        "некоторые",
        "неужели",
        "небось",
        "нередко",
        "нежно",
        "нервно",
        "нежный",
        "нервный",
    }
)


# Question words that make a text a question ("откуда у вас мой номер", "а где вы находитесь"),
# not an answer or a request; "как", "когда", "что", "какой" are left out: "как хотите", "когда
# угодно", "что-то не то" answer. "где то", "кто то" (normalised "где-то") are no question.
QUESTION_WORDS = frozenset({"откуда", "почему", "зачем", "где", "куда", "кто", "чей", "чья", "чьи", "чье"})
_INDEFINITE = frozenset({"то", "нибудь", "либо"})


def asks(words: list[str]) -> bool:
    """Whether normalised `words` hold a question word (`QUESTION_WORDS`) not made indefinite."""
    return any(
        w in QUESTION_WORDS and (i + 1 == len(words) or words[i + 1] not in _INDEFINITE)
        for i, w in enumerate(words)
    )


def spelling(word: str) -> str:
    """`word` with its colloquial spelling folded (`SPELLINGS`), else itself."""
    return SPELLINGS.get(word, word)


def concept(lemma: str) -> str | None:
    """The concept group of a lemma, or None."""
    return CONCEPTS.get(lemma)


_NE_BEFORE_PAUSE = re.compile(r"(?<!\w)не(?=\s*[,.!?;:…—–-])", re.IGNORECASE)
# "не-не", "не, не": a repeated "не" is a "нет"; the last one still negates a word after it
# ("не не так" is "нет, не так", never "нет так", which reads as "да, так")
_NE_REPEATED = re.compile(r"(?<!\w)не(?:\s*[,-]?\s*не)+(?!\w)(?P<next>\s*\w)?", re.IGNORECASE)


def _repeated_ne(m: re.Match[str]) -> str:
    following = m.group("next")
    return "нет" if following is None else f"нет не {following.lstrip()}"


# Fixed phrases whose words say the opposite of what they mean, by their normalised words.
IDIOMS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("почему", "бы", "и", "нет"), ("давайте",)),
    (("почему", "бы", "нет"), ("давайте",)),
    (("не", "против"), ("согласен",)),
    (("не", "возражаю"), ("согласен",)),
    (("не", "возражаем"), ("согласны",)),
    (("не", "вопрос"), ("хорошо",)),
    (("без", "проблем"), ("хорошо",)),
    (("да", "нет", "проблем"), ("хорошо",)),
    (("нет", "проблем"), ("хорошо",)),
    (("да", "нет"), ("нет",)),  # "да нет, не так": a "да" before "нет" only leads into the no
    (("не", "стоит"), ("не", "нужно")),  # "пожалуй, не стоит": not worth it, not a price
    # the bot misunderstood: "вы не поняли", "неправильно поняли"
    (("не", "поняли"), ("ошиблись",)),
    (("не", "так", "поняли"), ("ошиблись",)),
    (("неправильно", "поняли"), ("ошиблись",)),
    (("не", "расслышали"), ("ошиблись",)),
    # a wrong number is a leave-taking, not the bot's mistake
    *(((form, "номером"), ("не", "туда", "позвонил")) for form in ("ошибся", "ошиблась", "ошиблись")),
    (("не", "туда", "попал"), ("не", "туда", "позвонил")),
    (("не", "туда", "попала"), ("не", "туда", "позвонил")),
    (("не", "туда", "попали"), ("не", "туда", "позвонил")),
    # how long, said with "время": "сколько по времени", "сколько времени займёт"
    (("сколько", "по", "времени"), ("сколько", "длится")),
    (("сколько", "времени"), ("сколько", "длится")),
    (("по", "времени", "долго"), ("долго",)),
    # hedges that soften an answer without changing it: "в принципе да", "можно в принципе"
    (("в", "принципе"), ()),
    (("в", "целом"), ()),
)

# A consent said with the modal alone ("ну можно", "можно, пожалуй"): the whole answer is "можно"
# with fillers and particles around it; "можно" in a request ("можно в субботу") is no consent.
_BARE_CONSENT = frozenset({"можно", "да", "ну", "пожалуй", "наверное", "вот", "ладно", "так", "тогда"})

# Concepts of a decision that a question in the same breath does not override: "дороговато,
# пожалуй откажусь" is a refusal that names the price, not a price question (see the classifier's
# FAQ precedence).
DECISIVE_CONCEPTS = frozenset({"change_mind"})

# Concepts a question is about, not only what it names: a text with one of them ("окна на балконе
# это сколько по времени") asks about that, so a FAQ entry none of whose questions has it is no
# answer to it, however many other words they share (see the classifier's topic penalty).
TOPIC_CONCEPTS = frozenset({"duration"})

# Words that affirm what the bot said back ("всё верно", "правильно"), unlike a "да" that leads
# into an answer ("да, на 25е"): with one of them, a date or time said beside it is only repeated,
# so it does not favour the intents that take an entity (see the classifier's entity bonus).
AFFIRMING_LEMMAS = frozenset({"верно", "правильно", "подтверждать", "подтвердить"})


# A "не" opening the answer before a hortative ("не давайте отменим", "не, давай потом") is the
# answer "нет": "давайте" proposes, it is not what is negated.
_NE_BEFORE_HORTATIVE = re.compile(r"^(\W*)не(?=\s+давай(?:те)?(?!\w))", re.IGNORECASE)


def fold_raw(text: str) -> str:
    """Rules that need the punctuation, before normalisation: "не-не" -> "нет", "не," -> "нет,"."""
    text = _NE_BEFORE_HORTATIVE.sub(r"\1нет", text)
    return _NE_BEFORE_PAUSE.sub("нет", _NE_REPEATED.sub(_repeated_ne, text))


def _idioms(words: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(words):
        for phrase, meaning in IDIOMS:
            if tuple(words[i : i + len(phrase)]) == phrase:
                out.extend(meaning)
                i += len(phrase)
                break
        else:
            out.append(words[i])
            i += 1
    return out


# Words that confirm what the bot said: a "спасибо" after nothing but these ("да, именно так,
# спасибо", "совершенно верно, спасибо") thanks for the booking and takes no leave. "ладно",
# "хорошо", "всё" are left out: "ладно, спасибо" and "всё, спасибо" close the call.
_CONFIRMING = frozenset(
    {"да", "ага", "угу", "конечно", "верно", "правильно", "точно", "именно", "так", "совершенно",
     "подтверждаю", "окей", "отлично", "договорились"}
)  # fmt: skip


def fold_words(words: list[str]) -> list[str]:
    """Spellings folded (`SPELLINGS`), `IDIOMS` replaced, the tag question "или нет" reduced to "или",
    a thank-you after a confirmation dropped (`_CONFIRMING`)."""
    out: list[str] = []
    for w in _idioms([spelling(w) for w in words]):
        w = spelling(w)
        if w == "нет" and out and out[-1] == "или":
            continue
        if w == "спасибо" and out and set(out) <= _CONFIRMING:
            continue
        out.append(w)
    if "можно" in out and set(out) <= _BARE_CONSENT:
        out.append("согласен")
    return out
