"""FakeAmi: TEST INFRASTRUCTURE, not part of the production bridge.

A TCP server speaking enough of the Asterisk Manager Interface for `bridge.ami.originate`: the
banner, `Login` (accepted when the secret matches), and `Originate` with `Async: true`, answered
"successfully queued" and then an `OriginateResponse` event whose Reason comes from `reasons`
(number -> Asterisk's code: "4" answered, "5" busy, "3" no answer, "8" congestion, "0" failure;
numbers not listed answer). Each Originate is kept in `originates` (its fields, by name).
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["FakeAmi"]


class FakeAmi:
    """`await start()`, then `port`; `await close()`."""

    def __init__(self, *, secret: str = "voicebridge", reasons: dict[str, str] | None = None) -> None:
        self.secret = secret
        self.reasons = dict(reasons or {})
        self.originates: list[dict[str, str]] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        try:
            while block := await reader.readuntil(b"\r\n\r\n"):
                fields: dict[str, str] = {}
                for line in block.decode().split("\r\n"):
                    if ": " in line:
                        key, value = line.split(": ", 1)
                        # Repeated headers (Variable) are joined, as the test reads them.
                        fields[key] = f"{fields[key]},{value}" if key in fields else value
                writer.write(self._answer(fields).encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, fields: dict[str, str]) -> str:
        action, action_id = fields.get("Action", "").lower(), fields.get("ActionID", "")
        if action == "login":
            if fields.get("Secret") != self.secret:
                return f"Response: Error\r\nActionID: {action_id}\r\nMessage: Authentication failed\r\n\r\n"
            return f"Response: Success\r\nActionID: {action_id}\r\nMessage: Authentication accepted\r\n\r\n"
        if action == "originate":
            self.originates.append(fields)
            number = fields.get("Channel", "").split("/", 1)[-1].split("@", 1)[0]
            reason = self.reasons.get(number, "4")
            response = "Success" if reason == "4" else "Failure"
            return (
                f"Response: Success\r\nActionID: {action_id}\r\nMessage: Originate successfully queued\r\n\r\n"
                f"Event: OriginateResponse\r\nActionID: {action_id}\r\nResponse: {response}\r\n"
                f"Channel: {fields.get('Channel', '')}\r\nReason: {reason}\r\n"
                f"Uniqueid: {fields.get('ChannelId', '')}\r\n\r\n"
            )
        if action == "logoff":
            return f"Response: Goodbye\r\nActionID: {action_id}\r\nMessage: Thanks for all the fish.\r\n\r\n"
        return f"Response: Error\r\nActionID: {action_id}\r\nMessage: Invalid/unknown command\r\n\r\n"
