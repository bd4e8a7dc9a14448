"""A bug during a call: the caller hears the map's emergency phrase before the hang-up, never
silence; the failure is logged once with the call id; the call next to it goes on.

Real parts on real sockets: two `FakeAsterisk` callers speak over AudioSocket TCP into the real
server, gateway, VAD, playout, pacer and `VoicebridgeApp.on_call`; every cached phrase is a
labelled clip, so the caller's received frames say which phrase they belong to.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest

from bridge.app import VoicebridgeApp
from bridge.ari import AriCall
from bridge.audiosocket.protocol import Audio
from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.settings import Settings
from orchestrator.cache.memory import InMemoryAudioCache
from orchestrator.contracts import FlowEngine, IntentStep
from orchestrator.dialogue_map.loader import load_dialogue_map
from orchestrator.dialogue_map.templates import render_template
from orchestrator.domain.models import FlowResult, IntentResult, SessionState
from orchestrator.factory import CallServices
from orchestrator.flow_engine import MapFlowEngine
from orchestrator.orchestrator import CallEvent
from testkit.fake_asterisk import FakeAsterisk, FakeCallerPool
from testkit.fakes import FakeLLM, FakeTTS, KeywordClassifier, clip, label_of
from testkit.sip import tone_pcm
from testkit.voiced_stt import VoicedLineSTT

MAP = str(Path(__file__).resolve().parent.parent / "dialogue_maps" / "cleaning_quote.ru.json")


class MapConditionBug(FlowEngine):
    """The map's flow, except that in one call evaluating a transition raises (a bug)."""

    def __init__(self, inner: MapFlowEngine, broken_call: str) -> None:
        self.inner = inner
        self.broken_call = broken_call

    def process_event(self, session: SessionState, intent: IntentResult) -> FlowResult:
        if session.call_id == self.broken_call:
            raise ZeroDivisionError("division by zero in a map condition")
        return self.inner.process_event(session, intent)

    def has_transition(self, state_id: str, intent_id: str) -> bool:
        return self.inner.has_transition(state_id, intent_id)


def _labels(caller: FakeAsterisk) -> list[int]:
    return [label_of(r.message.pcm) for r in caller.received if type(r.message) is Audio]


# Where the unexpected exception comes from: a map condition (ZeroDivisionError), or the intent
# classifier reading a 5,000-digit number (ValueError: Python's int-string limit, issue 10 item 6;
# the testkit classifier parses digits with a bare `int()`, as an unguarded one would).
BUGS = {"flow": ZeroDivisionError, "classifier": ValueError}
HUGE_NUMBER = "нет " + "5" * 5000


@pytest.mark.parametrize("bug", list(BUGS))
async def test_a_bug_in_the_dialogue_is_heard_as_the_emergency_phrase_and_spares_the_other_call(
    caplog: pytest.LogCaptureFixture, bug: str
) -> None:
    dmap = load_dialogue_map(MAP)
    labels = {key: i + 1 for i, key in enumerate(dmap.audio)}
    cache = InMemoryAudioCache()
    for key, label in labels.items():
        await cache.put(key, clip(label, 0.3))
    emergency = labels[dmap.settings.emergency_filler_key]
    goodbye = labels["static:goodbye_refusal"]
    broken, healthy = str(uuid.uuid4()), str(uuid.uuid4())
    app = VoicebridgeApp(Settings(dialogue_map=MAP), observer=lambda cid, e: observe(cid, e))
    listening = {broken: asyncio.Event(), healthy: asyncio.Event()}

    def observe(cid: str, event: CallEvent) -> None:
        if event.kind == "listening":
            listening[cid].set()

    intent_step: IntentStep | None = None
    app.services = CallServices(
        dialogue_map=dmap,
        flow_engine=MapConditionBug(MapFlowEngine(dmap), broken) if bug == "flow" else MapFlowEngine(dmap),
        intent_classifier=KeywordClassifier({"refuse": ["нет"]}, {}),
        audio_cache=cache,
        clock=app.clock,
        render=render_template,
        stt_factory=lambda cid: VoicedLineSTT(
            [HUGE_NUMBER if bug == "classifier" and cid == broken else "нет, спасибо"]
        ),
        tts_factory=lambda _cid: FakeTTS(),
        llm_factory=lambda _cid: FakeLLM.canned("ответ"),
        intent_step=intent_step,
    )
    app.pacer.start()
    server = AudioSocketServer(AudioSocketSettings(bind_port=0), pacer=app.pacer)
    await server.start()
    pool = FakeCallerPool("127.0.0.1", server.port)
    handlers: dict[str, asyncio.Task[None]] = {}
    callers: dict[str, FakeAsterisk] = {}
    try:
        for cid in (broken, healthy):
            connected = server.expect(uuid.UUID(cid))
            callers[cid] = await pool.connect(uuid.UUID(cid))
            conn = await asyncio.wait_for(connected, 5)
            call = AriCall(cid, f"channel-{cid}", None, None, conn, asyncio.Event())
            handlers[cid] = asyncio.create_task(app.on_call(call), name=f"test-call-{cid}")
        for cid in (broken, healthy):
            await asyncio.wait_for(listening[cid].wait(), 10)  # the greeting is over
            callers[cid].play(tone_pcm(0.5))  # "нет, спасибо"
        await asyncio.wait_for(asyncio.gather(*handlers.values()), 20)
        for cid, label in ((broken, emergency), (healthy, goodbye)):
            async with asyncio.timeout(5):  # the last frames may still be on the wire
                await callers[cid].wait_until(lambda c, label=label: _labels(c).count(label) == 15)  # type: ignore[misc]
    finally:
        await pool.close()
        await server.close()
        await app.close()
    outcomes = dict(app.outcomes)
    assert outcomes == {broken: "error", healthy: "end_call"}
    # The broken call: the greeting, then the whole emergency phrase (0.3 s = 15 frames).
    heard = [label for label in dict.fromkeys(_labels(callers[broken])) if label]
    assert heard == [labels["static:greeting"], emergency]
    # The healthy call went on to its goodbye and never heard the emergency phrase.
    assert emergency not in _labels(callers[healthy])
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR and broken in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None, [r.getMessage() for r in logged]
    assert isinstance(logged[0].exc_info[1], BUGS[bug])
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and healthy in r.getMessage()]


async def test_a_bug_while_building_the_call_is_heard_as_the_emergency_phrase_too() -> None:
    # Outside the dialogue (here: a provider factory), the service apologises in its place.
    dmap = load_dialogue_map(MAP)
    cache = InMemoryAudioCache()
    await cache.put(dmap.settings.emergency_filler_key, clip(42, 0.2))

    def broken_factory(_cid: str) -> VoicedLineSTT:
        raise KeyError("a bug while building the call")

    app = VoicebridgeApp(Settings(dialogue_map=MAP))
    app.services = CallServices(
        dialogue_map=dmap,
        flow_engine=MapFlowEngine(dmap),
        intent_classifier=KeywordClassifier({}, {}),
        audio_cache=cache,
        clock=app.clock,
        render=render_template,
        stt_factory=broken_factory,
        tts_factory=lambda _cid: FakeTTS(),
        llm_factory=lambda _cid: FakeLLM.canned("ответ"),
    )
    app.pacer.start()
    server = AudioSocketServer(AudioSocketSettings(bind_port=0), pacer=app.pacer)
    await server.start()
    pool = FakeCallerPool("127.0.0.1", server.port)
    cid = str(uuid.uuid4())
    try:
        connected = server.expect(uuid.UUID(cid))
        caller = await pool.connect(uuid.UUID(cid))
        conn = await asyncio.wait_for(connected, 5)
        await asyncio.wait_for(app.on_call(AriCall(cid, "channel", None, None, conn, asyncio.Event())), 10)
        async with asyncio.timeout(5):
            await caller.wait_until(lambda c: _labels(c).count(42) == 10)
    finally:
        await pool.close()
        await server.close()
        await app.close()
    assert dict(app.outcomes) == {cid: "error"}
