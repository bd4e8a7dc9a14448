"""Calls expected by channel id (outbound campaigns): the session variables each starts with,
and the future that hears how it ended."""

from __future__ import annotations

import asyncio

from bridge.ari import AriCall

__all__ = ["CallEnd", "ExpectedCalls"]

CallEnd = tuple[str, str, float]  # (call id, end reason, duration s)


class ExpectedCalls:
    """Channel id -> (the call's variables, the future that gets its `CallEnd`). Falsy when empty."""

    def __init__(self) -> None:
        self._calls: dict[str, tuple[dict[str, str], asyncio.Future[CallEnd]]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, channel_id: str) -> bool:
        return channel_id in self._calls

    def expect(self, channel_id: str, variables: dict[str, str]) -> asyncio.Future[CallEnd]:
        """The call about to be originated on `channel_id`; its future gets its `CallEnd`."""
        future: asyncio.Future[CallEnd] = asyncio.get_running_loop().create_future()
        self._calls[channel_id] = (variables, future)
        return future

    def forget(self, channel_id: str) -> None:
        """Stop expecting the call on `channel_id` (its future is cancelled)."""
        expected = self._calls.pop(channel_id, None)
        if expected is not None:
            expected[1].cancel()

    def variables(self, channel_id: str) -> dict[str, str] | None:
        """The variables the call on `channel_id` starts with (None: not expected)."""
        expected = self._calls.get(channel_id)
        return expected[0] if expected is not None else None

    def end(self, channel_id: str, call_id: str, reason: str, duration_s: float) -> None:
        """The call on `channel_id` is over: its future gets (call id, reason, duration s)."""
        expected = self._calls.pop(channel_id, None)
        if expected is not None and not expected[1].done():
            expected[1].set_result((call_id, reason, duration_s))

    def session_variables(self, call: AriCall) -> dict[str, str]:
        """What a call's session starts with: `caller_id` and `dnis` (the dialled number) when
        known, and an outbound call's own variables (`expect`)."""
        variables: dict[str, str] = {}
        if call.caller_number:
            variables["caller_id"] = call.caller_number
        if call.exten:
            variables["dnis"] = call.exten
        expected = self.variables(call.channel_id)
        if expected is not None:
            variables.update(expected)
        return variables
