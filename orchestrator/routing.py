"""Where a caller's turn goes (spec 4.4) and the bot's answer to it: `TurnRouter`.

An intent with a transition from the current state -> clarify (missing entities) or the
FlowEngine (SUCCESS: the new state's playlist, else the error playlist); no intent -> the FAQ,
else the constrained intent step when the turn is unsure (`IntentStep`: it may pick an intent or
a FAQ entry, routed as above), else the LLM (`Unscripted`). Each route plays its answer as one
bot turn through `BotVoice`. Also the types the dialogue speaks through: `Reply` (one bot
turn's body), `BotVoice`, `Unscripted` and `Route` (the route a turn took, in its metrics).
The dialogue loop that calls it is `orchestrator.dialogue`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from orchestrator.call_context import CallContext
from orchestrator.contracts import FlowEngine, IntentClassifier, IntentStep
from orchestrator.domain.errors import ClassifierError
from orchestrator.domain.models import FaqAnswer, IntentResult
from orchestrator.events import CallEventKind
from orchestrator.flow_engine import missing_entities
from orchestrator.responses import Responses

__all__ = ["BotVoice", "Reply", "Route", "TurnRouter", "Unscripted"]

Route = Literal["scripted", "clarify", "flow_error", "faq", "llm"]
Reply = Callable[[], Awaitable[None]]


class BotVoice(Protocol):
    """What the dialogue needs to speak: one bot turn at a time (`orchestrator.bot_turns.BotTurns`)."""

    async def bot_turn(self, body: Reply, *, interruptible: bool | None = None) -> bool:
        """Run `body` as the cancellable bot turn; False when barge-in cut it."""
        ...


# Answers the caller's words with the LLM (spec 4.3: `BotTurns.unscripted`).
Unscripted = Callable[[str], Awaitable[None]]


class TurnRouter:
    """One call's routing of the caller's turns (see the module's docstring). `last_intent`:
    the last routed intent (a transfer's VB_INTENT)."""

    def __init__(
        self,
        ctx: CallContext,
        *,
        voice: BotVoice,
        unscripted: Unscripted,
        responses: Responses,
        flow_engine: FlowEngine,
        classifier: IntentClassifier,
        intent_step: IntentStep | None = None,
    ) -> None:
        self._voice, self._unscripted, self._responses = voice, unscripted, responses
        self._session, self._map, self._metrics = ctx.session, ctx.dialogue_map, ctx.metrics
        self._flow, self._classifier, self._observe = flow_engine, classifier, ctx.observe
        self._provider_timeout_s = ctx.call.provider_timeout_s
        self._intent_step = intent_step
        self.last_intent: str | None = None

    async def route(self, text: str, intent: IntentResult | None) -> Route:
        """Scripted path, FAQ, the intent step, or the LLM; plays the bot's answer. Returns the route."""
        dmap, voice, responses = self._map, self._voice, self._responses
        faq: FaqAnswer | None = None
        if not self._routable(intent):
            faq = await self._find_faq(text)
            if faq is None:
                intent, faq = await self._ask_intent_step(text)
        if faq is not None:
            self._metrics.set(faq=faq.faq_id, faq_score=round(faq.score, 3))
            answer = dmap.faq[faq.faq_id].answer
            await voice.bot_turn(lambda: responses.play_items(answer))
            return "faq"
        if intent is None or not self._routable(intent):
            await voice.bot_turn(functools.partial(self._unscripted, text))
            return "llm"
        return await self.route_intent(intent)

    async def route_intent(self, intent: IntentResult) -> Route:
        """A routable intent: clarify, or the FlowEngine's step and the new state's playlist."""
        dmap, session, voice, responses = self._map, self._session, self._voice, self._responses
        self.last_intent = intent.intent_id
        definition = dmap.intents[intent.intent_id]
        missing = missing_entities(dmap, intent.intent_id, session.variables, intent.entities)
        if missing:
            self._metrics.set(missing_entities=missing)
            await voice.bot_turn(lambda: responses.play_items(definition.clarify_playlist))
            return "clarify"
        flow = self._flow.process_event(session, intent)
        if flow.status == "SUCCESS" and flow.updated_session is not None:
            before = session.current_state_id
            flow.updated_session.apply_to(session)
            if session.current_state_id != before:
                self._observe(CallEventKind.STATE, from_state=before, to_state=session.current_state_id)
            state = dmap.state(session.current_state_id)
            await voice.bot_turn(lambda: responses.play_items(state.system_response.playlist))
            return "scripted"
        self._metrics.set(flow_status=flow.status, flow_detail=flow.detail)
        if flow.status == "MISSING_ENTITY":
            await voice.bot_turn(lambda: responses.play_items(definition.clarify_playlist))
            return "clarify"
        await voice.bot_turn(responses.play_error_playlist)
        return "flow_error"

    def _routable(self, intent: IntentResult | None) -> bool:
        return intent is not None and self._flow.has_transition(
            self._session.current_state_id, intent.intent_id
        )

    async def _find_faq(self, text: str) -> FaqAnswer | None:
        try:
            async with asyncio.timeout(self._provider_timeout_s):
                return await self._classifier.find_faq_answer(text)
        except (ClassifierError, TimeoutError):
            return None  # the LLM can still answer

    async def _ask_intent_step(self, text: str) -> tuple[IntentResult | None, FaqAnswer | None]:
        """The constrained step on an unsure turn (its own bound; never raises): its pick, if any."""
        step = self._intent_step
        decision = None if step is None else await step.resolve(text, self._session.current_state_id)
        if decision is None:
            return None, None
        self._metrics.record_intent_step(decision)
        choice = decision.choice
        return (choice, None) if isinstance(choice, IntentResult) else (None, choice)
