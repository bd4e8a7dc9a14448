"""Local intent classifier: n-gram embedder, entity extraction, intents and FAQ on Russian speech."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator.contracts import IntentClassifier
from orchestrator.dialogue_map.loader import load_dialogue_map, parse_dialogue_map
from orchestrator.dialogue_map.models import ChoiceEntity, DialogueMap, NumberEntity, RegexEntity
from orchestrator.entities.values import SaidDate
from orchestrator.intents.classifier import VectorIntentClassifier
from orchestrator.intents.embedder import Embedder, SparseEmbedder
from orchestrator.intents.entities import extract_choice, extract_entities, extract_regex
from orchestrator.intents.ngram import CharNgramEmbedder, sparse_dot
from orchestrator.intents.topics import closed_objects, topics, vocabulary
from orchestrator.text import normalize

MAPS = Path(__file__).resolve().parents[1] / "dialogue_maps"
HELDOUT = MAPS / "eval" / "cleaning_quote.ru.heldout.json"

# --- entities (numbers, times, dates, digit strings: tests/test_entities_*.py) ---


def test_choice_and_regex() -> None:
    day = ChoiceEntity(type="choice", values={"среду": ["сред"], "завтра": ["завтра"]})
    assert extract_choice("давайте в СРЕДУ", day) == "среду"
    assert extract_choice("завтра или в среду", day) == "завтра"  # earliest wins
    assert extract_choice("послезавтра", day) is None  # stems match word starts only
    assert extract_choice("в пятницу", day) is None
    phrase = ChoiceEntity(type="choice", values={"terapevt": ["лечить зуб"]})
    assert extract_choice("хочу лечить зубы", phrase) == "terapevt"
    t = RegexEntity(type="regex", pattern=r"(\d{1,2}:\d{2})")
    assert extract_regex("давайте в 10:30", t) == "10:30"
    assert extract_regex("давайте утром", t) is None
    assert extract_regex("код 123", RegexEntity(type="regex", pattern=r"\d+")) == "123"


def test_extract_entities_skips_absent_and_unknown() -> None:
    specs = {"n": NumberEntity(type="number")}
    assert extract_entities("сорок", ["n", "unknown"], specs) == {"n": 40}
    assert extract_entities("нет", ["n"], specs) == {}


# --- embedder ---


def test_normalize() -> None:
    assert normalize("  Ёлки-палки,  ДОРОГО!!! ") == "елки палки дорого"


async def test_ngram_embedder_sparse_and_dense_agree() -> None:
    emb = CharNgramEmbedder(dim=512)
    assert isinstance(emb, Embedder) and isinstance(emb, SparseEmbedder)
    texts = ["сорок пять метров", "дорого", ""]
    sparse = emb.embed_sparse(texts)
    dense = await emb.embed(texts)
    assert [len(v) for v in dense] == [512, 512, 512]
    for s, d in zip(sparse, dense, strict=True):
        assert {i: w for i, w in enumerate(d) if w} == pytest.approx(s)
    assert math.isclose(sparse_dot(sparse[0], sparse[0]), 1.0)
    assert sparse[2] == {}
    # Stable across processes: CRC-32 buckets, not Python's salted hash().
    assert emb.embed_one("да") == {
        b: pytest.approx(w) for b, w in CharNgramEmbedder(dim=512).embed_one("да").items()
    }


def test_inflection_and_number_folding() -> None:
    emb = CharNgramEmbedder()
    a = emb.embed_one("квартира пятьдесят метров")
    assert sparse_dot(a, emb.embed_one("квартиры 38 метра")) > 0.5
    assert sparse_dot(a, emb.embed_one("не звоните мне больше")) < 0.2
    assert emb.words("55 кв м сорок пять") == ["0", "кв", "м", "0"]


# --- classifier on the example map ---


@pytest.fixture(scope="module")
def cmap() -> DialogueMap:
    return load_dialogue_map(MAPS / "cleaning_quote.ru.json")


@pytest.fixture
async def clf(cmap: DialogueMap) -> VectorIntentClassifier:
    c = VectorIntentClassifier(cmap, CharNgramEmbedder())
    await c.setup()
    return c


@pytest.mark.parametrize(
    ("text", "intent_id", "entities"),
    [
        ("ну у нас квартира метров шестьдесят", "give_area", {"area_m2": 60}),
        ("площадь сорок пять с половиной", "give_area", {"area_m2": 45.5}),
        ("да, давайте записываться", "agree", {}),
        ("давайте на субботу", "choose_day", {"visit_day": SaidDate(weekday=5)}),
        ("нет, спасибо, не интересно", "refuse", {}),
        ("переключите на живого оператора", "operator", {}),
        ("больше мне не звоните", "stop_calling", {}),
    ],
)
async def test_paraphrases(
    clf: VectorIntentClassifier, text: str, intent_id: str, entities: dict[str, Any]
) -> None:
    result, leader = await clf.classify_intent(text)
    assert result is not None, await clf.intent_scores(text)
    assert (result.intent_id, result.current_leader, leader) == (intent_id, intent_id, intent_id)
    assert result.entities == entities
    assert 0.45 <= result.score <= 1.0


@pytest.mark.parametrize("text", ["как вас зовут", "а какая у вас лицензия", "сколько лет вашей компании"])
async def test_off_script_is_none(clf: VectorIntentClassifier, text: str) -> None:
    result, leader = await clf.classify_intent(text)
    assert result is None
    assert leader is not None  # the leader is reported whatever its score
    assert await clf.find_faq_answer(text) is None


async def test_faq_hit_for_too_expensive(clf: VectorIntentClassifier) -> None:
    result, _ = await clf.classify_intent("это слишком дорого")
    assert result is None  # not an intent: the Orchestrator goes on to the FAQ
    answer = await clf.find_faq_answer("это слишком дорого")
    assert answer is not None and answer.faq_id == "too_expensive"
    answer = await clf.find_faq_answer("ну как-то дороговато у вас")
    assert answer is not None and answer.faq_id == "too_expensive"
    answer = await clf.find_faq_answer("можно ли оплатить картой")
    assert answer is not None and answer.faq_id == "payment"


async def test_empty_text(clf: VectorIntentClassifier) -> None:
    assert await clf.classify_intent("  ...  ") == (None, None)
    assert await clf.find_faq_answer("") is None


async def test_protocol(cmap: DialogueMap) -> None:
    classifier: IntentClassifier = VectorIntentClassifier(cmap, CharNgramEmbedder())
    # setup() runs lazily on first use, too
    result, _ = await classifier.classify_intent("да")
    assert result is not None and result.intent_id == "agree"


# --- the dense path, the stability check and the threshold, with a scripted embedder ---


class TableEmbedder:
    """A dense `Embedder` with fixed vectors per text, counting its calls."""

    name = "table"

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table
        self.calls: list[int] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(len(texts))
        return [self.table[t] for t in texts]


def tiny_map(threshold: float = 0.5) -> DialogueMap:
    playlist = [{"type": "cache", "key": "static:x"}]
    return parse_dialogue_map(
        {
            "name": "tiny",
            "initial_state": "s",
            "settings": {
                "neutral_filler_keys": ["filler:x"],
                "emergency_filler_key": "static:x",
                "non_secure_response_key": "static:x",
                "error_playlist": playlist,
                "intent_threshold": threshold,
                "faq_threshold": 0.9,
            },
            "intents": {"a": {"examples": ["A"]}, "b": {"examples": ["B", "B2"]}},
            "states": {"s": {"system_response": {"playlist": playlist}}},
            "faq": {"f": {"questions": ["F"], "answer": playlist}},
        },
        "tiny",
    )


async def test_dense_path_stability_and_threshold() -> None:
    emb = TableEmbedder(
        {
            "A": [1.0, 0.0, 0.0],
            "B": [0.0, 1.0, 0.0],
            "B2": [0.0, 3.0, -3.0],  # not unit length: the classifier normalises
            "F": [0.0, 0.0, 1.0],
            "near tie": [1.0, 0.98, 0.0],
            "clear b": [0.0, 1.0, 0.1],
            "weak": [1.0, 1.0, 5.0],
        }
    )
    clf = VectorIntentClassifier(tiny_map(), emb)
    await clf.setup()
    await clf.setup()
    assert emb.calls == [4]  # examples and FAQ questions embedded once, in one batch
    result, leader = await clf.classify_intent("near tie")
    assert result is not None and leader == "a"
    # A near tie keeps the previous leader (within the sticky margin)...
    result, leader = await clf.classify_intent("near tie", previous_leader="b")
    assert result is not None and (result.intent_id, leader) == ("b", "b")
    # ...but a clear winner takes over.
    result, leader = await clf.classify_intent("clear b", previous_leader="a")
    assert result is not None and leader == "b"
    scores = await clf.intent_scores("clear b")
    assert scores["b"] == pytest.approx(1 / math.sqrt(1.01))  # the best example, B
    # Below the threshold: no result, but the leader is still reported.
    result, leader = await clf.classify_intent("weak")
    assert result is None and leader in ("a", "b")
    assert await clf.find_faq_answer("weak") is not None  # cos = 5 / sqrt(27) > 0.9
    assert await clf.find_faq_answer("clear b") is None


# --- accuracy on held-out paraphrases of the example map ---


async def _route(clf: VectorIntentClassifier, text: str) -> tuple[str, str | None]:
    result, _ = await clf.classify_intent(text)
    if result is not None:
        return "intent", result.intent_id
    faq = await clf.find_faq_answer(text)
    return ("faq", faq.faq_id) if faq else ("llm", None)


async def _accuracy(clf: VectorIntentClassifier, prefix: str) -> dict[str, tuple[int, int]]:
    data = json.loads(HELDOUT.read_text(encoding="utf-8"))
    out: dict[str, tuple[int, int]] = {}
    for kind, key in (("intent", "intents"), ("faq", "faq"), ("llm", "off_script")):
        items = [(x, None) if isinstance(x, str) else (x[0], x[1]) for x in data[prefix + key]]
        ok = sum([await _route(clf, t) == (kind, want) for t, want in items])
        out[key] = (ok, len(items))
    return out


async def test_heldout_accuracy(clf: VectorIntentClassifier) -> None:
    # Measured when written: tuning split 61/64 (intents 43/44, faq 10/10, off-script 8/10);
    # untouched test split 27/30 (intents 18/20, faq 4/5, off-script 5/5).
    # After the dev-set tuning (lexicon, negation, label weighting, richer examples): tuning split
    # 59/64, test split 29/30.
    tune = await _accuracy(clf, "")
    test = await _accuracy(clf, "test_")
    print("tuning split", tune, "test split", test)
    for split, floor in ((tune, 0.9), (test, 0.85)):
        ok = sum(a for a, _ in split.values())
        total = sum(n for _, n in split.values())
        assert ok / total >= floor, split


def test_entity_kinds_idioms_and_negation_scope() -> None:
    emb = CharNgramEmbedder()
    feats = emb.features
    # a date or a clear time of day adds its kind; a bare number that could be an hour does not
    assert "~@date" in feats("а на 30ое можно")
    assert "~@date" in feats("через пару недель")
    assert "~@time" in feats("полвосьмого подойдёт")
    assert "~@time" in feats("давайте в шесть")
    assert "~@time" not in feats("метров двенадцать") and "~@date" not in feats("второй этаж")
    # agreement said with a "нет" in it, a refusal said without a refusal word
    assert emb.words("ну а почему бы и нет") == ["ну", "а", "давайте"]
    assert emb.words("я не против") == ["я", "согласен"]
    assert emb.words("думаю, не стоит") == ["думаю", "не", "нужно"]
    # a repeated "не" is a "нет"; the negation reaches the noun over its preposition
    assert emb.words("не-не, в пятницу")[0] == "нет"
    assert ("роботом", True) in emb.tokens("с человеком, а не с роботом")
    assert "~!yes" in feats("совсем неверно")
    # a counted noun is no request for one: "человек" after "сколько" adds no "~person"
    assert "~person" not in feats("сколько человек будет") and "~person" in feats("дайте человека")


def test_a_repeated_ne_still_negates_the_word_after_it() -> None:
    emb = CharNgramEmbedder()
    # "не не так" is "нет, не так": the last "не" negates "так", never "нет так" ("да, так")
    for text in ("не не так", "не-не так", "не, не так", "да нет не так"):
        assert emb.tokens(text)[-2:] == [("не", False), ("так", True)], text
    assert emb.words("не-не") == ["нет"] and emb.words("не не не") == ["нет"]
    assert emb.words("да нет") == ["нет"]  # "да нет" is a no
    assert emb.words("да нет проблем") == ["хорошо"]


_DENIALS = [
    "не не так",
    "не так",
    "нет не так",
    "не, не то",
    "не не то",
    "не-не так",
    "да нет не так",
    "да нет",
    "не не",
    "ну не так",
    "нет там не так",
    "не, всё не так",
    "не не правильно",
    "не совсем так",
    "нет, не верно",
]


@pytest.mark.parametrize("text", _DENIALS)
async def test_a_no_is_never_taken_for_a_confirmation(text: str) -> None:
    dmap = load_dialogue_map(MAPS / "dental_appointment.ru.json")
    clf = VectorIntentClassifier(dmap, CharNgramEmbedder())
    result, leader = await clf.classify_intent(text)
    assert leader == "deny" and result is not None, await clf.intent_scores(text)


@pytest.mark.parametrize(
    ("text", "doctor"),
    [
        ("надо снять камень", "гигиенисту"),
        ("хочу отбеливание", "гигиенисту"),
        ("налёт убрать", "гигиенисту"),
        ("записаться на профгигиену", "гигиенисту"),
        ("зуб выдернуть", "хирургу"),
        ("вырвите мне зуб", "хирургу"),
        ("зуб мудрости режется", "хирургу"),
        ("поставить имплант", "хирургу"),
        ("полечить канал", "терапевту"),
        ("болят зубы", "терапевту"),
        ("пломба выпала", "терапевту"),
    ],
)
async def test_a_service_named_instead_of_a_doctor(text: str, doctor: str) -> None:
    dmap = load_dialogue_map(MAPS / "dental_appointment.ru.json")
    clf = VectorIntentClassifier(dmap, CharNgramEmbedder())
    result, _ = await clf.classify_intent(text)
    assert result is not None and result.intent_id == "choose_doctor", await clf.intent_scores(text)
    assert result.entities == {"doctor": doctor}


async def test_evidence_rules_of_the_fourth_tuning() -> None:
    dental = VectorIntentClassifier(
        load_dialogue_map(MAPS / "dental_appointment.ru.json"), CharNgramEmbedder()
    )
    cleaning = VectorIntentClassifier(load_dialogue_map(MAPS / "cleaning_quote.ru.json"), CharNgramEmbedder())
    # a duration is no price; "вы ... делаете" asks, it books nothing
    assert await dental.find_faq_answer("а сколько длится прием") is None
    assert (await dental.find_faq_answer("сколько стоит прием")) is not None
    assert (await dental.classify_intent("вы отбеливание делаете"))[0] is None
    # an explicit confirmation with the time repeated is a confirmation
    for text in ("да в 10 всё верно", "да, в 10:30, правильно"):
        result, _ = await dental.classify_intent(text)
        assert result is not None and result.intent_id == "confirm", text
    # a cancel word is a refusal, "давайте" or not; a weekday span is a day
    result, _ = await cleaning.classify_intent("нет давайте отменим")
    assert result is not None and result.intent_id == "refuse"
    result, _ = await cleaning.classify_intent("в любой будний день")
    assert result is not None and result.intent_id == "choose_day"


async def test_evidence_rules_of_the_fifth_tuning() -> None:
    dental = VectorIntentClassifier(
        load_dialogue_map(MAPS / "dental_appointment.ru.json"), CharNgramEmbedder()
    )
    cleaning = VectorIntentClassifier(load_dialogue_map(MAPS / "cleaning_quote.ru.json"), CharNgramEmbedder())
    emb = CharNgramEmbedder()
    # "не" before "давайте" opens a no; the "не" of a polite perfective question negates nothing
    assert emb.words("не давайте отменим")[0] == "нет"
    assert emb.tokens("а скидку не дадите") == [("а", False), ("скидку", False), ("дадите", False)]
    assert ("звоните", True) in emb.tokens("больше не звоните")  # an imperfective request stays negated
    # a noun counted by "сколько" is asked about, none of its features meets the noun asked for
    assert "~person" not in emb.features("сколько человек") and "=человек" not in emb.features(
        "сколько человек"
    )
    # thanks after a confirmation only thanks
    result, _ = await dental.classify_intent("да, верно, спасибо")
    assert result is not None and result.intent_id == "confirm"
    result, _ = await dental.classify_intent("ладно, спасибо, до свидания")
    assert result is not None and result.intent_id == "bye"
    # a yes/no question on something the FAQ entry never names is no question for it, while
    # the things it does name (by concept) still are
    for text in ("а вы ремонт делаете", "а после стройки убираете", "сколько человек приедет"):
        assert await cleaning.find_faq_answer(text) is None, text
    for text in ("а зеркала моете", "а кухню тоже убираете", "а на первый заказ скидку дадите"):
        assert await cleaning.find_faq_answer(text) is not None, text
    # a symptom without a doctor word; travel verbs ask the way
    result, _ = await dental.classify_intent("щека опухла")
    assert result is not None and result.intent_id == "choose_doctor"
    faq = await dental.find_faq_answer("как к вам ехать")
    assert faq is not None and faq.faq_id == "address"
    # a rough duration is no time of day
    assert (await dental.classify_intent("а если я опоздаю минут на десять"))[0] is None


def test_what_a_question_asks_about() -> None:
    emb = CharNgramEmbedder()
    assert topics(emb.tokens("сколько по времени займёт")) == {"duration"}
    assert topics(emb.tokens("сколько человек приедет")) == {"#~person"}
    assert topics(emb.tokens("сколько стоит")) == frozenset()
    # objects of a closed question about the callee's work; open questions have none
    assert closed_objects(emb.tokens("а химчистку дивана вы делаете")) == {"химчистка", "диван"}
    assert closed_objects(emb.tokens("а на первый заказ скидку дадите")) == {"~discount"}
    assert closed_objects(emb.tokens("а вы по выходным работаете")) == {"выходной"}
    assert closed_objects(emb.tokens("а что вы делаете")) == frozenset()
    assert closed_objects(emb.tokens("окна помоете или нет")) == frozenset()
    assert "~rooms" in vocabulary(["балкон тоже убираете"], emb)
