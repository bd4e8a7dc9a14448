"""The constrained step for unsure turns (issue 8): ask an arbiter to pick from a closed set.

Where it sits in a final's routing (`orchestrator.dialogue`): local intent with a transition
from the state -> FAQ entry over its threshold -> THIS STEP -> the free LLM answer.

1. Fast paths, no step: a confident local route (the two above) never gets here; a turn whose
   best local score among the state's options is below `settings.intent_arbiter.min_score` is
   clearly off-script and goes straight to the LLM answer (`resolve()` returns None).
2. The options are the intents with a transition from the current state, then the global
   transitions' intents, then every FAQ entry, each shown by a few of its examples; the bot's
   last words (the state's cached phrases) go along as context.
3. The arbiter's answer is validated against that closed set: a label of it is a pick; None or
   "none" is none; anything else is "invalid" and taken as none. A timeout (the map's
   `intent_arbiter.timeout_s`) or a failure is none too: the step never raises and never holds
   the line longer than its timeout.
4. A picked intent carries the entities found in the text (as `classify_intent` would) and its
   local score; a picked FAQ entry its local score.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from orchestrator.contracts import Clock, IntentArbiter
from orchestrator.dialogue_map.models import CacheItem, DialogueMap
from orchestrator.domain.errors import ProviderError
from orchestrator.domain.models import ArbiterDecision, ArbiterOption, FaqAnswer, IntentResult
from orchestrator.intents.classifier import faq_label, intent_label
from orchestrator.intents.entities import extract_entities

log = logging.getLogger(__name__)

NONE_LABEL = "none"
MAX_EXAMPLES = 6  # per option: enough to show what is meant, short enough for a fast request


class LabelScorer(Protocol):
    """The local scores the band is judged on (`VectorIntentClassifier.label_scores`)."""

    async def label_scores(self, text: str) -> dict[str, float]:
        """Score by label ("intent:<id>", "faq:<id>"); raises `ProviderError` on failure."""
        ...


class NullArbiter:
    """The arbiter when no LLM is configured: never asked (`ArbiterStep` skips the step)."""

    name = "none"

    async def choose(self, text: str, options: Sequence[ArbiterOption], *, context: str = "") -> str | None:
        """Always none."""
        return None


def state_options(dmap: DialogueMap, state_id: str) -> list[ArbiterOption]:
    """The closed set for `state_id`: its transitions' intents, the global ones, the FAQ entries."""
    intent_ids = list(dict.fromkeys([*dmap.state(state_id).transitions, *dmap.global_transitions]))
    options = [
        ArbiterOption(intent_label(iid), tuple(dmap.intents[iid].examples[:MAX_EXAMPLES]))
        for iid in intent_ids
        if iid in dmap.intents
    ]
    options += [
        ArbiterOption(faq_label(fid), tuple(faq.questions[:MAX_EXAMPLES])) for fid, faq in dmap.faq.items()
    ]
    return options


def bot_context(dmap: DialogueMap, state_id: str) -> str:
    """What the bot said on entering `state_id`, as far as the map's cached phrases tell."""
    items = dmap.state(state_id).system_response.playlist
    return " ".join(dmap.audio[i.key] for i in items if isinstance(i, CacheItem) and i.key in dmap.audio)


class ArbiterStep:
    """`IntentStep` over one map (see the module docstring); share it between calls."""

    def __init__(
        self, dialogue_map: DialogueMap, scorer: LabelScorer, arbiter: IntentArbiter, *, clock: Clock
    ) -> None:
        self._map = dialogue_map
        self._scorer = scorer
        self._arbiter = arbiter
        self._clock = clock
        self._options = {sid: state_options(dialogue_map, sid) for sid in dialogue_map.states}
        self._context = {sid: bot_context(dialogue_map, sid) for sid in dialogue_map.states}

    @property
    def arbiter_name(self) -> str:
        """The arbiter's name, for the metrics."""
        return self._arbiter.name

    async def resolve(self, text: str, state_id: str) -> ArbiterDecision | None:
        """The arbiter's pick for an unsure turn; None when the step does not run (see above)."""
        settings = self._map.settings.intent_arbiter
        options = self._options.get(state_id, [])
        if not settings.enabled or isinstance(self._arbiter, NullArbiter) or not options:
            return None
        try:
            scores = await self._scorer.label_scores(text)
        except ProviderError as exc:
            log.warning("intent step: local scores failed: %s", exc)
            return None  # the turn goes to the LLM answer, as without the step
        best = max((scores.get(o.label, 0.0) for o in options), default=0.0)
        if best < settings.min_score:
            return None
        started = self._clock.now()
        answer: str | None = None
        try:
            async with asyncio.timeout(settings.timeout_s):
                answer = await self._arbiter.choose(text, options, context=self._context[state_id])
        except TimeoutError:
            return ArbiterDecision(None, "timeout", None, best, started, self._clock.now())
        except Exception as exc:  # a provider failure or an adapter bug: none, never a dead turn
            log.warning("intent step: arbiter %s failed: %r", self._arbiter.name, exc)
            return ArbiterDecision(None, "error", None, best, started, self._clock.now())
        ended = self._clock.now()
        labels = {o.label for o in options}
        if answer is None or answer.strip().lower() == NONE_LABEL:
            return ArbiterDecision(None, "none", answer, best, started, ended)
        if answer not in labels:
            log.info("intent step: %r is not among the options: taken as none", answer)
            return ArbiterDecision(None, "invalid", answer, best, started, ended)
        return ArbiterDecision(self._choice(text, answer, scores), "picked", answer, best, started, ended)

    def _choice(self, text: str, label: str, scores: dict[str, float]) -> IntentResult | FaqAnswer:
        kind, _, ident = label.partition(":")
        score = scores.get(label, 0.0)
        if kind == "faq":
            return FaqAnswer(ident, score)
        intent = self._map.intents[ident]
        entities = extract_entities(text, intent.entities, self._map.entities)
        return IntentResult(ident, score, entities, ident)
