"""How the garbage collector treats the service's long-lived objects (section `[gc]`).

A full collection walks every tracked object not frozen; with hundreds of calls in flight (each
about 80 tracked objects in the gateway alone) it stalled the 20 ms tick: 41-55 ms at 1,000 live
bench calls (`python -m bench.gc_freeze`). The service freezes its start-up objects
(`gc.freeze()` in `VoicebridgeApp.start`); `apply_gc_settings` makes full collections rarer: one
per `full_every` middle-generation collections instead of CPython's 10. The price of rarer full
collections is memory: cyclic garbage waits longer for one.

A finished call leaves nothing of ours to the cycle collector (tests/test_call_refcount_teardown.py):
its objects are freed by reference counting the moment it ends. (They were not: ~340 objects a
call sat in reference cycles, the Orchestrator and its parts' callbacks, exception tracebacks
holding frames, aioari's per-request classes.) So the calls themselves can be frozen
(`freeze_calls`, `freeze_call_objects`): after each call's set-up the young generations are
collected and every live object frozen, and a full collection then walks only what was made
since the last set-up: 0.0 ms instead of 41-55 ms at 1,000 live bench calls, for 0.2-1.0 ms per
set-up (the young collection). A frozen object freed by reference counting leaves the frozen set.

Why off by default: whatever is cyclic garbage in the oldest generation when a freeze runs (an
object that lived long, then died in a cycle) is frozen for good, a leak; so is a cycle that
forms later through a frozen object (each set-up freezes every call in progress: its
Orchestrator, its running frames and tasks), since the collector never looks at frozen objects.
Such cycles came from failures re-raised in a frame that names what keeps them (a task, a
queued error): tests/test_call_refcount_paths.py walks the failure paths with the collector off. Measured: the bench
calls leave 0 such objects; a call through the service (ARI, AudioSocket, gRPC STT/TTS, HTTP
LLM) leaves 0 of ours, but the in-process stand-ins left 4-5 a call (asyncio.subprocess's
protocol <-> stdin writer of espeak-ng, grpc's server-side method lookup): a library's cycle
or an error path not measured here would leak the same way, unseen until the RSS grows.
`gc.get_freeze_count()` is the number to watch when it is on.
"""

from __future__ import annotations

import gc
from typing import Annotated

import pydantic.dataclasses
from pydantic import ConfigDict, Field

__all__ = ["GcSettings", "apply_gc_settings", "freeze_call_objects"]


@pydantic.dataclasses.dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class GcSettings:
    """Garbage-collector policy (section `[gc]`).

    Invalid values raise `pydantic.ValidationError` (a `ValueError`) naming the field.
    """

    # A full collection per this many middle-generation collections (CPython's default: 10).
    full_every: Annotated[int, Field(ge=1, le=100_000)] = 100
    # Freeze every live object after each call's set-up (`freeze_call_objects`; module docstring:
    # what it saves, why it is off).
    freeze_calls: bool = False


def apply_gc_settings(settings: GcSettings) -> tuple[int, int, int]:
    """Set the collector's oldest-generation threshold; returns the thresholds in effect."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, settings.full_every)
    return gc.get_threshold()


def freeze_call_objects(settings: GcSettings) -> bool:
    """After a call's set-up, with `freeze_calls`: collect the young generations (the cyclic
    garbage there is not frozen), then freeze every tracked object, the new call's and every
    other live one's, so full collections stop walking them. Returns whether it froze."""
    if not settings.freeze_calls:
        return False
    gc.collect(1)
    gc.freeze()
    return True
