"""1,100 idle connections to the AudioSocket port of a service held to 256 descriptors (issue 10,
failure 2): new connections are refused before the descriptors run out, the live call still gets
its answer, and the log says so once instead of thousands of times.

The service runs in its own process (`testkit.serve_calls`) with RLIMIT_NOFILE lowered to 256
(soft and hard, so raising the soft limit at start cannot undo it); the SpeechKit and OpenAI
stand-ins and a real redis-server serve it over real sockets from outside.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testkit.fake_asterisk import FakeCallerPool
from testkit.standins.openai_server import OpenAIStandin
from testkit.standins.speechkit_server import SpeechKitStandin

ROOT = Path(__file__).resolve().parent.parent
FD_LIMIT = 256
IDLE_CONNECTIONS = 1100
LINE = "у нас квартира шестьдесят метров"  # moves the cleaning map from greeting to quote


def _lower_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


class Harness:
    """The service process: its JSON lines on stdout, its log lines on stderr."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out: list[dict[str, Any]] = []
        self.log: list[str] = []
        self._changed = asyncio.Event()
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(proc.stdout, self._on_out), name="harness-stdout"),
            asyncio.create_task(self._read(proc.stderr, self.log.append), name="harness-stderr"),
        ]

    def _on_out(self, line: str) -> None:
        self.out.append(json.loads(line))

    async def _read(self, stream: asyncio.StreamReader, sink: Callable[[str], None]) -> None:
        while line := await stream.readline():
            sink(line.decode(errors="replace").rstrip("\n"))
            self._changed.set()

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for obj in self.out:
                    if pred(obj):
                        return obj
                if self.proc.returncode is not None and all(t.done() for t in self._readers):
                    raise AssertionError("service exited early:\n" + "\n".join(self.log[-30:]))
                self._changed.clear()
                await self._changed.wait()

    async def close(self) -> None:
        if self.proc.returncode is None:
            try:
                async with asyncio.timeout(30):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)


async def _open_idle(port: int) -> asyncio.StreamWriter | None:
    """One idle connection; None if the connect did not complete within 5 s (backlog full)."""
    try:
        async with asyncio.timeout(5):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return writer
    except (TimeoutError, OSError):
        return None


async def test_idle_connections_beyond_the_fd_limit_leave_the_live_call_its_answer(
    speechkit_standin: SpeechKitStandin,
    openai_standin: OpenAIStandin,
    redis_url: str,
    make_speech: Callable[[str], bytes],
) -> None:
    call_id = uuid.uuid4()
    speechkit_standin.script.set_call(str(call_id), [LINE])
    speech = make_speech(LINE)
    sk = speechkit_standin.endpoint
    env = {
        **os.environ,
        "VOICEBRIDGE_DIALOGUE_MAP": str(ROOT / "dialogue_maps" / "cleaning_quote.ru.json"),
        "VOICEBRIDGE_REDIS__URL": redis_url,
        "VOICEBRIDGE_PROVIDERS__TTS": "yandex",
        "VOICEBRIDGE_YANDEX__STT_ENDPOINT": sk,
        "VOICEBRIDGE_YANDEX__TTS_ENDPOINT": sk,
        "VOICEBRIDGE_YANDEX__TLS": "false",
        "VOICEBRIDGE_OPENAI__BASE_URL": openai_standin.base_url,
        "VOICEBRIDGE_OPENAI__API_KEY": "test",
        "VOICEBRIDGE_OPENAI__MODERATION": "false",
        "VOICEBRIDGE_AUDIOSOCKET__BIND_PORT": "0",
        # Idle connections stay until the test closes them; only the descriptor budget limits them.
        "VOICEBRIDGE_AUDIOSOCKET__UUID_TIMEOUT_S": "120",
        "VOICEBRIDGE_AUDIOSOCKET__MAX_CONNECTIONS": "100000",
        "VOICEBRIDGE_AUDIOSOCKET__MAX_CONNECTIONS_PER_PEER": "100000",
        "VOICEBRIDGE_AUDIOSOCKET__MAX_ACCEPTS_PER_S": "100000",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "testkit.serve_calls",
        "--uuid",
        str(call_id),
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_lower_fd_limit,
    )
    harness = Harness(proc)
    idle: list[asyncio.StreamWriter | None] = []
    pool: FakeCallerPool | None = None
    try:
        ready = await harness.wait_for(lambda o: "ready" in o)
        assert ready["fd_limit"] == FD_LIMIT
        pool = FakeCallerPool("127.0.0.1", ready["ready"])
        caller = await pool.connect(call_id)
        await harness.wait_for(lambda o: o.get("event") == "listening")  # the greeting was said
        heard_before = caller.voice_count

        idle = list(await asyncio.gather(*(_open_idle(ready["ready"]) for _ in range(IDLE_CONNECTIONS))))

        caller.play(speech)
        await harness.wait_for(lambda o: o.get("event") == "state" and o["data"]["to_state"] == "quote")
        async with asyncio.timeout(30):  # half a second of the answer reached the caller
            await caller.wait_until(lambda c: c.voice_count >= heard_before + 25)
        pool.hangup(caller)
        ended = await harness.wait_for(lambda o: "ended" in o)
        for writer in idle:
            if writer is not None:
                writer.close()
        done = await harness.wait_for(lambda o: "done" in o)
    finally:
        for writer in idle:
            if writer is not None:
                writer.close()
        if pool is not None:
            await pool.close()
        await harness.close()

    log = harness.log
    refusal_lines = [line for line in log if "refused (" in line]
    print(f"FDTEST log lines {len(log)}, refusal warnings {len(refusal_lines)}, counters {done['done']}")
    assert ended["ended"] == "caller_hangup"
    assert not [line for line in log if "Traceback" in line or "Too many open files" in line]
    assert done["done"]["refused"].get("fd", 0) > 0  # refused, not left to fail later
    assert 1 <= len(refusal_lines) <= 3  # one per 10 s at most
    assert len(log) < 100
