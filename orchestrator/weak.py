"""Callbacks that do not keep their owner alive, so a finished call is freed by reference counting.

A call's parts hold callbacks into the object that holds the parts (the Orchestrator, a
recognition stream). A bound method there is a reference cycle: the whole call (hundreds of
objects) then waits for a full collection of the cycle collector, which the service makes rare
(bridge/gc_policy.py). `weakly` wraps such a method so only the owner's holder keeps it alive.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["weakly"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def weakly(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """`method` (a bound method) as a function that holds its object only weakly.

    Calls `method` with the same arguments while its object lives; after the object is gone it
    raises ReferenceError (an owner using this must outlive every caller, e.g. keep itself alive
    while its tasks run: `TaskOwner.keep_alive`).
    """
    ref = weakref.WeakMethod(method)
    name = method.__qualname__  # `method` itself must not be in the closure: a strong reference

    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        bound = ref()
        if bound is None:
            raise ReferenceError(f"{name}: its object is gone")
        return bound(*args, **kwargs)

    return call
