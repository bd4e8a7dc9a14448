"""The Orchestrator's dependencies, as `typing.Protocol`s.

They are shaped after the real providers (Yandex SpeechKit v3 over gRPC, an OpenAI-compatible
chat API, Redis) so their adapters plug in without changes to the Orchestrator. Stream ends are
marked with `None`; stream failures travel in-band as a `ProviderError` so a consumer waiting on a
queue learns about them without a second channel.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from orchestrator.domain.errors import ProviderError
from orchestrator.domain.models import (
    AudioChunk,
    FaqAnswer,
    FlowResult,
    IntentResult,
    LLMStreamChunk,
    SessionState,
    SttResult,
)

# Items of the STT response queue: results, or the failure that ended (or interrupted) the stream.
SttEvent = SttResult | ProviderError
# Items of a TTS audio queue: audio, an in-band failure, or None at the end of the stream.
TtsStreamItem = AudioChunk | ProviderError | None


class Clock(Protocol):
    """Monotonic time in seconds. The Orchestrator and the pacer never read the wall clock."""

    def now(self) -> float:
        """Current time on this clock."""
        ...


class STTStreamer(Protocol):
    """Streaming speech recognition for one call (Yandex SpeechKit `RecognizeStreaming`)."""

    def start_recognition(self, audio_queue: asyncio.Queue[bytes | None]) -> asyncio.Queue[SttEvent]:
        """Start recognising 8 kHz slin from `audio_queue` (None ends it); results go to the queue returned."""
        ...

    async def stop_recognition(self) -> None:
        """Stop the stream and wait for its tasks to finish. Idempotent."""
        ...


class TTSManager(Protocol):
    """Speech synthesis for one call (SpeechKit `UtteranceSynthesis` and `StreamSynthesis`)."""

    async def connect(self) -> None:
        """Check the service is reachable; raises `TTSConnectionError` if it is not."""
        ...

    def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """Synthesize one utterance; chunks arrive as the service produces them. Raises `TTSError`."""
        ...

    async def start_llm_stream(
        self,
    ) -> tuple[asyncio.Queue[str | None], asyncio.Queue[TtsStreamItem]]:
        """Open a streaming synthesis: text pieces in (None ends the input), audio out (None at the end).

        Raises `TTSConnectionError` when the stream cannot be opened.
        """
        ...

    async def abort_llm_stream(self) -> None:
        """Abandon the open streaming synthesis, if any (barge-in, unsafe answer). Idempotent."""
        ...

    async def aclose(self) -> None:
        """Release the call's synthesis resources. Idempotent."""
        ...


class LLMManager(Protocol):
    """The off-script answerer for one call (OpenAI-compatible streaming chat)."""

    @property
    def model_name(self) -> str:
        """Model used, for the metrics."""
        ...

    def process_user_turn(
        self, text: str, session: SessionState, *, attempt: int = 0
    ) -> AsyncIterator[LLMStreamChunk]:
        """Stream the answer to `text`; each chunk carries the safety verdict. Raises `LLMError`.

        `attempt` > 0 means an earlier answer to the same turn was judged unsafe.
        """
        ...

    async def abort_generation(self) -> None:
        """Close the running generation, if any. Idempotent."""
        ...

    async def shutdown(self) -> None:
        """Release the call's LLM resources. Idempotent."""
        ...


class IntentClassifier(Protocol):
    """Maps the caller's words onto the dialogue map's intents and FAQ entries."""

    async def classify_intent(
        self, text: str, *, previous_leader: str | None = None
    ) -> tuple[IntentResult | None, str | None]:
        """Classify `text`.

        Returns the result when the best intent clears the map's threshold (else None), and the
        id of the leading intent whatever its score (None for empty text), for stability checks.
        """
        ...

    async def find_faq_answer(self, text: str) -> FaqAnswer | None:
        """The FAQ entry that answers `text`, or None when none is close enough."""
        ...


class FlowEngine(Protocol):
    """Executes the dialogue map: pure, no I/O."""

    def process_event(self, session: SessionState, intent: IntentResult) -> FlowResult:
        """Apply `intent` to `session` (not mutated); SUCCESS carries the updated session fields."""
        ...

    def has_transition(self, state_id: str, intent_id: str) -> bool:
        """Whether `intent_id` leads anywhere from `state_id` (else the turn is off-script)."""
        ...


class AudioCache(Protocol):
    """Pre-synthesized audio by key (`static:*`, `filler:*`, ...), 8 kHz slin."""

    async def get(self, key: str) -> AudioChunk | None:
        """The audio under `key`, or None when absent. Raises `CacheError` on failure."""
        ...

    async def put(self, key: str, audio: AudioChunk) -> None:
        """Store `audio` under `key`."""
        ...


@runtime_checkable
class VoiceListener(Protocol):
    """Receives the gateway's voice-activity and DTMF signals, synchronously, as they happen."""

    def on_speech_start(self, at: float) -> None:
        """The caller started speaking (after the VAD's minimum speech duration), at clock time `at`."""
        ...

    def on_speech_end(self, at: float) -> None:
        """The caller stopped speaking."""
        ...

    def on_dtmf(self, digit: str, at: float) -> None:
        """A DTMF digit arrived."""
        ...


class InboundAudio(Protocol):
    """The caller's side of a call as the Orchestrator sees it."""

    async def read_frame(self) -> bytes | None:
        """Next 20 ms frame of 8 kHz slin, or None once the caller has hung up."""
        ...

    def set_voice_listener(self, listener: VoiceListener | None) -> None:
        """Route voice-activity signals (barge-in) to `listener`."""
        ...


class OutboundAudio(Protocol):
    """The bot's voice: a paced playout that sends one 20 ms frame per tick, silence when idle."""

    async def write(self, chunk: AudioChunk) -> None:
        """Queue audio; returns when at most the high-water mark of audio is left to send.

        Cancelling the writer stops nothing by itself: call `clear()` to drop what is queued.
        """
        ...

    def end_segment(self) -> None:
        """Mark the end of one utterance: pad its last partial frame, reset resampling state."""
        ...

    async def drain(self) -> None:
        """Wait until everything queued has been sent."""
        ...

    def clear(self) -> None:
        """Drop all queued audio at once; the next frame sent is silence or newer audio."""
        ...

    @property
    def frames_sent(self) -> int:
        """Bot audio frames (not silence) sent so far."""
        ...
