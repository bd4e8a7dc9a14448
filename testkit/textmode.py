"""Text mode: run the real Orchestrator with typed caller utterances instead of a phone line.

For `voicebridge demo --text`, map authors trying a script, the whole-call test and the dialogue
bench. Only the edges are stand-ins, the shared fakes of `testkit.fakes`: each time the bot
listens, the next utterance is said on the `FakeInbound` (a short burst of labelled audio pushed
through the recognizer's real buffer, no VAD) and the `FakeSTT` turns it into one final;
`FakeTTS` and `silent_cache` produce silent audio as long as the words would take to say, and a
canned `FakeLLM` answers off-script turns with one fixed reply. An utterance "keys: 89161234567#"
presses those keys (DTMF) instead of speaking, one per 100 ms. The Orchestrator, FlowEngine,
classifier, playback, fillers, pacing and metrics are the real ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bridge.pacer import Pacer
from bridge.playout import FrameSink, Playout
from orchestrator.cache.memory import InMemoryAudioCache
from orchestrator.clock import LoopClock
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.dialogue_map.templates import render_template
from orchestrator.domain.models import AudioChunk
from orchestrator.events import CallEvent, CallEventKind, CallOutcome
from orchestrator.factory import CallServices, create_orchestrator_instance
from orchestrator.flow_engine import MapFlowEngine
from orchestrator.intents.classifier import VectorIntentClassifier
from orchestrator.intents.ngram import CharNgramEmbedder
from orchestrator.metrics import MetricsRecord, MetricsSink
from orchestrator.orchestrator import Orchestrator
from orchestrator.tasks import TaskOwner
from testkit.fakes import FakeInbound, FakeLLM, FakeSTT, FakeTTS, Say

SECONDS_PER_CHAR = 0.06  # about how long Russian speech takes per written character
CANNED_REPLY = "Хороший вопрос, уточню у менеджера и перезвоню вам."
UTTERANCE_S = 0.1  # how long each typed utterance is "said" on the line (5 frames)
KEYS_PREFIX = "keys:"  # "keys: 123#": DTMF keys instead of words
KEY_GAP_S = 0.1  # between two keys of one "keys:" utterance


def silence_for(text: str, seconds_per_char: float = SECONDS_PER_CHAR) -> AudioChunk:
    """Silent 8 kHz audio as long as `text` would take to say (whole 20 ms frames)."""
    frames = max(1, round(len(text) * seconds_per_char / 0.02))
    return AudioChunk(bytes(320 * frames))


def silent_cache(dialogue_map: DialogueMap, seconds_per_char: float = SECONDS_PER_CHAR) -> InMemoryAudioCache:
    """Every key of the map's `audio` section as silence of the right length."""
    return InMemoryAudioCache(
        {key: silence_for(text, seconds_per_char) for key, text in dialogue_map.audio.items()}
    )


class _NullSink:
    def send_audio(self, frame: bytearray) -> None:
        return None

    def send_silence(self) -> None:
        return None


@dataclass
class TextCall:
    """What a text-mode call produced."""

    outcome: CallOutcome
    events: list[CallEvent] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    metrics: list[MetricsRecord] = field(default_factory=list)


async def run_text_call(
    dialogue_map: DialogueMap,
    next_utterance: Callable[[], Awaitable[str | None]],
    *,
    on_event: Callable[[CallEvent], None] | None = None,
    metrics_sink: MetricsSink | None = None,
    sink: FrameSink | None = None,
    call_id: str = "text-call",
    seconds_per_char: float = SECONDS_PER_CHAR,
) -> TextCall:
    """Run one call: `next_utterance()` is awaited each time the bot listens (None hangs up)."""
    classifier = VectorIntentClassifier(dialogue_map, CharNgramEmbedder())
    await classifier.setup()
    listening = asyncio.Event()
    inbound = FakeInbound()
    stt = FakeSTT(inbound)
    tts = FakeTTS(latency=0.0, seconds_per_char=seconds_per_char, default_label=0, stream_label=0)
    result = TextCall(outcome=CallOutcome("error", 0))
    started: asyncio.Future[Orchestrator] = asyncio.get_running_loop().create_future()

    def observe(event: CallEvent) -> None:
        result.events.append(event)
        if event.kind is CallEventKind.LISTENING:
            listening.set()
        if on_event is not None:
            on_event(event)

    def record(rec: MetricsRecord) -> None:
        result.metrics.append(rec)
        if metrics_sink is not None:
            metrics_sink(rec)

    async def caller() -> None:
        """Each time the bot listens, say the next utterance; hang up after the last one."""
        loop = asyncio.get_running_loop()
        while True:
            await listening.wait()
            listening.clear()
            text = await next_utterance()
            if text is None:
                inbound.hang_up()
                return
            if text.lower().startswith(KEYS_PREFIX):
                orchestrator = await started
                for key in text[len(KEYS_PREFIX) :].strip():
                    orchestrator.on_dtmf(key, loop.time())
                    await asyncio.sleep(KEY_GAP_S)
                continue
            inbound.say(
                Say(loop.time(), text, duration=UTTERANCE_S, stt_delay=0.0, partials=False, vad=False)
            )

    services = CallServices(
        dialogue_map=dialogue_map,
        flow_engine=MapFlowEngine(dialogue_map),
        intent_classifier=classifier,
        audio_cache=silent_cache(dialogue_map, seconds_per_char),
        clock=LoopClock(),
        render=render_template,
        stt_factory=lambda _cid: stt,
        tts_factory=lambda _cid: tts,
        llm_factory=lambda _cid: FakeLLM.canned(CANNED_REPLY),
        metrics_sink=record,
    )
    pacer = Pacer()
    playout = Playout(sink or _NullSink())
    pacer.add(playout)
    pacer.add(inbound)
    pacer.start()
    tasks = TaskOwner(call_id)
    tasks.spawn(caller(), "text-caller")
    try:
        orchestrator = await create_orchestrator_instance(call_id, services, observer=observe)
        started.set_result(orchestrator)
        result.outcome = await orchestrator.run(inbound, playout)
    finally:
        await tasks.aclose()
        pacer.stop()
        playout.close()
    result.said = tts.synthesized
    return result
