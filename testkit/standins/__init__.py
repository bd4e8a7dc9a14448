"""Stand-in servers for tests and the demo, NEVER the product.

They speak the real wire protocols (SpeechKit v3 gRPC on the real protos, the OpenAI HTTP API)
on 127.0.0.1 so the real adapters can be exercised end to end without cloud access. Their
behaviour is scripted; nothing here belongs in a production deployment.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import grpc


async def serve_until_signal(close: Callable[[], Awaitable[None]]) -> None:
    """Keep a stand-in started by its `python -m` entry point up until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await close()


async def start_grpc_server(
    register: Callable[[grpc.aio.Server], None], port: int, *, options: list[tuple[str, int]] | None = None
) -> tuple[grpc.aio.Server, int]:
    """A started insecure grpc.aio server on 127.0.0.1 with `register`'s servicers; and its port."""
    server = grpc.aio.server(options=options or [])
    register(server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    return server, int(bound)


class Progress:
    """`wait_for(predicate)` for tests: re-checked whenever the stand-in calls `_notify()`."""

    _tick: asyncio.Event  # set up by the stand-in's __init__

    def _notify(self) -> None:
        """Wake `wait_for` callers: something was received or a call ended."""
        self._tick.set()
        self._tick = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until `predicate()` holds (bounded by `timeout`)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._tick.wait()
