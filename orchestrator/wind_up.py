"""The drain: the service's deadline for a call, and the call's wind-up when it passes.

`DrainDeadline.drain_by` is set once (synchronously, e.g. from a signal handler);
`DrainDeadline.wait` sleeps until it passes. `wind_up` then cuts the dialogue and plays the
map's drain goodbye (`drain_goodbye_key`, else its emergency filler), bounded by `[call]
apologise_timeout_s`, before the call ends with "drain_timeout".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Protocol

from orchestrator.call_context import CallContext
from orchestrator.contracts import Clock
from orchestrator.playback import PlaylistPlayer
from orchestrator.routing import Reply
from orchestrator.tasks import cancel_and_wait
from orchestrator.turns import TurnEvent, TurnTaking

__all__ = ["BotTurn", "DrainDeadline", "wind_up"]

log = logging.getLogger("orchestrator.orchestrator")  # the call's log, as before the split


class BotTurn(Protocol):
    """`BotTurns.bot_turn` (orchestrator/bot_turns.py): runs one bot response; False when barge-in cut it."""

    def __call__(self, body: Reply, *, interruptible: bool | None = None) -> Awaitable[bool]: ...


class DrainDeadline:
    """The clock time by which the service wants the call over (None until it drains)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.deadline: float | None = None
        self._draining = asyncio.Event()

    def drain_by(self, deadline: float) -> None:
        """Set the deadline (clock time, s); idempotent: the first deadline stays."""
        if self.deadline is None:
            self.deadline = deadline
            self._draining.set()

    async def wait(self) -> None:
        """Idle until the service drains, then sleep until the deadline."""
        await self._draining.wait()
        assert self.deadline is not None
        delay = self.deadline - self._clock.now()
        if delay > 0:
            await asyncio.sleep(delay)


async def wind_up(
    ctx: CallContext,
    dialogue: asyncio.Task[None],
    *,
    player: PlaylistPlayer,
    turns: TurnTaking,
    bot_turn: BotTurn,
) -> None:
    """The drain deadline passed: cut the dialogue, say goodbye (bounded), end the call."""
    settings = ctx.dialogue_map.settings
    key = settings.drain_goodbye_key or settings.emergency_filler_key
    log.info(
        "call %s: drain timeout in state %s: goodbye %s, then hang-up",
        ctx.call_id,
        ctx.session.current_state_id,
        key,
    )
    await cancel_and_wait(dialogue, timeout=ctx.call.cancel_bound_s)
    player.interrupt()  # fillers cut, the cut turn's queued audio dropped
    if turns.ended:
        return
    turns.handle(TurnEvent.WIND_UP)
    ctx.metrics.start_bot_only_turn()
    ctx.metrics.set(route="drain_goodbye", state=ctx.session.current_state_id)
    outbound = player.outbound
    assert outbound is not None, "run() sets the outbound stream"

    async def goodbye() -> None:
        await player.play_clip(key, "answer")
        await outbound.drain()

    try:
        async with asyncio.timeout(ctx.call.apologise_timeout_s):
            await bot_turn(goodbye, interruptible=False)
    except TimeoutError:
        log.warning(
            "call %s: the drain goodbye did not finish within %.1f s",
            ctx.call_id,
            ctx.call.apologise_timeout_s,
        )
    finally:
        ctx.metrics.emit_turn()
    if turns.allows(TurnEvent.END_CALL):
        turns.handle(TurnEvent.END_CALL)
