"""The service's log lines: the trace id from the context (tasks inherit it), JSON or text, the
redacting backstop, bounded length."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from bridge.logs import TRACE_ID, LogSettings, Redactor, configure_logging, public_url
from orchestrator.metrics import log_sink


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        yield
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def test_redactor_masks_secrets_and_credential_shapes() -> None:
    r = Redactor(["s3cret-value", "voicebridge", "abc", None])
    assert r("GET /ari/x?api_key=voicebridge:p4ss&app=vb") == "GET /ari/x?api_key=***&app=vb"
    assert r("redis://:hunter22@10.0.0.1:6379/0") == "redis://:***@10.0.0.1:6379/0"
    assert r("{'Authorization': 'Basic dm9pY2U6cGFzcw=='}") == "{'Authorization': 'Basic ***'}"
    assert r("headers Bearer eyJhbGciOiJIUzI1NiJ9.x.y") == "headers Bearer ***"
    assert r("Action: Login\r\nSecret: amisecret\r\n") == "Action: Login\r\nSecret: ***\r\n"
    assert r("the value s3cret-value leaked") == "the value *** leaked"
    # Public defaults and very short values are not masked by value (logger names stay readable).
    assert r("voicebridge.metrics abc") == "voicebridge.metrics abc"


def test_public_url_drops_user_info_and_query() -> None:
    assert public_url("http://u:p@h:8088/ari/?api_key=x") == "http://h:8088/ari/"


async def test_trace_id_reaches_lines_of_the_calls_tasks_and_json_fields(root_restored: None) -> None:
    buf = io.StringIO()
    configure_logging(LogSettings(format="json"), secrets=["topsecret-1"], level="DEBUG", stream=buf)
    lib = logging.getLogger("somelibrary.http")

    async def child() -> None:
        lib.debug("request with password=topsecret-1")

    async def call() -> None:
        TRACE_ID.set("call-42")
        await asyncio.create_task(child(), name="call-42:child")  # a task the call spawned
        log_sink({"event": "turn", "trace_id": "call-42", "stt_ms": 12.5})

    await asyncio.create_task(call())
    logging.getLogger("bridge.app").info("outside any call")
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [(x["logger"], x["trace_id"]) for x in lines] == [
        ("somelibrary.http", "call-42"),
        ("voicebridge.metrics", "call-42"),
        ("bridge.app", None),
    ]
    assert lines[0]["message"] == "request with password=***"
    assert lines[1]["message"] == "turn" and lines[1]["stt_ms"] == 12.5  # the record's fields
    assert all({"time", "level", "logger", "message"} <= x.keys() for x in lines)


def test_text_lines_carry_the_trace_id_and_are_bounded(root_restored: None) -> None:
    buf = io.StringIO()
    configure_logging(LogSettings(format="text", max_message_chars=200), stream=buf)
    token = TRACE_ID.set("c-7")
    try:
        logging.getLogger("bridge.x").warning("payload %s", "x" * 5000)
    finally:
        TRACE_ID.reset(token)
    line = buf.getvalue().strip()
    assert " WARNING bridge.x [c-7]: payload xxx" in line
    assert line.endswith("[4808 characters cut]") and len(line) < 400


def test_auto_format_is_text_on_a_terminal_json_otherwise() -> None:
    from bridge.logs import json_mode

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert not json_mode(LogSettings(), Tty())
    assert json_mode(LogSettings(), io.StringIO())
    assert not json_mode(LogSettings(format="text"), io.StringIO())
