"""Text mode: run the real Orchestrator with typed caller utterances instead of a phone line.

For `voicebridge demo --text`, map authors trying a script, and the whole-call test. Only the
edges are stand-ins, named as such: `TextSTT` turns each utterance into one STT final when the
bot is listening, `TextTTS` and `silent_cache` produce silent audio as long as the words would
take to say, and `CannedLLM` answers off-script turns with one fixed reply. The Orchestrator,
FlowEngine, classifier, playback, fillers, pacing and metrics are the real ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from bridge.pacer import Pacer
from bridge.playout import FrameSink, Playout
from orchestrator.cache.memory import InMemoryAudioCache
from orchestrator.clock import LoopClock
from orchestrator.contracts import SttEvent, TtsStreamItem, VoiceListener
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.dialogue_map.templates import render_template
from orchestrator.domain.models import AudioChunk, LLMStreamChunk, SessionState, SttResult
from orchestrator.flow_engine import MapFlowEngine
from orchestrator.intents.classifier import VectorIntentClassifier
from orchestrator.intents.ngram import CharNgramEmbedder
from orchestrator.metrics import MetricsSink
from orchestrator.orchestrator import CallEvent, CallOutcome, CallServices, create_orchestrator_instance

SECONDS_PER_CHAR = 0.06  # about how long Russian speech takes per written character


def silence_for(text: str, seconds_per_char: float = SECONDS_PER_CHAR) -> AudioChunk:
    """Silent 8 kHz audio as long as `text` would take to say (whole 20 ms frames)."""
    frames = max(1, round(len(text) * seconds_per_char / 0.02))
    return AudioChunk(bytes(320 * frames))


def silent_cache(dialogue_map: DialogueMap, seconds_per_char: float = SECONDS_PER_CHAR) -> InMemoryAudioCache:
    """Every key of the map's `audio` section as silence of the right length."""
    return InMemoryAudioCache(
        {key: silence_for(text, seconds_per_char) for key, text in dialogue_map.audio.items()}
    )


class TextSTT:
    """STT stand-in: each utterance from `next_utterance()` becomes one final, when the bot listens."""

    def __init__(self, next_utterance: Callable[[], Awaitable[str | None]], listening: asyncio.Event) -> None:
        self._next = next_utterance
        self._listening = listening
        self._task: asyncio.Task[None] | None = None
        self.hung_up = asyncio.Event()

    def start_recognition(self, audio_queue: asyncio.Queue[bytes | None]) -> asyncio.Queue[SttEvent]:
        results: asyncio.Queue[SttEvent] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(results), name="text-stt")
        return results

    async def _run(self, results: asyncio.Queue[SttEvent]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._listening.wait()
            self._listening.clear()
            text = await self._next()
            if text is None:
                self.hung_up.set()
                return
            results.put_nowait(SttResult(text, True, 1.0, "final", received_at=loop.time()))

    async def stop_recognition(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task})


class TextTTS:
    """TTS stand-in: silence as long as the text; records what would have been said."""

    def __init__(self, seconds_per_char: float = SECONDS_PER_CHAR) -> None:
        self.said: list[str] = []
        self._spc = seconds_per_char
        self._stream: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        return None

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        self.said.append(text)
        yield silence_for(text, self._spc)

    async def start_llm_stream(self) -> tuple[asyncio.Queue[str | None], asyncio.Queue[TtsStreamItem]]:
        text_q: asyncio.Queue[str | None] = asyncio.Queue()
        audio_q: asyncio.Queue[TtsStreamItem] = asyncio.Queue()
        self._stream = asyncio.create_task(self._pump(text_q, audio_q), name="text-tts-stream")
        return text_q, audio_q

    async def _pump(self, text_q: asyncio.Queue[str | None], audio_q: asyncio.Queue[TtsStreamItem]) -> None:
        while (piece := await text_q.get()) is not None:
            audio_q.put_nowait(silence_for(piece, self._spc))
        audio_q.put_nowait(None)

    async def abort_llm_stream(self) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._stream is not None and not self._stream.done():
            self._stream.cancel()
            await asyncio.wait({self._stream})


class CannedLLM:
    """LLM stand-in: one fixed, safe reply to every off-script question."""

    model_name = "canned-text-mode"

    def __init__(self, reply: str = "Хороший вопрос, уточню у менеджера и перезвоню вам.") -> None:
        self.reply = reply
        self.questions: list[str] = []

    async def process_user_turn(
        self, text: str, session: SessionState, *, attempt: int = 0
    ) -> AsyncIterator[LLMStreamChunk]:
        self.questions.append(text)
        yield LLMStreamChunk(self.reply, is_safe=True, is_final=True, model=self.model_name)

    async def abort_generation(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


class _NullInbound:
    def __init__(self, hung_up: asyncio.Event) -> None:
        self._hung_up = hung_up

    async def read_frame(self) -> bytes | None:
        await self._hung_up.wait()
        return None

    def set_voice_listener(self, listener: VoiceListener | None) -> None:
        return None


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
    metrics: list[dict[str, object]] = field(default_factory=list)


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
    stt = TextSTT(next_utterance, listening)
    tts = TextTTS(seconds_per_char)
    result = TextCall(outcome=CallOutcome("error", 0))

    def observe(event: CallEvent) -> None:
        result.events.append(event)
        if event.kind == "listening":
            listening.set()
        if on_event is not None:
            on_event(event)

    def record(rec: dict[str, object]) -> None:
        result.metrics.append(rec)
        if metrics_sink is not None:
            metrics_sink(rec)

    services = CallServices(
        dialogue_map=dialogue_map,
        flow_engine=MapFlowEngine(dialogue_map),
        intent_classifier=classifier,
        audio_cache=silent_cache(dialogue_map, seconds_per_char),
        clock=LoopClock(),
        render=render_template,
        stt_factory=lambda _cid: stt,
        tts_factory=lambda _cid: tts,
        llm_factory=lambda _cid: CannedLLM(),
        metrics_sink=record,
    )
    pacer = Pacer()
    playout = Playout(sink or _NullSink())
    pacer.add(playout)
    pacer.start()
    try:
        orchestrator = await create_orchestrator_instance(call_id, services, observer=observe)
        result.outcome = await orchestrator.run(_NullInbound(stt.hung_up), playout)
    finally:
        pacer.stop()
        playout.close()
    result.said = tts.said
    return result
