"""Issue 8 part 5: lemmatized matching, the unsure band, the constrained step and its adapter."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import openai
import pytest

from orchestrator.adapters.llm.arbiter import OpenAICompatArbiter
from orchestrator.clock import LoopClock
from orchestrator.dialogue_map.lint import run_map_lint
from orchestrator.dialogue_map.loader import load_dialogue_map
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.domain.errors import ClassifierError, LLMError
from orchestrator.domain.models import ArbiterOption, FaqAnswer, IntentResult
from orchestrator.entities.values import SaidDate
from orchestrator.flow_engine import MapFlowEngine
from orchestrator.intents.arbiter import ArbiterStep, NullArbiter, bot_context, state_options
from orchestrator.intents.classifier import VectorIntentClassifier
from orchestrator.intents.confusion import confusion_issues
from orchestrator.intents.lexicon import CONCEPTS
from orchestrator.intents.morphology import analyzer, lemma
from orchestrator.intents.ngram import CharNgramEmbedder, sparse_dot
from orchestrator.intents.word_features import content_lemmas
from testkit.routing import route_text
from testkit.standins.openai_server import BAD_LABEL, OpenAIStandin

MAPS = Path(__file__).resolve().parents[1] / "dialogue_maps"
CLEANING = MAPS / "cleaning_quote.ru.json"


@pytest.fixture(scope="module")
def cmap() -> DialogueMap:
    return load_dialogue_map(CLEANING)


def with_arbiter(m: DialogueMap, **knobs: object) -> DialogueMap:
    arb = m.settings.intent_arbiter.model_copy(update=knobs)
    return m.model_copy(update={"settings": m.settings.model_copy(update={"intent_arbiter": arb})})


# --- lemmas ---


def test_one_analyzer_per_process_and_lemmas() -> None:
    assert analyzer() is analyzer()
    assert lemma("оператора") == ("оператор", "NOUN")
    assert lemma("безналу").normal_form == lemma("безналом").normal_form == "безнал"
    assert lemma("идёт").normal_form == "идти"  # ё folded like normalised text
    # Function words add no lemma; the negation stays, numbers stay folded.
    assert content_lemmas(["мне", "бы", "оператора"]) == ["оператор"]
    assert content_lemmas(["а", "по", "безналу", "можно"]) == ["безнал"]
    assert content_lemmas(["не", "надо"]) == ["не"]
    assert content_lemmas(["0", "метров"]) == ["0", "метр"]


def test_lemmas_bring_word_forms_together() -> None:
    # Lemmas alone, without the lexicon's concepts ("~person" would bring these two together anyway).
    plain = CharNgramEmbedder(lemma_weight=0.0, function_word_weight=1.0, lexicon=False)
    lemmas = CharNgramEmbedder(lexicon=False)
    assert "lemma" in lemmas.name and "lemma" not in plain.name
    a, b = "мне бы оператора", "соедините с оператором"
    assert (
        sparse_dot(lemmas.embed_one(a), lemmas.embed_one(b))
        > sparse_dot(plain.embed_one(a), plain.embed_one(b)) + 0.05
    )
    assert "=оператор" in lemmas.features("оператора")
    with pytest.raises(ValueError):
        CharNgramEmbedder(function_word_weight=1.5)


# --- the lexicon, negation, clock times, label weighting, FAQ precedence ---


def test_lexicon_spellings_content_and_concepts() -> None:
    emb = CharNgramEmbedder()
    assert emb.words("Ок, норм") == ["окей", "нормально"]
    assert emb.words("приём платный или нет") == ["прием", "платный", "или"]  # a tag question
    assert emb.words("не, давайте другое") == ["нет", "давайте", "другое"]  # "не" before a pause
    assert "=да" in emb.features("да") and "=пожалуйста" not in emb.features("пожалуйста")
    assert "~person" in emb.features("сотрудника") and "~person" in emb.features("оператором")
    assert sparse_dot(
        emb.embed_one("дайте сотрудника"), emb.embed_one("соедините с оператором")
    ) > sparse_dot(
        CharNgramEmbedder(lexicon=False).embed_one("дайте сотрудника"),
        CharNgramEmbedder(lexicon=False).embed_one("соедините с оператором"),
    )
    with pytest.raises(ValueError):
        CharNgramEmbedder(concept_weight=-1)


def test_every_lexicon_word_reaches_its_concept() -> None:
    emb = CharNgramEmbedder()
    missed = [(w, c) for w, c in CONCEPTS.items() if f"~{c}" not in emb.features(w)]
    assert missed == [("нужно", "need"), ("надо", "need")]  # weak alone, by design...
    assert all(f"~!{c}" in emb.features(f"не {w}") for w, c in missed)  # ...but not negated


def test_negation_marks_the_negated_word() -> None:
    emb = CharNgramEmbedder()
    assert emb.words("неправильно") == ["не", "правильно"] == emb.words("не правильно")
    assert emb.words("несколько недель") == ["несколько", "недель"]  # not negations
    assert emb.tokens("нет, не так") == [("нет", False), ("не", False), ("так", True)]
    assert "~!yes" in emb.features("не подходит") and "~yes" not in emb.features("не подходит")
    assert "~!need" in emb.features("не надо")  # negated, a weak word counts
    assert sparse_dot(emb.embed_one("правильно"), emb.embed_one("неправильно")) < 0.5
    plain = CharNgramEmbedder(negation=False)
    assert sparse_dot(plain.embed_one("правильно"), plain.embed_one("неправильно")) > 0.6


def test_clock_time_is_one_token_apart_from_amounts() -> None:
    emb = CharNgramEmbedder()
    assert emb.words("запишите на 9:15") == ["запишите", "на", "00"]
    assert emb.words("в 10 30") == ["в", "0"] and emb.words("45.5 метров") == ["0", "метров"]


def test_label_weighting_favours_what_tells_labels_apart() -> None:
    emb = CharNgramEmbedder()
    fitted = emb.fitted([["давайте в среду", "давайте в пятницу"], ["давайте", "да, давайте"], ["нет"]])
    assert fitted is not emb and fitted.name.endswith("-idf") and not emb.name.endswith("-idf")
    a, b = "давайте в четверг", "давайте в среду"
    assert sparse_dot(fitted.embed_one(a), fitted.embed_one("давайте")) < sparse_dot(
        emb.embed_one(a), emb.embed_one("давайте")
    )
    assert sparse_dot(fitted.embed_one(a), fitted.embed_one(b)) > 0.3
    assert CharNgramEmbedder(label_idf=False).fitted([["а"], ["б"]]).name == emb.name


async def test_faq_precedence_over_the_entity_bonus() -> None:
    m = load_dialogue_map(MAPS / "dental_appointment.ru.json")
    clf = VectorIntentClassifier(m, CharNgramEmbedder())
    # Names the surgeon's service (the entity bonus), but asks the price.
    text = "а сколько у вас стоит удаление зуба мудрости"
    result, leader = await clf.classify_intent(text)
    assert result is None and leader == "choose_doctor"
    faq = await clf.find_faq_answer(text)
    assert faq is not None and faq.faq_id == "price"
    result, _ = await clf.classify_intent("мне нужно удалить зуб мудрости, он болит")
    assert result is not None and result.intent_id == "choose_doctor"


@pytest.mark.parametrize(
    ("text", "target"),
    [("мне бы оператора", "intent:operator"), ("а по безналу можно", "faq:payment")],
)
async def test_the_issue_paraphrases_reach_their_target_locally(
    cmap: DialogueMap, text: str, target: str
) -> None:
    clf = VectorIntentClassifier(cmap, CharNgramEmbedder())
    outcome = await route_text(text, "quote", classifier=clf, flow=MapFlowEngine(cmap))
    assert (outcome.target, outcome.via_step) == (target, False)  # the fast path: no LLM at all


# --- the step, with scripted scores and a scripted arbiter ---


class Scores:
    def __init__(self, scores: dict[str, float], fail: bool = False) -> None:
        self.scores = scores
        self.fail = fail
        self.calls = 0

    async def label_scores(self, text: str) -> dict[str, float]:
        self.calls += 1
        if self.fail:
            raise ClassifierError("embeddings down", provider="embeddings")
        return self.scores


class Scripted:
    name = "scripted"

    def __init__(
        self, answer: str | None = None, *, delay: float = 0.0, error: Exception | None = None
    ) -> None:
        self.answer = answer
        self.delay = delay
        self.error = error
        self.asked: list[tuple[str, list[str], str]] = []

    async def choose(self, text: str, options: Sequence[ArbiterOption], *, context: str = "") -> str | None:
        self.asked.append((text, [o.label for o in options], context))
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.answer


def test_options_are_the_states_intents_then_global_ones_then_the_faq(cmap: DialogueMap) -> None:
    labels = [o.label for o in state_options(cmap, "ask_day")]
    assert labels == [
        "intent:choose_day",
        "intent:give_area",
        "intent:refuse",
        "intent:operator",
        "intent:stop_calling",
        "faq:too_expensive",
        "faq:whats_included",
        "faq:payment",
    ]
    assert all(1 <= len(o.examples) <= 6 for o in state_options(cmap, "ask_day"))
    assert bot_context(cmap, "ask_day").startswith("На какой день вам удобно?")


async def test_below_the_band_the_step_does_not_run(cmap: DialogueMap) -> None:
    arbiter = Scripted("intent:agree")
    step = ArbiterStep(cmap, Scores({"intent:agree": 0.19, "faq:payment": 0.1}), arbiter, clock=LoopClock())
    assert await step.resolve("как вас зовут", "quote") is None
    assert arbiter.asked == []


async def test_in_the_band_the_arbiter_picks_an_intent_with_its_entities(cmap: DialogueMap) -> None:
    arbiter = Scripted("intent:choose_day")
    step = ArbiterStep(
        cmap, Scores({"intent:choose_day": 0.3, "intent:agree": 0.35}), arbiter, clock=LoopClock()
    )
    decision = await step.resolve("ну пусть будет суббота", "quote")
    assert decision is not None and decision.status == "picked" and decision.answer == "intent:choose_day"
    assert decision.choice == IntentResult(
        "choose_day", 0.3, {"visit_day": SaidDate(weekday=5, week="this")}, "choose_day"
    )
    assert decision.best_local_score == 0.35 and decision.ended_at >= decision.started_at
    text, labels, context = arbiter.asked[0]
    assert text == "ну пусть будет суббота" and "intent:operator" in labels and "faq:payment" in labels
    assert "Записать вас на уборку?" in context


async def test_a_faq_pick(cmap: DialogueMap) -> None:
    step = ArbiterStep(cmap, Scores({"faq:payment": 0.3}), Scripted("faq:payment"), clock=LoopClock())
    decision = await step.resolve("по безналу", "greeting")
    assert decision is not None and decision.choice == FaqAnswer("payment", 0.3)


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        ("intent:agree", "invalid"),  # an intent, but with no transition from "greeting"
        ("intent:nonexistent", "invalid"),
        ("оператор", "invalid"),
        ("none", "none"),
        (None, "none"),
    ],
)
async def test_answers_outside_the_closed_set_are_none(
    cmap: DialogueMap, answer: str | None, status: str
) -> None:
    step = ArbiterStep(cmap, Scores({"intent:give_area": 0.3}), Scripted(answer), clock=LoopClock())
    decision = await step.resolve("что-то невнятное", "greeting")
    assert decision is not None and (decision.status, decision.choice, decision.answer) == (
        status,
        None,
        answer,
    )


async def test_a_slow_arbiter_is_cut_at_the_maps_timeout_and_means_none(cmap: DialogueMap) -> None:
    m = with_arbiter(cmap, timeout_s=0.05)
    step = ArbiterStep(
        m, Scores({"intent:agree": 0.3}), Scripted("intent:agree", delay=5.0), clock=LoopClock()
    )
    started = time.monotonic()
    decision = await step.resolve("ну наверное", "quote")
    assert decision is not None and (decision.status, decision.choice) == ("timeout", None)
    assert time.monotonic() - started < 1.0
    assert 0.04 <= decision.ended_at - decision.started_at < 1.0


async def test_a_failing_arbiter_means_none(cmap: DialogueMap) -> None:
    err = LLMError("HTTP 500", provider="openai-compat", retryable=True)
    step = ArbiterStep(cmap, Scores({"intent:agree": 0.3}), Scripted(error=err), clock=LoopClock())
    decision = await step.resolve("ну наверное", "quote")
    assert decision is not None and (decision.status, decision.choice) == ("error", None)


async def test_no_step_without_an_arbiter_when_disabled_or_when_scoring_fails(cmap: DialogueMap) -> None:
    scores = Scores({"intent:agree": 0.3})
    assert await ArbiterStep(cmap, scores, NullArbiter(), clock=LoopClock()).resolve("ну", "quote") is None
    assert scores.calls == 0  # not even scored
    off = with_arbiter(cmap, enabled=False)
    assert (
        await ArbiterStep(off, scores, Scripted("intent:agree"), clock=LoopClock()).resolve("ну", "quote")
        is None
    )
    failing = ArbiterStep(cmap, Scores({}, fail=True), Scripted("intent:agree"), clock=LoopClock())
    assert await failing.resolve("ну", "quote") is None


# --- the adapter against the OpenAI stand-in over HTTP ---


@pytest.fixture
async def standin() -> AsyncIterator[OpenAIStandin]:
    server = OpenAIStandin(choice_latency_s=0.02)
    server.script.add_choice("(?i)безнал", "faq:payment")
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def client(standin: OpenAIStandin) -> AsyncIterator[openai.AsyncOpenAI]:
    c = openai.AsyncOpenAI(base_url=standin.base_url, api_key="standin", max_retries=0)
    try:
        yield c
    finally:
        await c.close()


async def test_adapter_sends_a_constrained_request_and_reads_the_label(
    cmap: DialogueMap, standin: OpenAIStandin, client: openai.AsyncOpenAI
) -> None:
    arbiter = OpenAICompatArbiter(client, model="m-arbiter")
    options = state_options(cmap, "quote")
    assert arbiter.name == "m-arbiter"
    assert await arbiter.choose("картой оплатить можно", options) == "faq:payment"  # by examples
    assert await arbiter.choose("а по безналу", options, context="Записать вас?") == "faq:payment"  # by rule
    assert await arbiter.choose("как вас зовут", options) is None  # "none"
    _, body = standin.requests[-1]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    enum = fmt["json_schema"]["schema"]["properties"]["label"]["enum"]
    assert enum == [o.label for o in options] + ["none"]
    assert body["temperature"] == 0 and body["stream"] is False and body["max_tokens"] <= 32
    system = body["messages"][0]["content"]
    assert '- intent:operator: "соедините с оператором"' in system
    _, body = standin.requests[-2]
    assert "Записать вас?" in body["messages"][0]["content"]


async def test_adapter_json_object_mode(
    cmap: DialogueMap, standin: OpenAIStandin, client: openai.AsyncOpenAI
) -> None:
    arbiter = OpenAICompatArbiter(client, model="m", response_format="json_object")
    assert (
        await arbiter.choose("соедините меня с оператором", state_options(cmap, "quote")) == "intent:operator"
    )
    assert standin.requests[-1][1]["response_format"] == {"type": "json_object"}


async def test_step_over_http_validates_times_out_and_survives_failures(
    cmap: DialogueMap, standin: OpenAIStandin, client: openai.AsyncOpenAI
) -> None:
    clf = VectorIntentClassifier(cmap, CharNgramEmbedder())
    step = ArbiterStep(
        with_arbiter(cmap, timeout_s=0.5), clf, OpenAICompatArbiter(client, model="m"), clock=LoopClock()
    )
    text = "позовите менеджера"  # local score in the band (0.45 < threshold): the step runs
    decision = await step.resolve(text, "quote")
    assert decision is not None and decision.status in ("picked", "none")
    latency_ms = (decision.ended_at - decision.started_at) * 1000
    print(f"\nstep against the stand-in: {decision.status} {decision.answer} in {latency_ms:.1f} ms")
    assert latency_ms < 500
    standin.inject("bad_label")
    decision = await step.resolve(text, "quote")
    assert decision is not None and (decision.status, decision.answer, decision.choice) == (
        "invalid",
        BAD_LABEL,
        None,
    )
    standin.inject("http500")
    decision = await step.resolve(text, "quote")
    assert decision is not None and (decision.status, decision.choice) == ("error", None)
    with pytest.raises(LLMError):
        standin.inject("http500")
        await OpenAICompatArbiter(client, model="m").choose(text, state_options(cmap, "quote"))
    standin.inject("stall")
    decision = await step.resolve(text, "quote")
    assert decision is not None and (decision.status, decision.choice) == ("timeout", None)
    assert 0.45 <= decision.ended_at - decision.started_at < 2.0


# --- map lint: confusions ---


def test_map_lint_reports_examples_the_classifier_confuses(tmp_path: Path) -> None:
    # The example maps lint clean (their examples were written to be told apart)...
    for path in (CLEANING, MAPS / "dental_appointment.ru.json"):
        assert confusion_issues(load_dialogue_map(path)) == [], path
    # ...and an example that belongs elsewhere is reported, with where it goes.
    data = json.loads(CLEANING.read_text(encoding="utf-8"))
    at = len(data["intents"]["refuse"]["examples"])
    data["intents"]["refuse"]["examples"].append("соедините меня с живым оператором")
    confusing = tmp_path / "confusing.json"
    confusing.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    out = io.StringIO()
    assert run_map_lint(str(confusing), out=out, checks=[confusion_issues]) == 0  # warnings only
    lines = [line for line in out.getvalue().splitlines() if "confuses" in line]
    assert any(
        line.startswith(
            f"{confusing}: $.intents.refuse.examples[{at}]: warning: 'соедините меня с живым оператором' "
            "is routed to intent:operator"
        )
        for line in lines
    ), lines
    # Negation-aware features: "правильно" and "неправильно" are no longer each other's nearest.
    m = load_dialogue_map(MAPS / "dental_appointment.ru.json")
    emb = CharNgramEmbedder()
    assert sparse_dot(emb.embed_one("правильно"), emb.embed_one("неправильно")) < 0.5
    assert emb.words("неправильно") == ["не", "правильно"]
    assert all(i.severity == "warning" for i in confusion_issues(m))
    # Without the check (the default), no confusion findings.
    out = io.StringIO()
    run_map_lint(str(confusing), out=out)
    assert "confuses" not in out.getvalue()
