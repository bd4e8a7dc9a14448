"""What every part of one call shares (the dialogue loop, the answer pipeline, the responses)."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.call_settings import CallSettings
from orchestrator.contracts import Clock
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.domain.models import SessionState
from orchestrator.events import Observe
from orchestrator.metrics import MetricsLogger

__all__ = ["CallContext"]


@dataclass(frozen=True, slots=True)
class CallContext:
    """One call's identity, map, session, metrics, clock, bounds and event reporter.

    Built once by the Orchestrator and handed to each of its parts; the objects inside are the
    call's own (the session and the metrics change as the call goes on, this record does not).
    """

    call_id: str
    dialogue_map: DialogueMap
    session: SessionState
    metrics: MetricsLogger
    clock: Clock
    call: CallSettings  # the service's bounds on one call (`[call]`)
    observe: Observe
