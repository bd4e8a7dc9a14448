"""The service as an operator watches it: one real run (`VoicebridgeApp.start()` with its admin
port, ARI and AMI that refuse our credentials, Redis behind a password, the SpeechKit and OpenAI
stand-ins) and a call through the AudioSocket server with a fake Asterisk on real sockets, logged
at DEBUG in JSON. Afterwards:
- `/metrics` counts the call and its turns' stages, `/readyz` names what is not ready;
- every JSON line has time, level, logger and message, and every line logged for the call carries
  its trace id, library lines included;
- no configured secret appears anywhere: the log, the turns file, the metrics; the turns file is
  0600; what the caller said is not logged at INFO.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bridge.admin import AdminSettings
from bridge.ami import AmiSettings
from bridge.app import VoicebridgeApp
from bridge.ari import AriCall, AriSettings
from bridge.audiosocket.server import AudioSocketSettings
from bridge.logs import LogSettings, configure_logging
from bridge.settings import ProvidersSettings, Settings
from orchestrator.adapters.openai_settings import OpenAISettings
from orchestrator.adapters.speechkit import YandexSettings
from orchestrator.cache.redis_settings import RedisSettings
from orchestrator.orchestrator import CallEvent
from testkit.fake_asterisk import FakeCallerPool
from testkit.ports import free_port
from testkit.standins.openai_server import OpenAIStandin
from testkit.standins.speechkit_server import SpeechKitStandin

MAP = str(Path(__file__).resolve().parent.parent / "dialogue_maps" / "cleaning_quote.ru.json")
SECRETS = {
    "ari": "ari-Pw-0451x",
    "ami": "ami-Secret-0452y",
    "api_key": "AQVN-fake-yandex-key-0453",
    "iam_token": "t1.fake-iam-token-0454",
    "openai": "sk-fake-openai-0455",
    "redis": "redis-Pw-0456z",
}
LINES = ["у нас квартира шестьдесят метров", "а вы работаете по воскресеньям"]


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(tmp_path), "--requirepass", SECRETS["redis"]]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):  # a blocking fixture: wait until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("redis-server exited") from None
                subprocess.run(["sleep", "0.05"], check=True)
        yield f"redis://:{SECRETS['redis']}@127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=5)


@pytest.fixture
async def refusing_ari() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """An HTTP server that answers 401 to everything, as ARI does to a wrong password."""
    hit = asyncio.Event()

    async def refuse(_request: web.Request) -> web.Response:
        hit.set()
        return web.Response(status=401, text="Authentication required")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/", hit
    finally:
        await runner.cleanup()


@pytest.fixture
async def refusing_ami() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """An AMI that reads the Login action (with its Secret) and refuses it."""
    logins = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        try:
            while block := await reader.readuntil(b"\r\n\r\n"):
                fields = dict(line.split(": ", 1) for line in block.decode().split("\r\n") if ": " in line)
                logins.set()
                reply = f"Response: Error\r\nActionID: {fields.get('ActionID', '')}\r\n"
                writer.write((reply + "Message: Authentication failed\r\n\r\n").encode())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], logins
    finally:
        server.close()
        await server.wait_closed()


class _Raw(logging.Handler):
    """Every record as its source wrote it, before the redacting backstop."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


RAW = _Raw()


@pytest.fixture
def captured_log() -> Iterator[Callable[[Settings], io.StringIO]]:
    """Configure the service's logging (JSON, DEBUG) into a buffer, and keep the raw records in
    `RAW`; restore the root logger after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buf = io.StringIO()
    RAW.lines.clear()

    def configure(settings: Settings) -> io.StringIO:
        configure_logging(settings.log, secrets=settings.secret_values(), level="DEBUG", stream=buf)
        root.addHandler(RAW)
        return buf

    try:
        yield configure
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


async def test_a_call_is_measured_traced_and_leaks_no_secret(
    speechkit_standin: SpeechKitStandin,
    openai_standin: OpenAIStandin,
    redis_with_password: str,
    refusing_ari: tuple[str, asyncio.Event],
    refusing_ami: tuple[int, asyncio.Event],
    captured_log: Callable[[Settings], io.StringIO],
    make_speech: Callable[[str], bytes],
    tmp_path: Path,
) -> None:
    call_id = str(uuid.uuid4())
    speechkit_standin.script.set_call(call_id, LINES)
    openai_standin.script.add("воскресень", "Да, мы работаем без выходных.")
    speech = [make_speech(line) for line in LINES]
    sk = speechkit_standin.endpoint
    ari_url, ari_hit = refusing_ari
    ami_port, ami_login = refusing_ami
    turns_file = tmp_path / "turns.jsonl"
    settings = Settings(
        dialogue_map=MAP,
        metrics_file=str(turns_file),
        redis=RedisSettings(url=redis_with_password),
        providers=ProvidersSettings(tts="yandex", intents="local"),
        yandex=YandexSettings(
            stt_endpoint=sk,
            tts_endpoint=sk,
            tls=False,
            api_key=SECRETS["api_key"],
            iam_token=SECRETS["iam_token"],
        ),
        openai=OpenAISettings(base_url=openai_standin.base_url, api_key=SECRETS["openai"], moderation=False),
        ari=AriSettings(url=ari_url, password=SECRETS["ari"], reconnect_min_s=0.2, timeout_s=2),
        ami=AmiSettings(port=ami_port, secret=SECRETS["ami"], login_timeout_s=2),
        audiosocket=AudioSocketSettings(bind_port=0),
        admin=AdminSettings(port=0),
        log=LogSettings(format="json"),
    )
    assert set(settings.secret_values()) == set(SECRETS.values())
    buf = captured_log(settings)
    listening = asyncio.Queue[None]()

    def observe(_cid: str, event: CallEvent) -> None:
        if event.kind == "listening":
            listening.put_nowait(None)

    app = VoicebridgeApp(settings, observer=observe)
    await app.start()
    assert app.audiosocket is not None and app.admin is not None
    pool = FakeCallerPool("127.0.0.1", app.audiosocket.port)
    base = f"http://127.0.0.1:{app.admin.port}"
    try:
        async with asyncio.timeout(20):
            await ari_hit.wait()
            await ami_login.wait()
        connected = app.audiosocket.expect(uuid.UUID(call_id))
        caller = await pool.connect(uuid.UUID(call_id))
        conn = await asyncio.wait_for(connected, 5)
        handler = asyncio.create_task(
            app.on_call(AriCall(call_id, "test-channel", "79990001122", "100", conn, asyncio.Event())),
            name="test-call",
        )
        for pcm in speech:
            await asyncio.wait_for(listening.get(), 60)
            caller.play(pcm)
        await asyncio.wait_for(listening.get(), 60)  # the LLM answer was spoken
        pool.hangup(caller)
        await asyncio.wait_for(handler, 30)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as r:
                metrics = await r.text()
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 503
                not_ready = (await r.json())["not_ready"]
            async with http.post(f"{base}/drain") as r:
                assert r.status == 202
            async with http.get(f"{base}/readyz") as r:
                drained = (await r.json())["not_ready"]
    finally:
        await pool.close()
        await app.close()

    # Metrics: the call in the totals, its turns in the stage histograms, its frames counted.
    assert 'voicebridge_calls_total{outcome="caller_hangup"} 1.0' in metrics
    for stage in ("stt", "logic", "llm_first_token", "tts_first_chunk", "response"):
        assert f'voicebridge_turn_stage_seconds_count{{stage="{stage}"}} ' in metrics, stage
        count = _value(metrics, f'voicebridge_turn_stage_seconds_count{{stage="{stage}"}}')
        assert count >= 1, stage
    assert _value(metrics, 'voicebridge_frames_total{direction="inbound",kind="audio"}') > 100
    assert _value(metrics, 'voicebridge_frames_total{direction="outbound",kind="audio"}') > 100
    assert _value(metrics, "voicebridge_fillers_played_total") >= 1
    assert _value(metrics, "voicebridge_calls_active") == 0
    # Readiness names what is missing: ARI refused us, AMI too; Redis answers; then draining.
    assert set(not_ready) == {"ari", "ami"}, not_ready
    assert set(drained) == {"ari", "ami", "draining"}

    text = buf.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    # The media path was warmed before the first call (bridge/media_warmup.py), once.
    assert sum(line["message"].startswith("media path warmed in ") for line in lines) == 1
    # The providers' connections were opened at start, not by the first call (bridge/providers.py).
    connected = [
        line["message"].split(": connected at start in")[0]
        for line in lines
        if ": connected at start in" in line["message"]
    ]
    assert sorted(connected) == sorted(
        [f"LLM {openai_standin.base_url}", f"SpeechKit {sk}", f"SpeechKit {sk}"]
    )
    ours = [line for line in lines if line.get("trace_id") == call_id]
    # Every line that speaks of the call was logged under its trace id ...
    about_call = [line for line in lines if call_id in line["message"]]
    assert about_call and all(line.get("trace_id") == call_id for line in about_call), [
        line for line in about_call if line.get("trace_id") != call_id
    ]
    # ... and so were the libraries' lines inside the call (HTTP to the LLM, gRPC, Redis).
    libraries = {line["logger"].split(".")[0] for line in ours} - {"bridge", "orchestrator", "voicebridge"}
    assert libraries, sorted({line["logger"] for line in ours})
    # The metrics records are structured lines: their fields are the line's own.
    turns = [line for line in ours if line["message"] == "turn"]
    assert turns and all("response_ms" in t and "t1_first_user_audio" in t for t in turns)
    assert any(line["message"] == "call_end" for line in ours)
    # What the caller said and the caller's number: never at INFO.
    info = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines if line["level"] != "DEBUG")
    assert "квартира" not in info and "79990001122" not in info
    assert "квартира" in text  # DEBUG has it (the level the operator opts into)

    # No secret anywhere: the log, the turns file, the metrics.
    everything = {
        "log": text,
        "log before redaction": "\n".join(RAW.lines),  # the sources themselves log none
        "turns file": turns_file.read_text(encoding="utf-8"),
        "metrics": metrics,
    }
    for where, content in everything.items():
        for name, secret in SECRETS.items():
            assert secret not in content, f"{name} secret in the {where}"
    assert "api_key=" not in text or "api_key=***" in text
    assert stat.S_IMODE(os.stat(turns_file).st_mode) == 0o600


def _value(metrics: str, series: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in /metrics")
