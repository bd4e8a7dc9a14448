"""Scripted fakes for Orchestrator timeline tests (virtual time, no sockets).

Audio is labelled: every clip is PCM filled with one sample value, so each 20 ms frame the
recording sink sees says which clip it came from (0 = silence). A test reads the outbound
timeline as a list of (time, label) and asserts order, counts and cut points exactly.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.pacer import Pacer
from bridge.playout import Playout
from orchestrator.audio import FRAME_BYTES
from orchestrator.contracts import SttEvent, TtsStreamItem, VoiceListener
from orchestrator.domain.errors import LLMError, ProviderError, TTSConnectionError, TTSError
from orchestrator.domain.models import (
    AudioChunk,
    FaqAnswer,
    IntentResult,
    LLMStreamChunk,
    SessionState,
    SttResult,
)

FRAME_S = 0.02


def clip(label: int, seconds: float) -> AudioChunk:
    """`seconds` of audio whose every sample is `label` (a whole number of frames)."""
    frames = round(seconds / FRAME_S)
    return AudioChunk(label.to_bytes(2, "little", signed=True) * (FRAME_BYTES // 2) * frames)


class RecordingSink:
    """FrameSink that records (loop time, label) per frame."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, int]] = []

    def send_audio(self, frame: bytearray) -> None:
        self.frames.append(
            (asyncio.get_running_loop().time(), int.from_bytes(frame[:2], "little", signed=True))
        )

    def send_silence(self) -> None:
        self.frames.append((asyncio.get_running_loop().time(), 0))

    def segments(self) -> list[tuple[int, int]]:
        """Runs of consecutive non-silent frames with the same label: (label, frame count)."""
        out: list[tuple[int, int]] = []
        for _, label in self.frames:
            if label == 0:
                continue
            if out and out[-1][0] == label:
                out[-1] = (label, out[-1][1] + 1)
            else:
                out.append((label, 1))
        return out

    def labels(self) -> list[int]:
        """Distinct non-silent labels in order of first appearance, collapsing repeats."""
        return [label for label, _ in self.segments()]

    def audio_after(self, t: float) -> list[tuple[float, int]]:
        return [(ft, lab) for ft, lab in self.frames if ft > t and lab != 0]


class FakeInbound:
    """InboundAudio: no audio frames (the fake STT is scripted); hangs up on demand."""

    def __init__(self) -> None:
        self.listener: VoiceListener | None = None
        self._hangup = asyncio.Event()

    async def read_frame(self) -> bytes | None:
        await self._hangup.wait()
        return None

    def set_voice_listener(self, listener: VoiceListener | None) -> None:
        self.listener = listener

    def hang_up(self) -> None:
        self._hangup.set()


@dataclass
class Say:
    """The caller says `text` from `at` for `duration` s; STT final comes `stt_delay` after."""

    at: float
    text: str
    duration: float = 1.0
    stt_delay: float = 0.3
    partials: bool = True
    vad: bool = True  # whether the gateway's VAD reports the speech


@dataclass
class SttFailure:
    at: float
    error: ProviderError


class FakeSTT:
    """STTStreamer replaying a caller script on the loop clock."""

    def __init__(self, script: list[Say | SttFailure], inbound: FakeInbound) -> None:
        self.script = script
        self.inbound = inbound
        self.queue: asyncio.Queue[SttEvent] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.stopped = False

    def start_recognition(self, audio_queue: asyncio.Queue[bytes | None]) -> asyncio.Queue[SttEvent]:
        self.task = asyncio.create_task(self._play(), name="fake-stt")
        return self.queue

    async def _sleep_until(self, t: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, t - loop.time()))

    async def _play(self) -> None:
        loop = asyncio.get_running_loop()
        for step in self.script:
            await self._sleep_until(step.at)
            if isinstance(step, SttFailure):
                self.queue.put_nowait(step.error)
                continue
            if step.vad and self.inbound.listener is not None:
                self.inbound.listener.on_speech_start(loop.time())
            words = step.text.split()
            if step.partials and len(words) > 1:
                for i in range(1, len(words)):
                    await self._sleep_until(step.at + step.duration * i / len(words))
                    self.queue.put_nowait(
                        SttResult(" ".join(words[:i]), False, 0.5, "partial", received_at=loop.time())
                    )
            await self._sleep_until(step.at + step.duration)
            if step.vad and self.inbound.listener is not None:
                self.inbound.listener.on_speech_end(loop.time())
            await self._sleep_until(step.at + step.duration + step.stt_delay)
            self.queue.put_nowait(SttResult(step.text, True, 0.9, "final", received_at=loop.time()))

    async def stop_recognition(self) -> None:
        self.stopped = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task})


class FakeTTS:
    """TTSManager: text -> labelled audio after `latency` s; streaming mode per text piece."""

    def __init__(
        self,
        labels: dict[str, int],
        *,
        latency: float = 0.2,
        seconds_per_char: float = 0.02,
        fail_connect: bool = False,
        fail_synth: bool = False,
        fail_stream_open: bool = False,
        stream_label: int = 900,
    ) -> None:
        self.labels = labels
        self.latency = latency
        self.seconds_per_char = seconds_per_char
        self.fail_connect = fail_connect
        self.fail_synth = fail_synth
        self.fail_stream_open = fail_stream_open
        self.stream_label = stream_label
        self.synthesized: list[str] = []
        self.stream_text: list[str] = []
        self.aborted = 0
        self.closed = False
        self._stream_task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        if self.fail_connect:
            raise TTSConnectionError("cannot reach the TTS service", provider="fake-tts", retryable=True)

    def _audio(self, text: str, label: int) -> AudioChunk:
        return clip(label, max(FRAME_S, round(len(text) * self.seconds_per_char / FRAME_S) * FRAME_S))

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        self.synthesized.append(text)
        await asyncio.sleep(self.latency)
        if self.fail_synth:
            raise TTSError("synthesis failed", provider="fake-tts", retryable=True)
        yield self._audio(text, self.labels.get(text, 700))

    async def start_llm_stream(self) -> tuple[asyncio.Queue[str | None], asyncio.Queue[TtsStreamItem]]:
        if self.fail_stream_open:
            raise TTSConnectionError("stream refused", provider="fake-tts", retryable=True)
        text_q: asyncio.Queue[str | None] = asyncio.Queue()
        audio_q: asyncio.Queue[TtsStreamItem] = asyncio.Queue()
        self._stream_task = asyncio.create_task(self._stream(text_q, audio_q), name="fake-tts-stream")
        return text_q, audio_q

    async def _stream(self, text_q: asyncio.Queue[str | None], audio_q: asyncio.Queue[TtsStreamItem]) -> None:
        while (piece := await text_q.get()) is not None:
            self.stream_text.append(piece)
            await asyncio.sleep(self.latency)
            audio_q.put_nowait(self._audio(piece, self.stream_label))
        audio_q.put_nowait(None)

    async def abort_llm_stream(self) -> None:
        self.aborted += 1
        await self._stop_stream()

    async def _stop_stream(self) -> None:
        if self._stream_task is not None and not self._stream_task.done():
            self._stream_task.cancel()
            await asyncio.wait({self._stream_task})

    async def aclose(self) -> None:
        self.closed = True
        await self._stop_stream()


@dataclass
class LLMAttempt:
    """One scripted LLM answer: (delay before, chunk) pairs, or an error raised after `delay`."""

    chunks: list[tuple[float, LLMStreamChunk]] = field(default_factory=list)
    error_after: float | None = None


class FakeLLM:
    """LLMManager replaying scripted attempts."""

    model_name = "fake-llm"

    def __init__(self, attempts: list[LLMAttempt]) -> None:
        self.attempts = attempts
        self.calls: list[tuple[str, int]] = []
        self.aborts = 0
        self.shut = False

    async def process_user_turn(
        self, text: str, session: SessionState, *, attempt: int = 0
    ) -> AsyncIterator[LLMStreamChunk]:
        self.calls.append((text, attempt))
        script = self.attempts[min(len(self.calls) - 1, len(self.attempts) - 1)]
        for delay, chunk in script.chunks:
            await asyncio.sleep(delay)
            yield chunk
        if script.error_after is not None:
            await asyncio.sleep(script.error_after)
            raise LLMError("model unavailable", provider="fake-llm", retryable=True)

    async def abort_generation(self) -> None:
        self.aborts += 1

    async def shutdown(self) -> None:
        self.shut = True


class KeywordClassifier:
    """IntentClassifier by keywords (the vector classifier is tested on its own)."""

    def __init__(self, intents: dict[str, list[str]], faq: dict[str, list[str]]) -> None:
        self.intents = intents
        self.faq = faq
        self.calls: list[str] = []

    async def classify_intent(
        self, text: str, *, previous_leader: str | None = None
    ) -> tuple[IntentResult | None, str | None]:
        self.calls.append(text)
        low = text.lower()
        for intent_id, words in self.intents.items():
            if any(w in low for w in words):
                m = re.search(r"\d+", low)
                entities: dict[str, Any] = {"area": int(m.group())} if m else {}
                return IntentResult(intent_id, 0.9, entities, intent_id), intent_id
        return None, None

    async def find_faq_answer(self, text: str) -> FaqAnswer | None:
        low = text.lower()
        for faq_id, words in self.faq.items():
            if any(w in low for w in words):
                return FaqAnswer(faq_id, 0.8)
        return None


def make_playout() -> tuple[Pacer, Playout, RecordingSink]:
    sink = RecordingSink()
    pacer = Pacer()
    playout = Playout(sink)
    pacer.add(playout)
    return pacer, playout, sink


Observer = Callable[[Any], None]
