"""`CallSession`: the controller's state of one call, from its StasisStart to its cleanup."""

from __future__ import annotations

import asyncio
import uuid

from orchestrator.domain.errors import VoicebridgeError

__all__ = ["CallSession", "CallerGone"]


class CallerGone(VoicebridgeError):
    """The caller hung up while the call was being set up (the message names the setup step)."""


class CallSession:
    """Ids, setup futures and teardown flags of one call; created on the caller's StasisStart.

    The ids are ours, chosen up front so that events can be matched before any request returns:
    `uuid` is the AudioSocket UUID (and the call id), the mixing bridge is `vb-<uuid>` and the
    externalMedia channel `vb-em-<uuid>`. Must be created inside the running event loop.
    """

    __slots__ = (
        "bridge_id",
        "caller_deleted",
        "caller_gone",
        "caller_number",
        "channel_id",
        "em_ended",
        "em_id",
        "em_started",
        "gone",
        "media_deleted",
        "op_dialstatus",
        "op_gone",
        "op_id",
        "op_started",
        "started_at",
        "transfers",
        "transferred",
        "task",
        "tearing_down",
        "uuid",
    )

    def __init__(self, channel_id: str, started_at: float, caller_number: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.channel_id = channel_id  # the caller's channel
        self.caller_number = caller_number  # shown to the operator of a transfer (callerId)
        self.uuid = str(uuid.uuid4())
        self.bridge_id = f"vb-{self.uuid}"
        self.em_id = f"vb-em-{self.uuid}"
        self.em_started: asyncio.Future[None] = loop.create_future()  # em channel's StasisStart
        self.em_ended = asyncio.Event()  # the externalMedia channel left Stasis / was destroyed
        # Resolved when the caller hangs up: a future, so setup steps can asyncio.wait() on it.
        self.gone: asyncio.Future[None] = loop.create_future()
        self.caller_gone = asyncio.Event()  # the same fact, as the handler sees it (AriCall)
        self.caller_deleted = False  # we sent the caller's DELETE (so its hang-up events are ours)
        self.media_deleted = False
        self.started_at = started_at  # loop clock at StasisStart, s
        self.task: asyncio.Task[None] | None = None  # the call's task, owned by the controller
        self.tearing_down = False  # the task is in `CallLegs.tear_down`: wait for it, never cancel
        # A transfer (`AriController`): the operator's channel `vb-op-<uuid>-<n>`, its StasisStart
        # (it answered), and its end with the hang-up cause (busy 17, no answer 19, ...).
        self.transfers = 0
        self.op_id: str | None = None
        self.op_started: asyncio.Future[None] = loop.create_future()
        self.op_gone: asyncio.Future[int] = loop.create_future()
        self.op_dialstatus = ""  # the last `Dial` event's dialstatus for the operator channel
        self.transferred = False  # the operator answered: the caller is theirs, not ours to hang up

    def mark_gone(self) -> None:
        """Record that the caller hung up; idempotent."""
        self.caller_gone.set()
        if not self.gone.done():
            self.gone.set_result(None)
