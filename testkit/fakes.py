"""One set of fakes for the Orchestrator's providers, following `orchestrator.contracts`.

Shared by the timeline tests, text mode (`testkit.textmode`: the demo and the dialogue bench).

Audio is labelled: every clip is PCM filled with one sample value, so each 20 ms frame says which
clip it came from (0 = silence). Outbound, the recording sink reads the timeline as (time, label).
Inbound, `FakeInbound` is the gateway: a `Pacer` member that pushes one 20 ms frame per tick into
the attached recognizer (the caller's line `i` as label `i + 1`, silence between), and reports
voice activity for lines with `vad=True`. `FakeRecognition` is a `RecognitionStream` around the
real `AudioBuffer`: it consumes the frames it is pushed in batches, as the SpeechKit adapter
does (`chunk_ms`, 100 ms by default), and recognises a line once it has heard its audio
(partials while it is spoken, the final `stt_delay` after its end, on the line's own
timestamps); a recognizer that falls behind (`stall`) drops frames in the one drop counter.
Per frame the fakes cost one `AudioBuffer.push` and one label comparison. `BenchRecognizer` is
the same input side without any recognition, for the bridge-side benchmarks.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.pacer import Pacer
from bridge.playout import Playout
from orchestrator.adapters.speechkit import YandexSettings
from orchestrator.audio import FRAME_BYTES, FRAME_MS, FRAME_S, SILENCE_FRAME, AudioBuffer
from orchestrator.contracts import AudioSink, SttEvent, VoiceListener
from orchestrator.domain.errors import LLMError, ProviderError, TTSConnectionError, TTSError
from orchestrator.domain.models import (
    AudioChunk,
    FaqAnswer,
    IntentResult,
    LLMStreamChunk,
    SessionState,
    SttResult,
)
from orchestrator.events import EndReason
from orchestrator.tasks import TaskOwner

__all__ = [
    "FRAME_S",
    "BenchRecognizer",
    "FakeInbound",
    "FakeLLM",
    "FakeRecognition",
    "FakeSTT",
    "FakeSynthesis",
    "FakeTTS",
    "KeywordClassifier",
    "LLMAttempt",
    "RecordingSink",
    "Say",
    "SttFailure",
    "clip",
    "make_playout",
]

_HALF_FRAME_S = FRAME_S / 2


def label_of(frame: bytes | bytearray) -> int:
    """The label of a labelled frame (its first sample)."""
    return int.from_bytes(frame[:2], "little", signed=True)


def clip(label: int, seconds: float) -> AudioChunk:
    """`seconds` of audio whose every sample is `label` (a whole number of frames)."""
    frames = round(seconds / FRAME_S)
    return AudioChunk(label.to_bytes(2, "little", signed=True) * (FRAME_BYTES // 2) * frames)


class RecordingSink:
    """`FrameSink` that records (loop time, label) per outbound frame."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, int]] = []

    def send_audio(self, frame: bytearray) -> None:
        self.frames.append((asyncio.get_running_loop().time(), label_of(frame)))

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


def make_playout() -> tuple[Pacer, Playout, RecordingSink]:
    """A pacer driving one playout into a recording sink (start the pacer on the running loop)."""
    sink = RecordingSink()
    pacer = Pacer()
    playout = Playout(sink)
    pacer.add(playout)
    return pacer, playout, sink


# --------------------------------------------------------------------------- the caller


@dataclass
class Say:
    """The caller says `text` from `at` for `duration` s; STT final comes `stt_delay` after."""

    at: float
    text: str
    duration: float = 1.0
    stt_delay: float = 0.3
    partials: bool = True
    vad: bool = True  # whether the gateway's VAD reports the speech
    # Two-stage barge-in: the VAD announces the run at `at` (SPEECH_ONSET); SPEECH_START then
    # follows `start_delay` later if `vad`, else SPEECH_REJECTED at `at` + `duration`.
    onset: bool = False
    start_delay: float = 0.0


@dataclass
class SttFailure:
    """The recognizer reports `error` in-band at `at` (a non-retryable one ends its results)."""

    at: float
    error: ProviderError


class FakeInbound:
    """`InboundAudio`: the caller's side of a call, as the gateway would present it.

    Register it with the pacer that drives the playout (`pacer.add(inbound)`): each tick pushes
    one frame into the attached sink, labelled while a line is being said (`at` <= t < `at` +
    `duration`, to the nearest tick). VAD edges of `vad=True` lines are delivered at their exact
    times. `say()` adds a line later (text mode); `hang_up()` ends the leg.
    """

    def __init__(self, lines: Sequence[Say] = ()) -> None:
        self.lines: list[Say] = sorted(lines, key=lambda line: line.at)
        self.listener: VoiceListener | None = None
        self.audio: AudioSink | None = None
        self.frames_pushed = 0
        self.listener_errors: list[BaseException] = []
        self._frames = [SILENCE_FRAME]  # by label; label i + 1 is line i
        self._next = 0  # first line that may still be speaking or to come
        self._voiced = 0  # lines [0, _voiced) have had at least one frame
        self._hangup = asyncio.Event()
        self._vad_handles: list[asyncio.TimerHandle] = []

    # --- InboundAudio ---
    def attach(self, listener: VoiceListener | None, audio: AudioSink | None) -> None:
        self.listener, self.audio = listener, audio
        for handle in self._vad_handles:
            handle.cancel()
        self._vad_handles.clear()
        if listener is not None and not self.hung_up:
            for line in self.lines:
                self._schedule_vad(line)

    @property
    def hung_up(self) -> bool:
        return self._hangup.is_set()

    async def wait_hangup(self) -> None:
        await self._hangup.wait()

    @property
    def hangup_reason(self) -> EndReason:
        return "caller_hangup"

    # --- the script ---
    def say(self, line: Say) -> None:
        """Add a line (its `at` not before the lines already said)."""
        self.lines.append(line)
        if self.listener is not None:
            self._schedule_vad(line)

    def hang_up(self) -> None:
        """The caller hangs up: no more frames or voice activity."""
        self._hangup.set()
        self.attach(None, None)

    # --- Pacer member ---
    def tick(self) -> None:
        """Push this tick's frame into the attached sink."""
        audio = self.audio
        if audio is None:
            return
        now = asyncio.get_running_loop().time() + _HALF_FRAME_S
        lines, i = self.lines, self._next
        # A line whose ticks a stalled loop skipped is still said, late, rather than lost.
        while i < len(lines) and i < self._voiced and lines[i].at + lines[i].duration <= now:
            i += 1
        self._next = i
        label = 0
        if i < len(lines) and lines[i].at <= now:
            label = i + 1
            self._voiced = max(self._voiced, label)
        self.frames_pushed += 1
        audio.push_audio(self._frame(label))

    def _frame(self, label: int) -> bytes:
        frames = self._frames
        while len(frames) <= label:
            frames.append(len(frames).to_bytes(2, "little", signed=True) * (FRAME_BYTES // 2))
        return frames[label]

    def _schedule_vad(self, line: Say) -> None:
        loop = asyncio.get_running_loop()
        end = line.at + line.duration
        handles = self._vad_handles
        if line.onset:
            handles.append(loop.call_at(line.at, self._vad_soon, "onset", line.at))
            if not line.vad:
                handles.append(loop.call_at(end, self._vad_soon, "rejected", line.at))
        if not line.vad:
            return
        handles.append(loop.call_at(line.at + line.start_delay, self._vad_soon, "start", line.at))
        handles.append(loop.call_at(end, self._vad_soon, "end", end))

    def _vad_soon(self, kind: str, at: float) -> None:
        # After the frame tick due at the same instant, as the gateway reports voice activity
        # after the frame that confirmed it.
        asyncio.get_running_loop().call_soon(self._vad, kind, at)

    def _vad(self, kind: str, at: float) -> None:
        listener = self.listener
        if listener is None:
            return
        try:
            if kind == "start":
                listener.on_speech_start(at)
            elif kind == "end":
                listener.on_speech_end(at)
            elif kind == "onset":
                listener.on_speech_onset(at)
            else:
                listener.on_speech_rejected(at)
        except Exception as exc:  # as the gateway does: log and go on; tests check the list
            self.listener_errors.append(exc)


# --------------------------------------------------------------------------- STT


class FakeRecognition:
    """`RecognitionStream` over the real `AudioBuffer`; recognises the lines whose audio it hears.

    It reports its audio's origin (`AudioOrigin`); `restart()` starts a new session whose result
    times count from the next frame pushed (a provider that does not carry them on)."""

    def __init__(
        self,
        stt: FakeSTT,
        *,
        buffer_frames: int,
        batch_frames: int,
        stall: tuple[float, float] | None,
    ) -> None:
        self.buffer = AudioBuffer(buffer_frames)
        self._batch = batch_frames
        self.frames_heard = 0
        self._stt = stt
        self._lines = stt.inbound.lines
        self._stall = stall
        self._results: asyncio.Queue[SttEvent | None] = asyncio.Queue()
        self._handles: set[asyncio.TimerHandle] = set()
        self._label = 0
        self._results_ended = False  # the last item (None) is queued
        self._input_done = False  # the recognizer consumed everything after end_input()
        self._closed = False
        # As SpeechKit's `status_code` WORKING that opens a stream, when the STT is set to.
        self.answered_at: float | None = None
        self._answer: asyncio.TimerHandle | None = None
        self._origin: float | None = None  # the first frame of the session, less its 20 ms
        if stt.answers and stt.answer_delay_s <= 0:
            self.answered_at = asyncio.get_running_loop().time()
        elif stt.answers:
            self._answer = asyncio.get_running_loop().call_later(stt.answer_delay_s, self._answered)
        for failure in stt.failures:
            self._at(failure.at, failure.error)
        self._tasks = TaskOwner("fake-stt")
        self._tasks.spawn(self._recognize(), "recognize")

    # --- RecognitionStream ---
    def push_audio(self, frame: bytes) -> None:
        if self._origin is None:  # (the session's first frame only: no clock read per frame)
            self._origin = asyncio.get_running_loop().time() - FRAME_S
        self.buffer.push(frame)

    @property
    def frames_dropped(self) -> int:
        return self.buffer.dropped

    @property
    def audio_origin(self) -> float | None:
        """`AudioOrigin`: the loop time of the session's audio 0 ms (None: no frame yet)."""
        return self._origin

    def restart(self) -> None:
        """A new session: result times count from the next frame pushed."""
        self._origin = None

    def end_input(self) -> None:
        self.buffer.end()

    async def aclose(self) -> None:
        self._stt.stopped = True
        if self._closed:
            return
        self._closed = True
        self.buffer.end()
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()
        if self._answer is not None:
            self._answer.cancel()
        await self._tasks.aclose()
        self._end_results()

    def __aiter__(self) -> AsyncIterator[SttEvent]:
        return self

    async def __anext__(self) -> SttEvent:
        item = await self._results.get()
        if item is None:
            self._results.put_nowait(None)  # stays ended for any later reader
            raise StopAsyncIteration
        return item

    def _answered(self) -> None:
        self._answer = None
        self.answered_at = asyncio.get_running_loop().time()

    # --- test hooks ---
    def emit(self, event: SttEvent) -> None:
        """Deliver `event` now; a non-retryable failure is the last item."""
        if self._results_ended:
            return
        # A result is the service's answer; a failure means it is not known to work. Either
        # way the stream's opening answer, if still due, is news no more.
        if self._answer is not None:
            self._answer.cancel()
            self._answer = None
        self.answered_at = asyncio.get_running_loop().time() if isinstance(event, SttResult) else None
        self._results.put_nowait(event)
        if isinstance(event, ProviderError) and not event.retryable:
            self._end_results()

    def _end_results(self) -> None:
        if not self._results_ended:
            self._results_ended = True
            self._results.put_nowait(None)

    # --- the recognizer ---
    async def _recognize(self) -> None:
        buffer, loop = self.buffer, asyncio.get_running_loop()
        while True:
            # A scripted stall: nothing pushed from `at` on is consumed before `at + seconds`.
            # Wake just before `at` (half a frame: the tick due at `at` is not heard yet).
            stall_from = None if self._stall is None else self._stall[0] - _HALF_FRAME_S
            waiter = buffer.waiter(self._batch)
            if waiter is not None:
                # Woken once per batch, as the adapter's request generator.
                until = None if stall_from is None else max(0.0, stall_from - loop.time())
                await asyncio.wait({waiter}, timeout=until)
            frames = buffer.take(len(buffer))
            if not frames and buffer.ended:
                break
            self.frames_heard += len(frames)
            for frame in frames:
                label = label_of(frame)
                if label != self._label:
                    self._heard_change(self._label, label)
                    self._label = label
            if self._stall is not None and stall_from is not None and loop.time() >= stall_from:
                (at, stall_s), self._stall = self._stall, None
                await asyncio.sleep(at + stall_s - loop.time())  # behind: the buffer fills, frames drop
        self._heard_change(self._label, 0)  # input ended mid-line: its final still comes
        self._input_done = True
        if not self._handles:
            self._end_results()

    def _heard_change(self, old: int, new: int) -> None:
        if old:
            line = self._lines[old - 1]
            final = SttResult(line.text, True, 0.9, "final")
            self._at(line.at + line.duration + line.stt_delay, final)
        if new:
            line = self._lines[new - 1]
            words = line.text.split()
            if line.partials and len(words) > 1:
                for i in range(1, len(words)):
                    partial = SttResult(" ".join(words[:i]), False, 0.5, "partial")
                    self._at(line.at + line.duration * i / len(words), partial)

    def _at(self, when: float, event: SttEvent) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._handles.discard(handle)
            if isinstance(event, SttResult):
                self.emit(
                    SttResult(
                        event.text, event.is_final, event.confidence, event.kind, received_at=loop.time()
                    )
                )
            else:
                self.emit(event)
            if self._input_done and not self._handles:
                self._end_results()  # after end_input(), the last result was the last item

        handle = loop.call_at(max(when, loop.time()), fire)
        self._handles.add(handle)


class FakeSTT:
    """`STTStreamer` for the caller `inbound`: its streams recognise the inbound's lines.

    `failures` are reported in-band at their times; `stall=(at, seconds)` makes the recognizer
    stop consuming at `at` for `seconds` (its buffer holds `buffer_frames`). Frames are taken
    `settings.chunk_ms` at a time (default: `YandexSettings()`'s). `answers` (default, as the
    real service): the service answers each stream as it opens (SpeechKit's first response is a
    `status_code`; `answered_at`), `answer_delay_s` after it (a slow connect); False: only its
    results answer (a service not yet reached, or down).
    """

    def __init__(
        self,
        inbound: FakeInbound,
        failures: Sequence[SttFailure] = (),
        *,
        buffer_frames: int = 250,
        stall: tuple[float, float] | None = None,
        settings: YandexSettings | None = None,
        answers: bool = True,
        answer_delay_s: float = 0.0,
    ) -> None:
        self.inbound = inbound
        self.answers = answers
        self.answer_delay_s = answer_delay_s
        self.failures = list(failures)
        self.buffer_frames = buffer_frames
        self.batch_frames = max(1, (settings or YandexSettings()).chunk_ms // FRAME_MS)
        self.stall = stall
        self.streams: list[FakeRecognition] = []
        self.stopped = False

    def open_stream(self) -> FakeRecognition:
        stream = FakeRecognition(
            self, buffer_frames=self.buffer_frames, batch_frames=self.batch_frames, stall=self.stall
        )
        self.streams.append(stream)
        return stream


class BenchRecognizer:
    """The input side of `YandexRecognitionStream` alone: `push_audio` into one `AudioBuffer`
    (`max_buffered_s` of audio, drop-oldest), drained `chunk_ms` at a time as its request
    generator does; nothing is recognised. Sizes from `settings` (default `YandexSettings()`);
    `max_frames` overrides the buffer's.
    """

    def __init__(self, max_frames: int | None = None, *, settings: YandexSettings | None = None) -> None:
        s = settings or YandexSettings()
        self.batch_frames = max(1, s.chunk_ms // FRAME_MS)
        default_frames = max(1, int(s.max_buffered_s * 1000) // FRAME_MS)
        self.buffer = AudioBuffer(max_frames if max_frames is not None else default_frames)

    def push_audio(self, frame: bytes) -> None:
        """As `YandexRecognitionStream.push_audio`."""
        self.buffer.push(frame)

    async def drain(self) -> None:
        """Take batches as the gRPC request generator does, until the input ends."""
        buffer, batch = self.buffer, self.batch_frames
        while True:
            await buffer.wait(batch)
            if not buffer.take(batch) and buffer.ended:
                return


# --------------------------------------------------------------------------- TTS


class FakeSynthesis:
    """`SynthesisStream`: each text piece becomes labelled audio `latency` s after it is pushed."""

    def __init__(self, tts: FakeTTS) -> None:
        self._tts = tts
        self._pieces: deque[str] = deque()
        self._ended = False
        self._finished = False
        self._closed = False
        self._wake: asyncio.Event = asyncio.Event()
        self._out: asyncio.Queue[AudioChunk | TTSError | None] = asyncio.Queue()
        self._tasks = TaskOwner("fake-tts")
        self._tasks.spawn(tts.run_stream(self), "stream")

    # --- SynthesisStream ---
    def push_text(self, text: str) -> None:
        if not self._ended:
            self._pieces.append(text)
            self._wake.set()

    def flush(self) -> None:
        return None  # every piece is synthesized as it comes

    def end_input(self) -> None:
        self._ended = True
        self._wake.set()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._finished:
            self._tts.aborted += 1
        await self._tasks.aclose()
        self.finish()

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self

    async def __anext__(self) -> AudioChunk:
        item = await self._out.get()
        if item is None:
            self._finished = True
            self._out.put_nowait(None)
            raise StopAsyncIteration
        if isinstance(item, TTSError):
            raise item
        return item

    # --- for FakeTTS.run_stream ---
    async def next_text(self) -> str | None:
        """The next pushed piece, None once the input has ended and all were taken."""
        while not self._pieces:
            if self._ended:
                return None
            self._wake.clear()
            await self._wake.wait()
        return self._pieces.popleft()

    def emit(self, item: AudioChunk | TTSError) -> None:
        self._out.put_nowait(item)

    def finish(self) -> None:
        """End the audio (idempotent)."""
        if not self._finished:
            self._finished = True
            self._out.put_nowait(None)


class FakeTTS:
    """`TTSManager`: text -> labelled audio (`labels[text]`, else `default_label`) after `latency` s.

    Its streams are `stream_class` instances (override to script a misbehaving stream).
    """

    stream_class: type[FakeSynthesis] = FakeSynthesis

    def __init__(
        self,
        labels: Mapping[str, int] | None = None,
        *,
        latency: float = 0.2,
        seconds_per_char: float = 0.02,
        default_label: int = 700,
        stream_label: int = 900,
        fail_connect: bool = False,
        fail_synth: bool = False,
        fail_stream_open: bool = False,
    ) -> None:
        self.labels = dict(labels or {})
        self.latency = latency
        self.seconds_per_char = seconds_per_char
        self.default_label = default_label
        self.stream_label = stream_label
        self.fail_connect = fail_connect
        self.fail_synth = fail_synth
        self.fail_stream_open = fail_stream_open
        self.synthesized: list[str] = []  # utterance texts, in order
        self.stream_text: list[str] = []  # pieces pushed into streams, in order
        self.aborted = 0  # streams closed before their audio ended
        self.closed = False
        self._streams: list[FakeSynthesis] = []

    async def connect(self) -> None:
        if self.fail_connect:
            raise TTSConnectionError("cannot reach the TTS service", provider="fake-tts", retryable=True)

    def audio(self, text: str, label: int) -> AudioChunk:
        """Labelled audio as long as `text` takes to say (at least one frame)."""
        frames = max(1, round(len(text) * self.seconds_per_char / FRAME_S))
        return clip(label, frames * FRAME_S)

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        self.synthesized.append(text)
        await asyncio.sleep(self.latency)
        if self.fail_synth:
            raise TTSError("synthesis failed", provider="fake-tts", retryable=True)
        yield self.audio(text, self.labels.get(text, self.default_label))

    async def open_stream(self) -> FakeSynthesis:
        if self.fail_stream_open:
            raise TTSConnectionError("stream refused", provider="fake-tts", retryable=True)
        stream = self.stream_class(self)
        self._streams.append(stream)
        return stream

    async def run_stream(self, stream: FakeSynthesis) -> None:
        """The synthesis behind `stream` (override to script a misbehaving service)."""
        while (piece := await stream.next_text()) is not None:
            self.stream_text.append(piece)
            await asyncio.sleep(self.latency)
            stream.emit(self.audio(piece, self.stream_label))
        stream.finish()

    async def aclose(self) -> None:
        self.closed = True
        for stream in self._streams:
            await stream.aclose()


# --------------------------------------------------------------------------- LLM


@dataclass
class LLMAttempt:
    """One scripted LLM answer: (delay before, chunk) pairs, or an error raised after `delay`."""

    chunks: list[tuple[float, LLMStreamChunk]] = field(default_factory=list)
    error_after: float | None = None


class FakeLLM:
    """`LLMManager` replaying scripted attempts (the last one repeats)."""

    def __init__(self, attempts: Sequence[LLMAttempt], *, model_name: str = "fake-llm") -> None:
        self.attempts = list(attempts)
        self.model_name = model_name
        self.calls: list[tuple[str, int]] = []
        self.aborts = 0  # answers closed before their end (`AnswerStream.aclose()`)
        self.shut = False

    @classmethod
    def canned(cls, reply: str, *, model_name: str = "canned-text-mode") -> FakeLLM:
        """One fixed, safe reply to every off-script question, at once."""
        chunk = LLMStreamChunk(reply, is_safe=True, is_final=True, model=model_name)
        return cls([LLMAttempt([(0.0, chunk)])], model_name=model_name)

    def process_user_turn(
        self, text: str, session: SessionState, *, attempt: int = 0
    ) -> AsyncGenerator[LLMStreamChunk, None]:
        self.calls.append((text, attempt))
        return self._answer(self.attempts[min(len(self.calls), len(self.attempts)) - 1])

    async def _answer(self, script: LLMAttempt) -> AsyncGenerator[LLMStreamChunk, None]:
        try:
            for delay, chunk in script.chunks:
                await asyncio.sleep(delay)
                yield chunk
        except GeneratorExit:
            self.aborts += 1  # closed before its end
            raise
        if script.error_after is not None:
            await asyncio.sleep(script.error_after)
            raise LLMError("model unavailable", provider="fake-llm", retryable=True)

    async def shutdown(self) -> None:
        self.shut = True


# --------------------------------------------------------------------------- intents


class KeywordClassifier:
    """`IntentClassifier` by keywords (the vector classifier is tested on its own)."""

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
