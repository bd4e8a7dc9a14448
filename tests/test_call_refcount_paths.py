"""Off the plain hang-up too, a finished call is freed by reference counting and nothing calls back
into its Orchestrator once it is gone.

The Orchestrator's parts reach it only weakly (orchestrator/weak.py): a callback that fired after
it was freed would raise ReferenceError (or, swallowed, drop a hang-up, a metrics record, a
transfer). tests/test_call_refcount_teardown.py checks a plain call; here each call takes another
path through the real service (FakeAri, AudioSocket, the stand-ins): the caller barging in, STT
failing for good, the STT stalling, the LLM failing, the TTS failing (a scripted answer's
synthesis, the LLM answer's stream), a DTMF transfer, a drain. With the collector off for the
call, each must end with its outcome and its `call_end` record, log no ReferenceError, free its
Orchestrator without a collection and leave nothing of ours to the collector (what `[gc]
freeze_calls` could freeze for good).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable

import grpc
import pytest

from bridge.app import VoicebridgeApp
from orchestrator.call_settings import CallSettings
from orchestrator.orchestrator import Orchestrator
from testkit.ari_service import call_until_greeting, running_service_and_standins, talk_and_hang_up
from testkit.fake_ari import FakeAri, Operator
from testkit.fake_asterisk import FakeAsterisk
from testkit.sip import espeak_pcm
from testkit.standins.launch import DEMO_CALLER_LINES
from testkit.standins.openai_server import OpenAIStandin
from testkit.standins.speechkit_server import SpeechKitStandin
from tests.test_call_refcount_teardown import _collected

T = 30.0  # bound on any one wait (s)
OPERATOR = "Local/operator@voicebridge-operators"  # the map's transfer_operator target


@dataclasses.dataclass
class _Call:
    app: VoicebridgeApp
    fake: FakeAri
    speechkit: SpeechKitStandin
    openai: OpenAIStandin
    channel: str
    leg: FakeAsterisk


async def _speak_and_hear_answer(c: _Call, line: bytes) -> None:
    heard = c.leg.voice_count
    c.leg.play(line)
    async with asyncio.timeout(T):
        await c.leg.wait_until(lambda a: a.audio_queued == 0)
        await c.leg.wait_until(lambda a: a.voice_count > heard + 10)


async def _barge_in(c: _Call) -> None:
    # Over the greeting (interruptible): the content words cut it.
    await _speak_and_hear_answer(c, espeak_pcm(DEMO_CALLER_LINES[0]))
    await c.fake.hangup_caller(c.channel)


async def _llm_fails(c: _Call) -> None:
    await _speak_and_hear_answer(c, espeak_pcm(DEMO_CALLER_LINES[0]))  # the stand-in's first line
    c.openai.inject("http500", 10)
    await _speak_and_hear_answer(c, espeak_pcm(DEMO_CALLER_LINES[1]))  # off-script: the LLM's
    await c.fake.hangup_caller(c.channel)


async def _llm_answer_tts_fails(c: _Call) -> None:
    await _speak_and_hear_answer(c, espeak_pcm(DEMO_CALLER_LINES[0]))  # the stand-in's first line
    c.speechkit.fail_next_tts(10)  # the LLM's answer is synthesised as a stream: that fails
    await _speak_and_hear_answer(c, espeak_pcm(DEMO_CALLER_LINES[1]))
    await c.fake.hangup_caller(c.channel)


async def _tts_fails(c: _Call) -> None:
    c.speechkit.fail_next_tts(10)  # the quote's synthesis: the error playlist instead
    await _speak_and_hear_answer(c, espeak_pcm(DEMO_CALLER_LINES[0]))
    await c.fake.hangup_caller(c.channel)


async def _stt_stalls(c: _Call) -> None:
    c.leg.play(espeak_pcm(DEMO_CALLER_LINES[0]))  # taken, never heard: the watchdog's stall
    async with asyncio.timeout(T):
        await c.leg.wait_until(lambda a: a.audio_queued == 0)
    await c.fake.hangup_caller(c.channel)


async def _dtmf_transfer(c: _Call) -> None:
    c.leg.send_dtmf("0")  # global_dtmf: operator -> transfer_operator


async def _drain(c: _Call) -> None:
    c.app.begin_drain()  # [call] drain_timeout_s later: the goodbye, "drain_timeout"


async def _idle(c: _Call) -> None:
    """Nothing: the call ends on its own (STT given up)."""


Before = Callable[[SpeechKitStandin, OpenAIStandin, FakeAri], None]


def _nothing(speechkit: SpeechKitStandin, openai: OpenAIStandin, fake: FakeAri) -> None:
    pass


def _stt_down(speechkit: SpeechKitStandin, openai: OpenAIStandin, fake: FakeAri) -> None:
    speechkit.fail_next_streams(100, grpc.StatusCode.UNAVAILABLE)


def _stt_stall(speechkit: SpeechKitStandin, openai: OpenAIStandin, fake: FakeAri) -> None:
    speechkit.fail_next_streams(1, grpc.StatusCode.UNAVAILABLE, after_ms=200, unheard_ms=None)


def _operator(speechkit: SpeechKitStandin, openai: OpenAIStandin, fake: FakeAri) -> None:
    fake.operators[OPERATOR] = Operator(answer_after_s=0.05)


class _Lines(logging.Handler):
    """What was logged, as text and metrics records only: a kept LogRecord would keep its args and
    exc_info (a provider failure and its traceback's frames, so the Orchestrator) alive."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[int, str]] = []
        self.call_ends: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info is not None:
            text += f" {record.exc_info[1]!r}"
        self.lines.append((record.levelno, text))
        metrics = getattr(record, "metrics", None)
        if isinstance(metrics, dict) and metrics.get("event") == "call_end":
            self.call_ends.append(dict(metrics))


# path: (faults set before the call, what the caller does once the greeting began, `[call]`,
# the outcome, a log line's text that shows the path was taken)
PATHS: dict[str, tuple[Before, Callable[[_Call], Awaitable[None]], CallSettings, str, str]] = {
    "barge_in": (_nothing, _barge_in, CallSettings(), "caller_hangup", '"interrupted": true'),
    "llm_fails": (_nothing, _llm_fails, CallSettings(), "caller_hangup", "playback failure: openai"),
    "llm_answer_tts_fails": (
        _nothing,
        _llm_answer_tts_fails,
        CallSettings(),
        "caller_hangup",
        "playback failure: yandex-tts: StreamSynthesis",
    ),
    "tts_fails": (_nothing, _tts_fails, CallSettings(), "caller_hangup", "TTS (yandex) circuit open"),
    "stt_stalls": (_stt_stall, _stt_stalls, CallSettings(stt_stall_s=0.5), "caller_hangup", "STT stalled"),
    "stt_gives_up": (_stt_down, _idle, CallSettings(), "stt_failure", "giving up after"),
    "dtmf_transfer": (_operator, _dtmf_transfer, CallSettings(), "transferred", ""),
    "drain": (_nothing, _drain, CallSettings(drain_timeout_s=0.5), "drain_timeout", "draining"),
}


@pytest.mark.parametrize("path", list(PATHS))
async def test_a_call_off_the_plain_path_is_freed_and_never_calls_back_into_a_gone_orchestrator(
    fake_ari: FakeAri, path: str
) -> None:
    before, drive, call_settings, outcome, shown_by = PATHS[path]
    logs = _Lines()
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    # Only `logs`: pytest's own capture keeps the records (and so a logged provider failure's
    # traceback, its frames, the Orchestrator) until the test ends.
    root.handlers[:] = [logs]
    root.setLevel(logging.INFO)
    line = espeak_pcm(DEMO_CALLER_LINES[0])
    try:
        async with running_service_and_standins(fake_ari, call_settings) as (app, speechkit, openai):
            await talk_and_hang_up(app, fake_ari, line, timeout_s=T)  # lazy caches built
            assert app.ari is not None and app.audiosocket is not None
            before(speechkit, openai, fake_ari)
            gc.collect()
            gc.disable()
            try:
                ended, logged = len(app.outcomes), len(logs.lines)
                channel, leg = await call_until_greeting(fake_ari, T)
                (orchestrator,) = app.drain.orchestrators
                gone: weakref.ref[Orchestrator] = weakref.ref(orchestrator)
                call_id = orchestrator.call_id
                del orchestrator
                await drive(_Call(app, fake_ari, speechkit, openai, channel, leg))
                async with asyncio.timeout(T):
                    while len(app.outcomes) == ended:  # noqa: ASYNC110 - a deque, no event to wait on
                        await asyncio.sleep(0.02)
                    await app.ari.idle.wait()
                    while app.audiosocket._protocols:  # noqa: ASYNC110 - connection_lost a loop turn after EOF
                        await asyncio.sleep(0.01)
                for _ in range(3):  # done callbacks (keep_alive's) run a loop turn after their task
                    await asyncio.sleep(0)
                assert app.outcomes[-1] == (call_id, outcome)
                assert [(r["trace_id"], r["reason"]) for r in logs.call_ends][-1] == (call_id, outcome)
                lines = logs.lines[logged:]
                assert any(shown_by in text for _, text in lines), f"not taken: {shown_by!r}"
                ours = [
                    text for level_no, text in lines if level_no >= logging.ERROR and "standin" not in text
                ]
                assert not [text for _, text in lines if "ReferenceError" in text]
                assert ours == []
                assert gone() is None, "the Orchestrator outlived its call with the collector off"
                assert Counter(_collected(app.audiosocket.port)) == Counter()
            finally:
                gc.enable()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
