"""The SpeechKit stand-in as a separate process, really killed (SIGKILL) and frozen (SIGSTOP)
mid-call, then restarted: the service notices within `[call] stt_stall_s` of the caller's
speech, the caller hears the emergency phrase, the call goes on when STT is back or ends with
"stt_failure", and the STT circuit makes new calls fail fast until it closes again.

Real sockets throughout: a fake Asterisk speaks espeak-ng Russian into the AudioSocket server,
the gateway's VAD, the real SpeechKit adapter over gRPC; TTS is espeak-ng (so killing SpeechKit
does not take the bot's voice with it). Times printed with `-s` are the README's measurements.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.app import VoicebridgeApp
from bridge.ari import AriCall
from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.settings import ProvidersSettings, Settings
from orchestrator.adapters.openai_settings import OpenAISettings
from orchestrator.adapters.speechkit import YandexSettings
from orchestrator.breaker import BreakerSettings
from orchestrator.call_settings import CallSettings
from orchestrator.orchestrator import CallEvent
from testkit.fake_asterisk import FakeAsterisk, FakeCallerPool
from testkit.ports import free_port
from testkit.standins.openai_server import OpenAIStandin

ROOT = Path(__file__).resolve().parent.parent
MAP = str(ROOT / "dialogue_maps" / "cleaning_quote.ru.json")
LINE = "а вы работаете по воскресеньям"
STALL_S = 2.0
RECOVERY_S = 12.0  # long enough for the stand-in to restart on a loaded 2-core machine


class StandinProcess:
    """`python -m testkit.standins.speechkit_server` on a fixed port: start, kill, stop, cont."""

    def __init__(self, port: int, script: Path) -> None:
        self.port = port
        self.script = script
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "testkit.standins.speechkit_server", "--port", str(self.port)]
            + ["--script", str(self.script)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "listening on ..." once it serves
        assert b"listening" in line, line

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandinProcess]:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"stt": {"default": [LINE] * 30}}), encoding="utf-8")
    proc = StandinProcess(free_port(), script)
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()


class Service:
    """The service's call path on real sockets (as `voicebridge serve` without Asterisk)."""

    def __init__(self, app: VoicebridgeApp, server: AudioSocketServer, pool: FakeCallerPool) -> None:
        self.app, self.server, self.pool = app, server, pool
        self.events: list[tuple[str, CallEvent, float]] = []
        self.listening: dict[str, asyncio.Queue[None]] = {}

    def observe(self, cid: str, event: CallEvent) -> None:
        self.events.append((cid, event, time.monotonic()))
        if event.kind == "listening":
            self.listening.setdefault(cid, asyncio.Queue()).put_nowait(None)

    async def call(self) -> tuple[str, FakeAsterisk, asyncio.Task[None]]:
        call_id = uuid.uuid4()
        connected = self.server.expect(call_id)
        caller = await self.pool.connect(call_id)
        conn = await asyncio.wait_for(connected, 5)
        cid = str(call_id)
        self.listening.setdefault(cid, asyncio.Queue())
        handler = asyncio.create_task(
            self.app.on_call(AriCall(cid, "test-channel", None, None, conn, asyncio.Event())),
            name=f"test-call-{cid}",
        )
        return cid, caller, handler

    def first(self, cid: str, kind: str, after: float = 0.0) -> float | None:
        for c, e, t in self.events:
            if c == cid and e.kind == kind and t >= after:
                return t
        return None

    async def wait_event(self, cid: str, kind: str, after: float, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while (t := self.first(cid, kind, after)) is None:
            assert time.monotonic() < deadline, f"no {kind} event within {timeout} s"
            await asyncio.sleep(0.02)
        return t


async def _until(predicate: Callable[[], bool], timeout: float) -> float:
    """Wait (polling, bounded) until `predicate()`; returns the monotonic time it held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
    return time.monotonic()


@pytest.fixture
async def service(
    standin: StandinProcess, openai_standin: OpenAIStandin, tmp_path: Path
) -> AsyncIterator[Service]:
    openai_standin.script.add("воскресень", "Да, работаем без выходных.")
    settings = Settings(
        dialogue_map=MAP,
        metrics_file=str(tmp_path / "turns.jsonl"),
        providers=ProvidersSettings(tts="espeak", intents="local"),
        yandex=YandexSettings(stt_endpoint=f"127.0.0.1:{standin.port}", tls=False, connect_timeout_s=2.0),
        openai=OpenAISettings(base_url=openai_standin.base_url, api_key="test", moderation=False),
        call=CallSettings(stt_stall_s=STALL_S, stt_recovery_s=RECOVERY_S),
        breaker=BreakerSettings(probe_every_s=0.5, probe_timeout_s=1.0),
    )
    svc: dict[str, Any] = {}
    app = VoicebridgeApp(settings, observer=lambda cid, e: svc["s"].observe(cid, e))
    app.services = await app.composition.build_services()
    app.pacer.start()
    server = AudioSocketServer(AudioSocketSettings(bind_port=0), pacer=app.pacer)
    await server.start()
    pool = FakeCallerPool("127.0.0.1", server.port)
    s = svc["s"] = Service(app, server, pool)
    try:
        yield s
    finally:
        await pool.close()
        await server.close()
        await app.close()


def _records(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "turns.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


async def test_stt_killed_mid_call_is_detected_and_the_call_goes_on_after_a_restart(
    service: Service, standin: StandinProcess, make_speech: Callable[[str], bytes], tmp_path: Path
) -> None:
    speech = make_speech(LINE)
    cid, caller, handler = await service.call()
    await asyncio.wait_for(service.listening[cid].get(), 30)  # greeting done
    standin.signal(signal.SIGKILL)
    standin.proc.wait(5)  # type: ignore[union-attr]
    spoke = time.monotonic()
    caller.play(speech + speech)  # the caller talks on (about 4 s), nobody answers
    failed = await service.wait_event(cid, "provider_failure", spoke, 15)
    detect_s = failed - spoke
    breaker = service.app.services.stt_breaker  # type: ignore[union-attr]
    assert breaker is not None and breaker.is_open
    restarted = time.monotonic()
    standin.start()
    closed = await _until(lambda: not breaker.is_open, 10)
    # The caller hears the emergency phrase; then the call goes on: the next line is answered.
    await asyncio.wait_for(service.listening[cid].get(), 30)
    heard_at = time.monotonic()
    caller.play(speech)
    said = await service.wait_event(cid, "user_said", heard_at, 20)
    print(
        f"\nSTT killed: detected {detect_s:.2f} s after the caller began talking; circuit closed "
        f"{closed - restarted:.2f} s after the restart; next line recognised {said - heard_at:.2f} s "
        "after the caller began it"
    )
    # Loose sanity bounds only (the figures above are the measurement): the stall bound plus VAD
    # onset and scheduling on a loaded machine; the circuit closes at the first probe after the
    # stand-in listens again (its own start is most of this).
    assert detect_s < STALL_S + 5
    assert closed - restarted < 10
    caller.hangup()
    await asyncio.wait_for(handler, 30)
    assert list(service.app.outcomes) == [(cid, "caller_hangup")]
    assert _records(tmp_path)[-1]["reason"] == "caller_hangup"


async def test_stt_frozen_mid_call_ends_the_call_and_new_calls_fail_fast_until_it_thaws(
    service: Service, standin: StandinProcess, make_speech: Callable[[str], bytes], tmp_path: Path
) -> None:
    speech = make_speech(LINE)
    cid, caller, handler = await service.call()
    await asyncio.wait_for(service.listening[cid].get(), 30)
    standin.signal(signal.SIGSTOP)
    spoke = time.monotonic()
    caller.play(speech + speech)
    failed = await service.wait_event(cid, "provider_failure", spoke, 15)
    voice_before = caller.voice_count
    await asyncio.wait_for(handler, RECOVERY_S + 15)
    ended = time.monotonic()
    assert caller.voice_count > voice_before  # the emergency phrase was heard
    assert list(service.app.outcomes) == [(cid, "stt_failure")]
    record = _records(tmp_path)[-1]
    assert record["event"] == "call_end" and record["reason"] == "stt_failure"
    assert "stt" in record["end_detail"]

    # A new call while STT is still frozen: the emergency phrase after one probe's wait.
    cid2, caller2, handler2 = await service.call()
    started2 = time.monotonic()
    await asyncio.wait_for(handler2, 20)
    second_s = time.monotonic() - started2
    assert service.app.outcomes[-1] == (cid2, "stt_failure")
    assert caller2.voice_count > 0 and service.first(cid2, "listening") is None

    thawed = time.monotonic()
    standin.signal(signal.SIGCONT)
    breaker = service.app.services.stt_breaker  # type: ignore[union-attr]
    assert breaker is not None
    closed = await _until(lambda: not breaker.is_open, 10)
    cid3, caller3, handler3 = await service.call()
    await asyncio.wait_for(service.listening[cid3].get(), 30)  # greeted normally again
    caller3.hangup()
    await asyncio.wait_for(handler3, 30)
    print(
        f"\nSTT frozen: detected {failed - spoke:.2f} s after the caller began talking; call ended "
        f"{ended - failed:.2f} s after that; a new call ended in {second_s:.2f} s (emergency phrase "
        f"included); circuit closed {closed - thawed:.2f} s after SIGCONT"
    )
    assert failed - spoke < STALL_S + 1.5
    assert closed - thawed < 1.5
