"""A final's route without a call: the decisions `orchestrator.routing` takes, for evaluations.

`route_text()` makes the same calls in the same order as `TurnRouter.route` (local intent with a
transition from the state -> FAQ -> the constrained intent step -> the free LLM answer) and
returns where the turn would go, so held-out sets and benches measure what a call would do.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.contracts import FlowEngine, IntentClassifier, IntentStep
from orchestrator.domain.models import ArbiterDecision, FaqAnswer, IntentResult


@dataclass(frozen=True, slots=True)
class RouteOutcome:
    """Where a final goes: "intent:<id>", "faq:<id>" or "none" (the LLM), and how it got there."""

    target: str
    via_step: bool  # the constrained step ran (whatever it answered)
    decision: ArbiterDecision | None


async def route_text(
    text: str,
    state_id: str,
    *,
    classifier: IntentClassifier,
    flow: FlowEngine,
    step: IntentStep | None = None,
) -> RouteOutcome:
    """The route of `text` said in `state_id` (a missing entity's clarify counts as the intent)."""
    intent, _ = await classifier.classify_intent(text)
    if intent is not None and flow.has_transition(state_id, intent.intent_id):
        return RouteOutcome(f"intent:{intent.intent_id}", False, None)
    faq = await classifier.find_faq_answer(text)
    if faq is not None:
        return RouteOutcome(f"faq:{faq.faq_id}", False, None)
    decision = await step.resolve(text, state_id) if step is not None else None
    choice = decision.choice if decision is not None else None
    if isinstance(choice, FaqAnswer):
        return RouteOutcome(f"faq:{choice.faq_id}", True, decision)
    if isinstance(choice, IntentResult) and flow.has_transition(state_id, choice.intent_id):
        return RouteOutcome(f"intent:{choice.intent_id}", True, decision)
    return RouteOutcome("none", decision is not None, decision)
