"""Issue 9's "done when" for observability, on the real Asterisk: after a real call, `/metrics`
shows it in the totals and the stage histograms, and every log line of that call carries its
trace id in JSON mode; and a wrong ARI password (Asterisk answers 401) is never logged, DEBUG
included."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.ari import AriController, AriSettings
from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.logs import LogSettings, configure_logging
from bridge.pacer import Pacer
from testkit.phone_call import run_phone_call

pytestmark = pytest.mark.asterisk

LINES = ["у нас квартира шестьдесят метров", "а вы работаете по воскресеньям", "нет спасибо"]
WRONG_PASSWORD = "ari-Wrong-Pw-0457q"


class _Raw(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.refused = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        text = logging.Formatter("%(name)s %(message)s").format(record)
        self.lines.append(text)
        if "HTTP 401" in text:
            self.refused.set()


@pytest.fixture
def json_log() -> Iterator[tuple[io.StringIO, _Raw]]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buf, raw = io.StringIO(), _Raw()
    configure_logging(LogSettings(format="json"), secrets=[WRONG_PASSWORD], level="DEBUG", stream=buf)
    root.addHandler(raw)
    try:
        yield buf, raw
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def _value(metrics: str, series: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in /metrics:\n{metrics}")


async def test_a_real_call_shows_in_metrics_and_its_log_lines_carry_its_trace_id(
    asterisk: str, tmp_path: Path, json_log: tuple[io.StringIO, _Raw]
) -> None:
    result = await run_phone_call(tmp_path, LINES)
    assert result.sipp.ok, result.sipp.describe()
    assert result.outcomes and result.outcomes[0][1] == "end_call"
    call_id = result.outcomes[0][0]
    metrics = result.prometheus
    assert _value(metrics, 'voicebridge_calls_total{outcome="end_call"}') == 1
    for stage in ("stt", "logic", "llm_first_token", "tts_first_chunk", "response"):
        assert _value(metrics, f'voicebridge_turn_stage_seconds_count{{stage="{stage}"}}') >= 1, stage
    assert _value(metrics, 'voicebridge_turns_total{route="llm"}') == 1
    assert _value(metrics, 'voicebridge_frames_total{direction="outbound",kind="audio"}') > 500

    lines = [json.loads(line) for line in json_log[0].getvalue().splitlines()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    # (AMI's own reader lines are the AMI connection's, not the call's: panoramisk logs each event
    # it parses, and a bridge event names the call's bridge.)
    about_call = [
        line for line in lines if call_id in line["message"] and line["logger"] != "panoramisk.manager"
    ]
    wrong = [line for line in about_call if line.get("trace_id") != call_id]
    assert about_call and not wrong, wrong
    ours = [line for line in lines if line.get("trace_id") == call_id]
    loggers = {line["logger"] for line in ours}
    # The ARI controller's lines, the app's, the turn records, and the libraries' (ARI HTTP, gRPC).
    assert {"bridge.ari.controller", "bridge.app", "voicebridge.metrics"} <= loggers, loggers
    assert any(not name.startswith(("bridge", "orchestrator", "voicebridge")) for name in loggers), loggers
    assert sum(1 for line in ours if line["message"] == "turn") == len(result.turns())


async def test_a_wrong_ari_password_is_not_logged(asterisk: str, json_log: tuple[io.StringIO, _Raw]) -> None:
    buf, raw = json_log
    pacer = Pacer()
    server = AudioSocketServer(AudioSocketSettings(bind_port=0), pacer=pacer)
    await server.start()

    async def no_calls(_call: object) -> None:
        raise AssertionError("no call expected")

    controller = AriController(AriSettings(password=WRONG_PASSWORD, reconnect_min_s=0.2), server, no_calls)
    task = asyncio.create_task(controller.run(), name="ari-controller-wrong-password")
    try:
        async with asyncio.timeout(15):
            await raw.refused.wait()  # Asterisk answered 401 and we said so
        await asyncio.sleep(0.5)  # a retry or two more: each logs (bounded by the test's wait)
    finally:
        await controller.close()
        async with asyncio.timeout(10):
            await task
        await server.close()
    everything = "\n".join(raw.lines)
    assert WRONG_PASSWORD not in everything, [line for line in raw.lines if WRONG_PASSWORD in line]
    assert "api_key=" not in everything
    assert WRONG_PASSWORD not in buf.getvalue()
