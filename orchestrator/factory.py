"""The process-wide services every call shares, and the factory of one call's Orchestrator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.breaker import CircuitBreaker, GuardedLLM
from orchestrator.call_settings import CallSettings
from orchestrator.contracts import (
    AudioCache,
    Clock,
    FlowEngine,
    IntentClassifier,
    IntentStep,
    LLMManager,
    STTStreamer,
    TTSManager,
)
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.domain.errors import CallSetupError
from orchestrator.events import Observer
from orchestrator.interruption_settings import InterruptionSettings
from orchestrator.metrics import MetricsSink
from orchestrator.orchestrator import Orchestrator
from orchestrator.responses import Renderer

__all__ = ["CallServices", "create_orchestrator_instance"]


@dataclass(slots=True)
class CallServices:
    """Process-wide services shared by every call, and factories for the per-call ones."""

    dialogue_map: DialogueMap
    flow_engine: FlowEngine
    intent_classifier: IntentClassifier
    audio_cache: AudioCache
    clock: Clock
    render: Renderer
    stt_factory: Callable[[str], STTStreamer]
    tts_factory: Callable[[str], TTSManager]
    llm_factory: Callable[[str], LLMManager]
    metrics_sink: MetricsSink | None = None
    call: CallSettings = field(default_factory=CallSettings)  # the service's bounds on one call
    intent_step: IntentStep | None = None  # the constrained step for unsure turns (None: none)
    # The service's circuit per provider (None: none): a call that starts while STT's is open
    # ends at once (emergency phrase); while the LLM's is open, answers fail without a request.
    stt_breaker: CircuitBreaker | None = None
    llm_breaker: CircuitBreaker | None = None
    # How speech over the bot is judged (pause, resume, cancel: `[interruption]`).
    interruption: InterruptionSettings = field(default_factory=InterruptionSettings)


async def create_orchestrator_instance(
    call_id: str, services: CallServices, *, observer: Observer | None = None
) -> Orchestrator:
    """Build a fresh Orchestrator for `call_id` and await its async setup (spec 4.1).

    Raises `CallSetupError` when setup fails; whatever was created is shut down first.
    """
    llm = services.llm_factory(call_id)
    orchestrator = Orchestrator(
        call_id,
        dialogue_map=services.dialogue_map,
        flow_engine=services.flow_engine,
        intent_classifier=services.intent_classifier,
        tts_manager=services.tts_factory(call_id),
        stt_streamer=services.stt_factory(call_id),
        llm_manager=llm if services.llm_breaker is None else GuardedLLM(llm, services.llm_breaker),
        audio_cache=services.audio_cache,
        clock=services.clock,
        render=services.render,
        metrics_sink=services.metrics_sink,
        observer=observer,
        call=services.call,
        intent_step=services.intent_step,
        stt_breaker=services.stt_breaker,
        interruption=services.interruption,
    )
    try:
        async with asyncio.timeout(services.call.setup_timeout_s):
            await orchestrator._setup_connections()
    except asyncio.CancelledError:
        orchestrator.end_reason = "shutdown"
        await orchestrator.shutdown()
        raise
    except Exception as exc:
        orchestrator.end_reason = "setup_failed"  # what the service logs and counts for it too
        orchestrator.end_detail = f"{type(exc).__name__}: {exc}"
        await orchestrator.shutdown()
        raise CallSetupError(f"call {call_id}: setup failed: {exc!r}") from exc
    return orchestrator
