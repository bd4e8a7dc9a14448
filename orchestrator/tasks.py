"""Owning asyncio tasks: the one bounded cancel-and-wait, a per-owner set of named tasks, and the
one bounded cleanup step.

Rules every module follows (the developers' guide: every task owned, named, awaited with a bound):
- A task is started through a `TaskOwner` (or awaited by the coroutine that started it).
- Stopping is `cancel_and_wait(...)`: cancel, then wait at most `timeout` seconds. A task that
  does not finish within the bound is logged by name and left cancelled (never awaited forever);
  its outcome is retrieved so no "exception was never retrieved" noise reaches the logs.
- A task that failed with anything but a `VoicebridgeError` (a bug, not a provider failure) is
  logged with its traceback when it is reaped.
- A task already cancelling (told to stop by someone else, e.g. barge-in) is not cancelled again,
  only waited for: a second cancel would interrupt the cleanup it is running.
- A cleanup step that must neither hang its caller nor mask why it ran (closing a stream, a
  provider's shutdown) goes through `bounded(step, timeout, what)`: at most `timeout` s, a
  failure or overrun logged, never raised.
- Our own cancellation is never swallowed: if the coroutine calling `cancel_and_wait` is itself
  cancelled while waiting, the CancelledError propagates after the tasks were told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from orchestrator.domain.errors import VoicebridgeError

__all__ = ["CANCEL_BOUND_S", "TaskOwner", "bounded", "cancel_and_wait"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# The default of how long a cancelled task may take to unwind (close a gRPC call, send a last
# frame) before we stop waiting for it: long enough for any well-behaved cleanup, short enough
# that a stuck one cannot hold a call's teardown (or a deploy's drain) hostage. A call's own
# bound is `[call] cancel_bound_s` (`CallSettings`); adapters without settings use this one.
CANCEL_BOUND_S = 5.0


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None, timeout: float = CANCEL_BOUND_S) -> None:
    """Cancel `tasks` (None entries are skipped) and wait at most `timeout` s for them to end.

    Never raises for the tasks' outcomes; raises CancelledError if the caller is cancelled.
    """
    live = [t for t in tasks if t is not None]
    pending = [t for t in live if not t.done()]
    for t in pending:
        if isinstance(t, asyncio.Task) and t.cancelling():
            continue  # already unwinding: a second cancel would cut its cleanup short
        t.cancel()
    if pending:
        _, stuck = await asyncio.wait(pending, timeout=timeout)
        for t in stuck:
            name = t.get_name() if isinstance(t, asyncio.Task) else repr(t)
            log.error("task %s did not stop within %.1f s of being cancelled", name, timeout)
    for t in live:
        if t.cancelled():
            # A cancelled task keeps the CancelledError its coroutine ended with (and so its
            # traceback's frames and their locals, often an object that holds the task: a
            # reference cycle) until it is asked for; asking hands it over and it is dropped.
            with contextlib.suppress(asyncio.CancelledError):
                t.exception()
            continue
        # Retrieve outcomes so no "exception was never retrieved" noise reaches the logs. A
        # provider failure is the domain's to handle; anything else is a bug and must be seen.
        if t.done():
            exc = t.exception()
            if exc is not None and not isinstance(exc, VoicebridgeError):
                name = t.get_name() if isinstance(t, asyncio.Task) else repr(t)
                log.error("task %s failed", name, exc_info=exc)


async def bounded(step: Awaitable[object], timeout: float, what: str) -> bool:
    """Await `step` for at most `timeout` s; True when it completed.

    A step that fails or overruns is logged as "could not <what>" and False is returned: cleanup
    must neither hang its caller nor replace the reason the caller is cleaning up. The caller's
    own cancellation propagates.
    """
    try:
        async with asyncio.timeout(timeout):
            await step
    except TimeoutError:
        log.error("could not %s within %.1f s", what, timeout)
    except Exception:
        log.exception("could not %s", what)
    else:
        return True
    return False


class TaskOwner:
    """Named tasks of one owner (a call, a stream); `aclose()` cancels and awaits them all, bounded.

    `cancel_bound_s` is the owner's bound on a cancelled task's unwinding (its `aclose()` default;
    the owner's users read it for their own `cancel_and_wait`). Finished tasks leave the set at
    once, so a long call does not accumulate them.
    """

    __slots__ = ("_prefix", "_tasks", "_closed", "cancel_bound_s")

    def __init__(self, prefix: str, *, cancel_bound_s: float = CANCEL_BOUND_S) -> None:
        self._prefix = prefix
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.cancel_bound_s = cancel_bound_s

    def spawn(
        self, coro: Coroutine[Any, Any, _T], role: str, *, context: contextvars.Context | None = None
    ) -> asyncio.Task[_T]:
        """Start `coro` as the task `<prefix>:<role>`, in `context` (default: a copy of the
        current one, e.g. the call's trace id). Raises RuntimeError after `aclose()`."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self._prefix}: cannot start {role!r}, the owner is closed")
        task = asyncio.create_task(coro, name=f"{self._prefix}:{role}", context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    async def aclose(self, timeout: float | None = None) -> None:
        """Cancel every task still running and wait for them, at most `timeout` s (default: the
        owner's `cancel_bound_s`). Idempotent."""
        self._closed = True
        bound = self.cancel_bound_s if timeout is None else timeout
        await cancel_and_wait(*list(self._tasks), timeout=bound)

    def keep_alive(self, obj: object) -> None:
        """Hold `obj` until every task still running (one that outlived `aclose`'s bound) ends:
        an owner whose parts reach it only weakly must not vanish under such a task."""
        for task in self._tasks:
            task.add_done_callback(functools.partial(_hold, obj))


def _hold(obj: object, task: asyncio.Future[Any]) -> None:
    """A done callback whose only work is to have referenced `obj` until the task ended."""
