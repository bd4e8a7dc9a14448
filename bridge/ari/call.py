"""What a call handler gets from the ARI controller: `AriCall`, the `CallHandler` type, `AriError`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bridge.audiosocket.server import AudioSocketConnection
from orchestrator.domain.errors import VoicebridgeError
from orchestrator.domain.models import TransferOutcome, TransferRequest

__all__ = ["AriCall", "AriError", "CallHandler"]


class AriError(VoicebridgeError):
    """An ARI request failed or Asterisk did not do what a call's setup needed."""


@dataclass(eq=False)
class AriCall:
    """One answered call whose audio flows through `conn`."""

    call_id: str  # = str(audiosocket uuid)
    channel_id: str
    caller_number: str | None
    exten: str | None
    conn: AudioSocketConnection
    caller_gone: asyncio.Event  # set when the caller hung up
    setup_s: float = 0.0  # StasisStart -> handler called (loop clock)
    # The caller channel's variables that ari.conf `channelvars` lists (e.g. VB_RECORD), as
    # Asterisk put them into the StasisStart event; empty when none are configured.
    channel_vars: dict[str, str] = field(default_factory=dict)
    _hangup: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)
    _transfer: Callable[[TransferRequest, Callable[[], None] | None], Awaitable[TransferOutcome]] | None = (
        field(default=None, repr=False)
    )

    async def hangup(self) -> None:
        """Hang up the caller (DELETE the caller channel); idempotent."""
        if self._hangup is not None:
            await self._hangup()

    async def transfer(
        self, request: TransferRequest, *, on_answer: Callable[[], None] | None = None
    ) -> TransferOutcome:
        """`CallControl.transfer`: dial the operator and join the caller to it (see
        `bridge.ari.transfer`); "failed" when this call cannot transfer. `on_answer()` is called
        the moment the operator's channel answers, before it is bridged (a ringback stops there)."""
        if self._transfer is None:
            return "failed"
        return await self._transfer(request, on_answer)


# Called once per answered call, in the call's own task; the call ends (caller hung up, media and
# bridge destroyed) when it returns. It should return soon after `call.caller_gone` is set.
CallHandler = Callable[[AriCall], Awaitable[None]]
