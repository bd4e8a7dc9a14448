"""How often the garbage collector walks every live object (section `[gc]`).

A full collection walks every tracked object not frozen; with hundreds of calls in flight (each
a few hundred objects) it stalled the 20 ms tick for 10-60 ms. The service freezes its start-up
objects (`gc.freeze()` in `VoicebridgeApp.start`); `apply_gc_settings` makes full collections
rarer: one per `full_every` middle-generation collections instead of CPython's 10.

Why not freeze each call once set up: a finished call is today freed by the cycle collector,
not by reference counting (about 200 of its objects sit in reference cycles), frozen cycles are
never collected, and the sweep that would free them (`gc.unfreeze()` + a full collection) walks
the start-up objects too: measured 212 ms at 200 calls, worse than what it saves. The price of
rarer full collections is memory: a finished call's cycles wait longer for one.
"""

from __future__ import annotations

import gc
from typing import Annotated

import pydantic.dataclasses
from pydantic import ConfigDict, Field

__all__ = ["GcSettings", "apply_gc_settings"]


@pydantic.dataclasses.dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class GcSettings:
    """Garbage-collector policy (section `[gc]`).

    Invalid values raise `pydantic.ValidationError` (a `ValueError`) naming the field.
    """

    # A full collection per this many middle-generation collections (CPython's default: 10).
    full_every: Annotated[int, Field(ge=1, le=100_000)] = 100


def apply_gc_settings(settings: GcSettings) -> tuple[int, int, int]:
    """Set the collector's oldest-generation threshold; returns the thresholds in effect."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, settings.full_every)
    return gc.get_threshold()
