"""The dev set of paraphrases per example map (tests/data/heldout_<map>.json): intent and FAQ routing.

Set 1 (these files) was written and committed before any tuning as a held-out set, then measured,
and its misses were used to find classes of error, so it is the DEV set now: a figure on it says
how well the tuning worked, not how well unseen paraphrases are routed. Its phrases are never
copied into the maps. The honest figure comes from set 2 (tests/data/heldout2_<map>.json),
written by someone else and never looked at while tuning.

Each phrase is routed as a call would route it in its state (`testkit.routing.route_text`: local
intent with a transition, FAQ, the constrained step, the LLM), twice: local only, and with the
constrained step asking the OpenAI stand-in over HTTP (which picks by script rule or example
similarity: a stand-in, not an LLM, so this figure measures the plumbing and a floor, not what a
real model would add). The bar (issue 8): >= 95 % per map with the step.

First measurement, after tuning on dialogue_maps/eval only: local only cleaning 40/53 (75.5 %),
dental 38/50 (76.0 %); with the step against the stand-in 39/53 (73.6 %) and 41/50 (82.0 %).
The misses were mostly synonyms the maps' examples never used ("годится", "наличкой",
"сотрудника", "химия"), negations ("неправильно" next to "правильно"), price questions that name
a service (the entity bonus took them to `choose_doctor`) and clock times folded like amounts.

After the dev-set tuning (richer examples in both maps, written anew, and
`orchestrator.intents.lexicon`, negation-aware features, a clock-time token, label-frequency
weighting and FAQ precedence in the classifier): local only cleaning 51/53 (96.2 %), dental
49/50 (98.0 %); with the step 49/53 (92.5 %) and 48/50 (96.0 %). With the step is lower than
local only: off-script questions whose local score is in the band ("а вы работаете по
выходным") go to the trigram stand-in, which picks the nearest examples where a model would say
none. So cleaning misses the bar with the stand-in: `test_heldout_meets_the_issue_bar` is a
strict xfail for cleaning only, the floors below guard the figures against regressions, and
`test_heldout_live` measures the step against a real OpenAI-compatible model when one is
configured.

Set 2, written blind after that tuning (from the maps alone, by someone who never saw set 1,
the eval split or the tuning) and measured once: local only cleaning 68/83 (81.9 %), dental
57/64 (89.1 %); with the step 68/83 (81.9 %) and 60/64 (93.8 %) (three short dental phrases
dropped: the tuning had independently put the same words in the map). That is the honest figure, and
it is below the bar. The misses: refusals said without a refusal word ("нет пожалуй не стоит",
"не передумал я"), agreement with a negation in it ("почему бы и нет"), days and times the
entity grammar does not take ("на 25е", "через два дня", "полпятого нормально"), and off-script
questions that share a content word with an intent or FAQ entry.

Set 2 is a DEV set since (its misses were read): the second tuning fixed the error classes
behind them, not the phrases, with no set-2 phrase copied into a map. The entity grammars took
digit ordinals with case endings ("к 25му"), "через пару дней" and a shift before a time ("на
час позже, в 12"); the embedder gained a "~@date"/"~@time" feature for a date or a clear time of
day in the text (a bare number is no time), idioms that agree with a "нет" in them ("почему бы
и нет", "не против") and "не стоит" as a refusal, a repeated "не" read as "нет", the negation
reaching a noun over its preposition ("не с роботом"), no concept for a counted noun
("сколько человек"), and lexicon groups for putting off, calling back and mistakes; the maps
got a few examples in their authors' own words. Figures after it: set 1 local only cleaning
52/53 (98.1 %), dental 50/50 (100 %), with the step 50/53 (94.3 %) and 49/50 (98.0 %); set 2
local only cleaning 81/83 (97.6 %), dental 64/64 (100 %), with the step 79/83 (95.2 %) and
64/64 (100 %). These are dev figures: they say the classes are fixed, not how unseen
paraphrases fare; the honest figure waits for blind set 3. The bar test is still judged on set
2 until set 3 is merged, and both maps reach it there, so none is marked below the bar. Left:
off-script questions near one FAQ or intent word ("а генеральную уборку делаете", "откуда у вас
мой номер") and those the trigram stand-in sends to the nearest examples when the local score
is in the band ("а вы по выходным работаете").

Set 3, written blind after the second tuning (from the maps alone, never reading tests/, the
eval split or the lexicon) and measured once: cleaning 70/76 (92.1 %) local only and with the
step, dental 63/65 (96.9 %) local only and with the step (two short dental phrases dropped
before scoring: the map already had the same words). That is the honest figure the issue's bar
is judged on: dental reaches 95 %, cleaning does not. The cleaning misses: off-script questions
near a FAQ entry ("а после ремонта убираете", "средства гипоаллергенные" -> whats_included,
"откуда у вас мой номер" -> stop_calling), agreement without an agreement word ("ну можно в
принципе"), a refusal that names the price ("дороговато пожалуй откажусь" -> too_expensive) and
"да на 25е" (agree wins over choose_day).

Set 3 is a DEV set since (its misses were read). The third tuning fixed classes, not phrases (no
set-3 phrase in a map; the maps are unchanged): the lexicon drops hedges ("в принципе", "в
целом"), reads an answer that is "можно" among particles ("ну можно") as consent and "идёт",
"пойдёт" as agreement, "вы не поняли" / "не так поняли" as the bot's mistake, and a wrong number
("ошибся номером", "не туда попал") as the leave-taking "не туда позвонил"; in the classifier a
refusal word (`lexicon.DECISIVE_CONCEPTS`) turns FAQ precedence off (a refusal that names the
price is a refusal), an entity found for one intent takes `ENTITY_BONUS` off the intents that take
no entity ("да на 25е" is a day), and a question word ("откуда", "почему", "где", ...) takes
`QUESTION_PENALTY` off every intent whose examples never ask (a question is no answer). Figures
after it, local only / with the step: set 1 cleaning 53/53 (100 %) / 51/53 (96.2 %), dental 50/50
(100 %) / 49/50 (98.0 %); set 2 cleaning 82/83 (98.8 %) / 79/83 (95.2 %), dental 64/64 / 64/64
(100 %); set 3 cleaning 74/76 (97.4 %) / 73/76 (96.1 %), dental 64/65 (98.5 %) / 64/65 (98.5 %).
Dev figures: the honest one waits for blind set 4. Left: off-script questions that share one
content word with a FAQ entry ("а после ремонта убираете", "средства гипоаллергенные", "а
генеральную уборку делаете" -> whats_included). A coverage rule (the share of the caller's content
lemmas, plain or weighed by label frequency, found in the matched label's vocabulary) does not
separate them on the dev sets: "а ванну с туалетом тоже моете" and "первичный осмотр бесплатный"
are right and cover as little, so such a rule would trade right answers for these. With the step,
the trigram stand-in still sends "откуда у вас мой номер" (now none locally) to stop_calling and a
few band questions to the nearest FAQ, where a model would say none.

Set 4, written blind after the third tuning (and after the entity fixes of the issue-8 review),
measured once: cleaning 70/74 (94.6 %) local only, 72/74 (97.3 %) with the step; dental 59/64
(92.2 %) both ways (two dental phrases the map already had, in another word order, dropped
before scoring). The bar is judged on it: cleaning passes with the step, dental does not. The
dental misses: a service named instead of a doctor ("профгигиену", "камень с зубов снять",
"молочный зуб вырвать" -> none, want choose_doctor), "а сколько длится прием" -> faq:price (want
none), and "не не так" -> confirm (want deny: a negation the features miss, the worst kind).
Cleaning: "а санузел тоже моете", "наличкой отдать можно" (FAQ wording), "в любой будний день",
"нет давайте отменим" in ask_day.

Set 4 is a DEV set since (its misses were read). The fourth tuning fixed their classes, no set-4
phrase in a map: a repeated "не" is still "нет" but its last "не" negates the word after it ("не
не так" was "нет так", i.e. "да, так"; now "нет, не так"), and "да нет" is a no; the dental
map's doctor entity and `choose_doctor` examples name the services each doctor does (hygienist:
профгигиена, камень, налёт, отбеливание; surgeon: удалить, вырвать, зуб мудрости, имплант;
therapist: кариес, пломба, болит, канал, нерв), with "вы ... делаете" (a present-tense "вы" verb)
read as a question, so "вы имплантацию делаете" books nobody; the lexicon has a duration group
("сколько длится приём" is no price), rooms a service covers ("санузел", "кухня"), "отдать" as
paying and "отменить" as changing one's mind; a decision word favours, by `ENTITY_BONUS`, the
intents whose examples say one; an affirming word ("верно", "правильно") keeps the entity bonus
off ("да, в 10, всё верно" confirms, the time is only repeated); the date grammar reads "в будни",
"в любой будний день" as a span. Figures after it, local only / with the step: set 1 cleaning
53/53 (100 %) / 51/53 (96.2 %), dental 50/50 (100 %) / 49/50 (98.0 %); set 2 cleaning 82/83
(98.8 %) / 79/83 (95.2 %), dental 64/64 / 64/64 (100 %); set 3 cleaning 74/76 (97.4 %) / 73/76
(96.1 %), dental 64/65 (98.5 %) / 64/65 (98.5 %); set 4 cleaning 74/74 / 74/74 (100 %), dental
64/64 (100 %) / 62/64 (96.9 %). Dev figures: the honest one waits for blind set 5. Left with the
step: the trigram stand-in sends band phrases to the nearest label where a model would say none
("да можно" in ask_time -> give_time, "а сколько длится прием" -> faq:price).

Set 5, written blind after the fourth tuning, measured once: cleaning 69/73 (94.5 %) local only
and with the step, dental 68/70 (97.1 %) local only, 67/70 (95.7 %) with the step. The bar is
judged on it: dental passes, cleaning misses by one phrase. Cleaning misses: "а химчистку дивана
вы делаете" and "а окна помыть на балконе это сколько по времени" -> whats_included (want none),
"а на первый раз скидочку не сделаете" -> none (want too_expensive), "не давайте отменим" in
ask_day -> none (want refuse). Dental: "да именно так спасибо" -> bye (want confirm), "а если я
опоздаю минут на 10" -> give_time (want none).

Set 6, also written blind after the fourth tuning and measured once on the same code as set 5:
cleaning 61/64 (95.3 %) local only and with the step, dental 59/62 (95.2 %) local only, 58/62
(93.5 %) with the step. Over sets 5 and 6 together: cleaning 130/137 (94.9 %), dental 127/132
(96.2 %) local only, 125/132 (94.7 %) with the trigram stand-in as the step. So the issue's bar
is met on one blind set per map and missed by one or two phrases on the other: on the bar, not
clearly over it. The set-6 misses: off-script questions near whats_included ("сколько человек
приедет убирать", "а вы ремонт квартир тоже делаете"), "у нас дома собака большая это нормально"
-> agree, a symptom without a doctor word ("десна опухла у зуба"), and "куда ехать" for the
address.

Sets 5 and 6 are DEV sets since (their misses were read). The fifth tuning fixed classes, not
phrases, with every set checked local only and with the step before and after each change (the
tune5 attempt, bf12a34, was not merged: its map edit dropped sets 1 and 2 locally; its lexicon
and classifier rules are kept): "не давайте ..." opens a no; thanks after confirming words only
thank; a rough duration ("минут на 10") is no time of day; a duration asked ("сколько по
времени", "сколько длится") and a noun counted by "сколько" ("сколько человек": its features are
marked, so it meets no "человек" asked for) are topics a FAQ entry must speak of
(`orchestrator.intents.topics`); a yes/no question about the callee's work ("вы ... делаете /
моете / дадите") on an object, or failing one an adjunct, that a FAQ entry never names, by lemma
or concept, is no question for it ("а химчистку дивана вы делаете", "а вы по выходным
работаете"); the "не" of a polite perfective question ("скидочку не сделаете?") negates nothing;
and the lexicon gained "pain" (a symptom: "ноет", "опухла", "кровоточит"), "clean" (cleaning
verbs, not "убрать") and household things as "rooms", travel verbs as "where", "скидочка" as
"скидка". No map changed. Figures, local only / with the step (before -> after): set 1 cleaning
53/53 / 51 -> 53 of 53, dental 50/50 / 49 -> 50 of 50; set 2 cleaning 82 -> 83 / 79 -> 81 of 83,
dental 64/64 / 64/64; set 3 cleaning 74 -> 75 / 73 -> 74 of 76, dental 64/64 of 65; set 4
cleaning 74/74 / 74/74, dental 64/64 / 62 -> 63 of 64; set 5 cleaning 69 -> 73 / 69 -> 73 of 73,
dental 68 -> 70 / 67 -> 70 of 70; set 6 cleaning 61 -> 63 / 61 -> 63 of 64, dental 59 -> 61 /
58 -> 61 of 62. Dev figures: the honest one waits for blind set 7. Left: "у нас дома собака
большая это нормально" -> agree (a question said as a statement with "нормально"), "а средства
гипоаллергенные у меня ребенок аллергик" -> whats_included, "десна опухла у зуба и больно
кусать" (0.44, under the threshold), and the trigram stand-in picking the nearest examples for
band phrases ("откуда у вас мой номер" -> stop_calling, "да можно" in ask_time -> give_time).

Set 7, written blind after the fifth tuning (from the maps alone: the writer read only the two
maps and the file format) and measured once: cleaning 79/81 (97.5 %) local only, 80/81 (98.8 %)
with the step; dental 74/76 (97.4 %) both. Both maps are over the bar on an unseen set. Misses:
"а пылесос свой привезете или наш нужен" -> none (want whats_included: an item the FAQ never
names), "почем удалить зуб мудрости" -> choose_doctor (want the price FAQ: the procedure names the
surgeon), "нет я говорил к хирургу" in confirm_booking -> none (want deny). The only format change
made to the set was its "llm" label spelled "none" as the test expects.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest

from orchestrator.adapters.llm.arbiter import OpenAICompatArbiter
from orchestrator.clock import LoopClock
from orchestrator.contracts import IntentArbiter
from orchestrator.dialogue_map.loader import load_dialogue_map
from orchestrator.flow_engine import MapFlowEngine
from orchestrator.intents.arbiter import ArbiterStep
from orchestrator.intents.classifier import VectorIntentClassifier
from orchestrator.intents.ngram import CharNgramEmbedder
from orchestrator.text import normalize
from testkit.routing import route_text
from testkit.standins.openai_server import OpenAIStandin

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
MAPS = ["cleaning_quote", "dental_appointment"]
BAR = 0.95
SETS = {
    "dev": "heldout_",
    "dev2": "heldout2_",
    "dev3": "heldout3_",
    "dev4": "heldout4_",
    "blind5": "heldout5_",
    "blind6": "heldout6_",
    "blind7": "heldout7_",
}
# Measured figures (see the module docstring): floors against regressions, not targets.
# (local only, with the step), per (set, map). All six sets are dev sets since the fifth tuning.
FLOORS = {
    ("dev", "cleaning_quote"): (53, 53),  # 100 % / 100 % of 53
    ("dev", "dental_appointment"): (50, 50),  # 100 % / 100 % of 50
    ("dev2", "cleaning_quote"): (83, 81),  # 100 % / 97.6 % of 83
    ("dev2", "dental_appointment"): (64, 64),  # 100 % / 100 % of 64
    ("dev3", "cleaning_quote"): (75, 74),  # 98.7 % / 97.4 % of 76
    ("dev3", "dental_appointment"): (64, 64),  # 98.5 % / 98.5 % of 65
    ("dev4", "cleaning_quote"): (74, 74),  # 100 % / 100 % of 74
    ("dev4", "dental_appointment"): (64, 63),  # 100 % / 98.4 % of 64
    ("blind5", "cleaning_quote"): (73, 73),  # 100 % / 100 % of 73 (blind 94.5 %, a dev set since)
    ("blind5", "dental_appointment"): (70, 70),  # 100 % / 100 % of 70 (blind 97.1 % / 95.7 %)
    ("blind6", "cleaning_quote"): (63, 63),  # 98.4 % / 98.4 % of 64 (blind 95.3 %)
    ("blind6", "dental_appointment"): (61, 61),  # 98.4 % / 98.4 % of 62 (blind 95.2 % / 93.5 %)
    ("blind7", "cleaning_quote"): (79, 80),  # 97.5 % / 98.8 % of 81, blind, measured once
    ("blind7", "dental_appointment"): (74, 74),  # 97.4 % / 97.4 % of 76, blind, measured once
}
# The bar is judged on blind set 7, written from the maps alone after the fifth tuning and
# measured once on its final code (sets 1..6 are dev sets). A (set, map) listed here is a strict xfail:
# reaching the bar fails the test, so the list stays true.
BLIND = ("blind7",)
BELOW_BAR_WITH_STANDIN: set[tuple[str, str]] = set()


def _heldout(name: str, which: str = "dev") -> dict[str, object]:
    data = json.loads((DATA / f"{SETS[which]}{name}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("which", SETS)
@pytest.mark.parametrize("name", MAPS)
def test_heldout_sets_are_well_formed_and_not_in_the_map(name: str, which: str) -> None:
    data = _heldout(name, which)
    m = load_dialogue_map(ROOT / str(data["map"]))
    phrases = data["phrases"]
    assert isinstance(phrases, list) and len(phrases) >= 40
    examples = {normalize(e) for i in m.intents.values() for e in i.examples}
    examples |= {normalize(q) for f in m.faq.values() for q in f.questions}
    for p in phrases:
        kind, _, ident = p["expect"].partition(":")
        assert normalize(p["text"]) not in examples, p  # never copied into the map
        if kind == "intent":
            assert m.next_state_id(p["state"], ident) is not None, p
        elif kind == "faq":
            assert ident in m.faq, p
        else:
            assert p["expect"] == "none" and p["state"] in m.states, p


@dataclass
class Score:
    """One map's held-out result."""

    n: int = 0
    local_ok: int = 0
    step_ok: int = 0
    ran: int = 0
    misses: list[str] = field(default_factory=list)

    def summary(self, name: str, arbiter: str) -> str:
        return (
            f"{name}: local only {self.local_ok}/{self.n} ({self.local_ok / self.n:.1%}); with the step "
            f"({arbiter}) {self.step_ok}/{self.n} ({self.step_ok / self.n:.1%}); the step ran on "
            f"{self.ran} turns\n" + "\n".join(f"  miss {x}" for x in self.misses)
        )


async def measure(name: str, arbiter: IntentArbiter, which: str = "dev") -> Score:
    """Route every phrase of set `which` for map `name` local only and with the step asking `arbiter`."""
    data = _heldout(name, which)
    m = load_dialogue_map(ROOT / str(data["map"]))
    classifier = VectorIntentClassifier(m, CharNgramEmbedder())
    flow = MapFlowEngine(m)
    step = ArbiterStep(m, classifier, arbiter, clock=LoopClock())
    phrases = data["phrases"]
    assert isinstance(phrases, list)
    score = Score(n=len(phrases))
    for p in phrases:
        local = await route_text(p["text"], p["state"], classifier=classifier, flow=flow)
        full = await route_text(p["text"], p["state"], classifier=classifier, flow=flow, step=step)
        score.local_ok += local.target == p["expect"]
        score.step_ok += full.target == p["expect"]
        score.ran += full.via_step
        if full.target != p["expect"]:
            score.misses.append(f"{p['state']}: {p['text']!r} -> {full.target} (want {p['expect']})")
    return score


async def _with_standin(name: str, standin: OpenAIStandin, which: str = "dev") -> Score:
    client = openai.AsyncOpenAI(base_url=standin.base_url, api_key="standin", max_retries=0)
    try:
        return await measure(name, OpenAICompatArbiter(client, model="standin"), which)
    finally:
        await client.close()


@pytest.mark.parametrize("which", SETS)
@pytest.mark.parametrize("name", MAPS)
async def test_heldout_routing(name: str, which: str, openai_standin: OpenAIStandin) -> None:
    score = await _with_standin(name, openai_standin, which)
    print("\n" + score.summary(f"{which} {name}", "OpenAI stand-in"))
    local, step = FLOORS[which, name]
    assert score.local_ok >= local and score.step_ok >= step, score.misses


@pytest.mark.parametrize(
    ("which", "name"),
    [
        pytest.param(
            which,
            name,
            marks=pytest.mark.xfail(
                strict=True,
                reason="below the bar on this blind set (see the module docstring)",
            ),
        )
        if (which, name) in BELOW_BAR_WITH_STANDIN
        else (which, name)
        for which in BLIND
        for name in MAPS
    ],
)
async def test_heldout_meets_the_issue_bar(which: str, name: str, openai_standin: OpenAIStandin) -> None:
    score = await _with_standin(name, openai_standin, which)
    assert score.step_ok / score.n >= BAR, score.misses


@pytest.mark.live
@pytest.mark.skipif(
    not os.environ.get("OPENAI_API_KEY"), reason="needs OPENAI_API_KEY (and OPENAI_BASE_URL/OPENAI_MODEL)"
)
@pytest.mark.parametrize("name", MAPS)
async def test_heldout_live(name: str) -> None:
    """The blind sets with the step asking a real model (OPENAI_MODEL, default gpt-4o-mini)."""
    client = openai.AsyncOpenAI(max_retries=0)  # OPENAI_API_KEY, OPENAI_BASE_URL from the environment
    try:
        model = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
        score = await measure(name, OpenAICompatArbiter(client, model=model), "blind7")
    finally:
        await client.close()
    print("\n" + score.summary(name, os.environ.get("OPENAI_MODEL", "gpt-4o-mini")))
    assert score.step_ok / score.n >= BAR, score.misses
