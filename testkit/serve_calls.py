"""TEST INFRASTRUCTURE: the service's call path in a process of its own, without ARI.

`python -m testkit.serve_calls --uuid U [--uuid U ...]` builds `VoicebridgeApp`'s services from
the `VOICEBRIDGE_*` environment (like `voicebridge serve`, the open-file limit raised first),
listens for AudioSocket on `[audiosocket]`, serves each expected UUID's connection as a call with
`VoicebridgeApp.on_call` (what the ARI controller would hand over), and exits when every call
has ended. Tests run it with resource limits of its own (e.g. a lowered RLIMIT_NOFILE).

stdout carries one JSON object per line, for the test to wait on:
`{"ready": port}`, `{"call": id, "event": kind, "data": {...}}` per call event,
`{"call": id, "ended": reason}`, and `{"done": {counters}}` last. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import uuid

from bridge.app import VoicebridgeApp
from bridge.ari import AriCall
from bridge.audiosocket.server import AudioSocketServer
from bridge.fd_limit import fd_limit, raise_fd_limit
from bridge.settings import load_settings
from orchestrator.orchestrator import CallEvent


def _say(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


async def _serve(uuids: list[uuid.UUID]) -> None:
    settings = load_settings()
    raise_fd_limit()

    def observe(call_id: str, event: CallEvent) -> None:
        _say({"call": call_id, "event": str(event.kind), "data": dict(event.data)})

    app = VoicebridgeApp(settings, observer=observe)
    app.services = await app.composition.build_services()
    app.pacer.start()
    server = AudioSocketServer(settings.audiosocket, pacer=app.pacer)
    await server.start()

    async def one(u: uuid.UUID) -> None:
        conn = await server.expect(u)
        call = AriCall(str(u), f"channel-{u}", None, None, conn, asyncio.Event())
        await app.on_call(call)
        _say({"call": str(u), "ended": app.outcomes[-1][1]})

    try:
        _say({"ready": server.port, "fd_limit": fd_limit()})
        async with asyncio.TaskGroup() as group:
            for u in uuids:
                group.create_task(one(u), name=f"serve-calls:{u}")
    finally:
        counters = {
            name: getattr(server, name, None)
            for name in ("refused", "rejected", "throttled", "media_timeouts", "connections")
        }
        await server.close()
        await app.close()
        _say({"done": counters})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uuid", action="append", type=uuid.UUID, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(args.uuid))


if __name__ == "__main__":
    main()
