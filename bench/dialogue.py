"""Dialogue latency in text mode: the real Orchestrator, FlowEngine and classifier on the real loop.

Scripted calls run through `testkit.textmode.run_text_call` with the example map (typed
utterances stand in for STT; TTS and the LLM are the text-mode stand-ins, so the figures are the
dialogue logic's own). Per turn, from the metrics records: logic_ms (t2 -> t3), the time of the
turn's `classify_intent` call, and response_ms (t2 -> t6: the caller's last word to the first bot
audio queued). Then the classifier alone: every held-out paraphrase of the map, classified
repeatedly, in microseconds per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import random
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import percentile, table
from orchestrator.dialogue_map.loader import load_dialogue_map
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.domain.models import IntentResult
from orchestrator.intents.classifier import VectorIntentClassifier
from orchestrator.intents.ngram import CharNgramEmbedder
from testkit.textmode import run_text_call

ROOT = Path(__file__).resolve().parent.parent
MAP_PATH = ROOT / "dialogue_maps" / "cleaning_quote.ru.json"
HELDOUT_PATH = ROOT / "dialogue_maps" / "eval" / "cleaning_quote.ru.heldout.json"
SECONDS_PER_CHAR = 0.005  # bot audio 12x shorter than speech: turns come faster, latency is the same

_call_samples: contextvars.ContextVar[list[float]] = contextvars.ContextVar("bench_classify_us")


def _heldout() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(HELDOUT_PATH.read_text(encoding="utf-8"))
    return data


def scripts(calls: int, seed: int = 3) -> list[list[str]]:
    """`calls` caller scripts mixing the map's routes: quotes and bookings, FAQ questions,
    off-script questions (the LLM route), refusals and operator requests, from held-out wording."""
    data = _heldout()
    by_intent: dict[str, list[str]] = defaultdict(list)
    for text, label in data["intents"] + data["test_intents"]:
        by_intent[label].append(text)
    faq = [text for text, _ in data["faq"] + data["test_faq"]]
    off = list(data["off_script"] + data["test_off_script"])
    rnd = random.Random(seed)
    out: list[list[str]] = []
    for i in range(calls):
        area = rnd.choice(by_intent["give_area"])
        kind = i % 4
        if kind == 0:  # straight to a booking
            out.append([area, rnd.choice(by_intent["agree"]), rnd.choice(by_intent["choose_day"])])
        elif kind == 1:  # questions on the way
            out.append([area, rnd.choice(faq), rnd.choice(off), rnd.choice(by_intent["choose_day"])])
        elif kind == 2:  # a refusal after the quote
            out.append([area, rnd.choice(faq), rnd.choice(by_intent["refuse"])])
        else:  # off-script, then a person
            out.append([rnd.choice(off), rnd.choice(by_intent["operator"])])
    return out


@contextlib.contextmanager
def timed_classifier() -> Iterator[None]:
    """Time every `classify_intent` call, into the calling call's sample list (a context var)."""
    original = VectorIntentClassifier.classify_intent

    async def timed(
        self: VectorIntentClassifier, text: str, *, previous_leader: str | None = None
    ) -> tuple[IntentResult | None, str | None]:
        t = time.perf_counter_ns()
        try:
            return await original(self, text, previous_leader=previous_leader)
        finally:
            samples = _call_samples.get(None)
            if samples is not None:
                samples.append((time.perf_counter_ns() - t) / 1000)

    setattr(VectorIntentClassifier, "classify_intent", timed)  # noqa: B010 - a bench-only probe
    try:
        yield
    finally:
        setattr(VectorIntentClassifier, "classify_intent", original)  # noqa: B010


@dataclass
class DialogueResult:
    """Per-turn records (with the turn's classify time) and the classifier's own timings."""

    calls: int
    turns: list[dict[str, Any]] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    classify_us: list[float] = field(default_factory=list)
    classify_cold_us: list[float] = field(default_factory=list)  # first pass: n-gram caches cold
    faq_us: list[float] = field(default_factory=list)


async def _one_call(dmap: DialogueMap, script: list[str], call_id: str) -> tuple[str, list[dict[str, Any]]]:
    samples: list[float] = []
    _call_samples.set(samples)  # this task's context: the Orchestrator's tasks inherit it
    lines = iter(script)

    async def next_utterance() -> str | None:
        return next(lines, None)

    call = await run_text_call(dmap, next_utterance, call_id=call_id, seconds_per_char=SECONDS_PER_CHAR)
    turns = [dict(m) for m in call.metrics if m.get("event") == "turn" and m.get("route") != "greeting"]
    # One classify_intent per user turn, in order (text mode sends finals only, no partials).
    for turn, us in zip(turns, samples, strict=False):
        turn["classify_us"] = us
    return call.outcome.reason, turns


async def _calls(dmap: DialogueMap, calls: int, concurrency: int, result: DialogueResult) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def run(i: int, script: list[str]) -> tuple[str, list[dict[str, Any]]]:
        async with gate:
            return await _one_call(dmap, script, f"bench-{i}")

    tasks = [asyncio.create_task(run(i, s), name=f"bench-dialogue-{i}") for i, s in enumerate(scripts(calls))]
    for reason, turns in await asyncio.gather(*tasks):
        result.outcomes[reason] = result.outcomes.get(reason, 0) + 1
        result.turns.extend(turns)


async def _classifier_alone(dmap: DialogueMap, repeat: int, result: DialogueResult) -> None:
    classifier = VectorIntentClassifier(dmap, CharNgramEmbedder())
    await classifier.setup()
    data = _heldout()
    texts = [t for t, _ in data["intents"] + data["faq"] + data["test_intents"] + data["test_faq"]]
    texts += data["off_script"] + data["test_off_script"]
    for i in range(repeat):
        for text in texts:
            t = time.perf_counter_ns()
            await classifier.classify_intent(text)
            us = (time.perf_counter_ns() - t) / 1000
            (result.classify_us if i else result.classify_cold_us).append(us)
            t = time.perf_counter_ns()
            await classifier.find_faq_answer(text)
            result.faq_us.append((time.perf_counter_ns() - t) / 1000)


def run_dialogue(*, calls: int = 20, concurrency: int = 4, classifier_repeat: int = 20) -> DialogueResult:
    """Run the scripted calls, then the classifier alone."""
    dmap = load_dialogue_map(MAP_PATH)
    result = DialogueResult(calls)
    with timed_classifier():
        start = time.perf_counter()
        asyncio.run(_calls(dmap, calls, concurrency, result))
        result.wall_s = time.perf_counter() - start
    asyncio.run(_classifier_alone(dmap, classifier_repeat, result))
    return result


def _stage_row(name: str, turns: list[dict[str, Any]]) -> list[object]:
    def col(key: str) -> list[float]:
        return [float(t[key]) for t in turns if t.get(key) is not None]

    logic, classify, response = col("logic_ms"), col("classify_us"), col("response_ms")
    return [
        name,
        len(turns),
        percentile(logic, 50),
        percentile(logic, 95),
        percentile(classify, 50),
        percentile(classify, 95),
        percentile(response, 50),
        percentile(response, 95),
    ]


def render_dialogue(result: DialogueResult) -> str:
    """The per-turn table and the classifier table."""
    by_route: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in result.turns:
        by_route[str(t.get("route"))].append(t)
    rows = [_stage_row(route, turns) for route, turns in sorted(by_route.items())]
    rows.append(_stage_row("all", result.turns))
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items()))
    turn_table = table(
        (
            "route",
            "turns",
            "logic_p50_ms",
            "logic_p95_ms",
            "classify_p50_us",
            "classify_p95_us",
            "response_p50_ms",
            "response_p95_ms",
        ),
        rows,
        title=(
            f"Dialogue latency, text mode ({result.calls} scripted calls on "
            f"{MAP_PATH.name}, {result.wall_s:.1f} s; outcomes: {outcomes}; logic = t2->t3, "
            "response = t2->t6)"
        ),
    )
    clf_rows = [
        [name, len(us), percentile(us, 50), percentile(us, 95)]
        for name, us in (
            ("classify_intent, first pass (cold)", result.classify_cold_us),
            ("classify_intent, repeated", result.classify_us),
            ("find_faq_answer", result.faq_us),
        )
    ]
    clf_table = table(
        ("call", "n", "p50_us", "p95_us"),
        clf_rows,
        title="Classifier alone (held-out paraphrases of the map, char n-gram embedder)",
    )
    return turn_table + "\n\n" + clf_table
