"""The Orchestrator's dependencies, as `typing.Protocol`s.

They are shaped after the real providers (Yandex SpeechKit v3 over gRPC, an OpenAI-compatible
chat API, Redis) so their adapters plug in without changes to the Orchestrator.

Streams follow one naming scheme (after LiveKit Agents' `RecognizeStream`/`SynthesizeStream`):
a provider's `open_stream()` returns a stream; input is pushed with `push_audio()` or
`push_text()`, which never block; `end_input()` says no more input; `aclose()` abandons it; output
is read with `async for`. Recognition failures travel in-band (`STTError` items), because the
dialogue goes on after a retryable one; synthesis and LLM failures are raised by the iteration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from orchestrator.domain.errors import ProviderError
from orchestrator.domain.models import (
    ArbiterDecision,
    ArbiterOption,
    AudioChunk,
    FaqAnswer,
    FlowResult,
    IntentResult,
    LLMStreamChunk,
    SessionState,
    SttResult,
    TransferOutcome,
    TransferRequest,
)
from orchestrator.events import EndReason

# Items of the STT response queue: results, or the failure that ended (or interrupted) the stream.
SttEvent = SttResult | ProviderError


class Clock(Protocol):
    """Monotonic time in seconds. The Orchestrator and the pacer never read the wall clock."""

    def now(self) -> float:
        """Current time on this clock."""
        ...


class RecognitionStream(Protocol):
    """One call's streaming recognition (SpeechKit v3 `Recognizer.RecognizeStreaming`).

    Audio in, results out. The gateway calls `push_audio` for every inbound frame inside the socket
    callback; the Orchestrator reads results with `async for`. Between the socket and the provider
    there is exactly one bounded buffer (`orchestrator.audio.AudioBuffer`) and one drop point.
    """

    def push_audio(self, frame: bytes) -> None:
        """Queue 20 ms of 8 kHz slin (320 bytes). Never blocks or awaits; ignored after `end_input()`.

        When the buffer is full the oldest audio is dropped and counted in `frames_dropped`.
        """
        ...

    @property
    def frames_dropped(self) -> int:
        """Frames lost because the provider fell behind (exported in the call's final record)."""
        ...

    @property
    def answered_at(self) -> float | None:
        """When the service last answered this recognition (any response, with words or not:
        SpeechKit's first response on a stream is a `status_code`: the streaming example in
        its documentation), on the call's clock (s); None: not yet, or its connection failed
        since, or the recognition ended. A service that answers is working: the caller's words,
        if any, will come (`InterruptionDecider.answered`)."""
        ...

    def end_input(self) -> None:
        """No more audio (the caller hung up); results still arrive until the service finishes."""
        ...

    async def aclose(self) -> None:
        """Stop now and release the stream's tasks and channel; iteration ends. Idempotent, bounded."""
        ...

    def __aiter__(self) -> AsyncIterator[SttEvent]:
        """Results as they come: `SttResult`s, and failures in-band as `STTError`.

        A retryable `STTError` may be followed by more results; a non-retryable one is the last
        item. Iteration ends after `end_input()` once the service has finished, or after `aclose()`.
        """
        ...


class STTStreamer(Protocol):
    """Speech recognition for one call: opens its recognition stream."""

    def open_stream(self) -> RecognitionStream:
        """Start recognising; the stream's background work starts now (needs a running loop).

        Connection problems do not raise here: they arrive in-band as `STTError`.
        """
        ...


class SynthesisStream(Protocol):
    """One streaming synthesis (SpeechKit v3 `Synthesizer.StreamSynthesis`): text in, audio out.

    Replaces the spec's `start_llm_stream()` (a pair of queues) with one object: the LLM answer pipeline pushes
    text pieces as the LLM produces them and plays the audio it iterates.
    """

    def push_text(self, text: str) -> None:
        """Queue a piece of text (any length, sentence ends optional). Never blocks or awaits."""
        ...

    def flush(self) -> None:
        """Synthesize what was pushed so far now, without waiting for a sentence end."""
        ...

    def end_input(self) -> None:
        """No more text: the rest is synthesized and iteration ends after its audio."""
        ...

    async def aclose(self) -> None:
        """Abandon the synthesis now (barge-in, unsafe answer); iteration ends. Idempotent, bounded."""
        ...

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        """Audio as it is produced. Raises `TTSError` when the synthesis fails or stalls."""
        ...


class TTSManager(Protocol):
    """Speech synthesis for one call (SpeechKit `UtteranceSynthesis` and `StreamSynthesis`)."""

    async def connect(self) -> None:
        """Check the service is reachable; raises `TTSConnectionError` if it is not."""
        ...

    def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """Synthesize one utterance; chunks arrive as the service produces them. Raises `TTSError`."""
        ...

    async def open_stream(self) -> SynthesisStream:
        """Open a streaming synthesis. Raises `TTSConnectionError` when it cannot be opened."""
        ...

    async def aclose(self) -> None:
        """Release the call's synthesis resources (an open stream included). Idempotent."""
        ...


class AnswerStream(Protocol):
    """The LLM's answer to one turn, chunk by chunk (an async generator satisfies this).

    The one way to stop a generation early (barge-in, an unsafe chunk) is `aclose()`.
    """

    def __aiter__(self) -> AsyncIterator[LLMStreamChunk]:
        """Chunks as the LLM produces them, each with its safety verdict.

        The request goes out at the first step; a failure or timeout is raised there or at any
        later step as `LLMError`. Iteration ends quietly after `aclose()`.
        """
        ...

    async def aclose(self) -> None:
        """Stop the generation now and release it (the HTTP stream). Idempotent."""
        ...


class LLMManager(Protocol):
    """The off-script answerer for one call (OpenAI-compatible streaming chat)."""

    @property
    def model_name(self) -> str:
        """Model used, for the metrics."""
        ...

    def process_user_turn(self, text: str, session: SessionState, *, attempt: int = 0) -> AnswerStream:
        """The answer to `text` as a stream; each chunk carries the safety verdict.

        Never raises: nothing is requested until the stream is iterated, and failures (`LLMError`)
        come from the iteration. `attempt` > 0 means an earlier answer to the same turn was
        judged unsafe.
        """
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


class IntentArbiter(Protocol):
    """Picks what an unsure caller's words mean from a closed set (an LLM asked for one label)."""

    @property
    def name(self) -> str:
        """Model or implementation name, for the metrics."""
        ...

    async def choose(self, text: str, options: Sequence[ArbiterOption], *, context: str = "") -> str | None:
        """One `ArbiterOption.label` of `options`, or None for none of them.

        `context` is what the bot said last (may be empty). The answer is not trusted: callers
        treat anything outside `options` as none. Raises `ProviderError` when the service fails;
        callers bound the wait.
        """
        ...


class IntentStep(Protocol):
    """The constrained step between the local classifier and the free LLM answer (issue 8).

    Process-wide and stateless per call, like the classifier.
    """

    async def resolve(self, text: str, state_id: str) -> ArbiterDecision | None:
        """For a turn the local classifier did not route: the arbiter's pick among the intents
        with a transition from `state_id`, the global ones and the FAQ entries.

        None when the step does not run (the local scores say clearly nothing, or no arbiter).
        Never raises but for cancellation; its own wait is bounded by the map's
        `settings.intent_arbiter.timeout_s`.
        """
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

    def on_speech_onset(self, at: float) -> None:
        """Maybe speech, from clock time `at` (a few tens of ms of it): the bot may pause."""
        ...

    def on_speech_rejected(self, at: float) -> None:
        """The run announced by `on_speech_onset(at)` was not speech: a paused bot resumes."""
        ...

    def on_speech_start(self, at: float) -> None:
        """The caller started speaking (after the VAD's minimum speech duration), at clock time `at`."""
        ...

    def on_speech_end(self, at: float) -> None:
        """The caller stopped speaking."""
        ...

    def on_dtmf(self, digit: str, at: float) -> None:
        """A DTMF digit arrived."""
        ...


class AudioSink(Protocol):
    """Takes the caller's audio frame by frame (a `RecognitionStream` is one)."""

    def push_audio(self, frame: bytes) -> None:
        """20 ms of 8 kHz slin; never blocks or awaits."""
        ...


class InboundAudio(Protocol):
    """The caller's side of a call as the Orchestrator sees it (the bridge's TelephonyGateway)."""

    def attach(self, listener: VoiceListener | None, audio: AudioSink | None) -> None:
        """Route voice activity and DTMF to `listener`, and every inbound 20 ms frame to `audio`.

        Both are called synchronously inside the socket callback, so barge-in reacts within the
        frame that confirmed the speech and audio reaches the recognizer with no queue between.
        None detaches. After the hang-up nothing more is delivered.
        """
        ...

    @property
    def hung_up(self) -> bool:
        """Whether the caller's leg has ended."""
        ...

    async def wait_hangup(self) -> None:
        """Return once the caller's leg has ended (at once if it already has)."""
        ...

    @property
    def hangup_reason(self) -> EndReason:
        """Why the leg ended, as the call's end reason: "caller_hangup" when the caller hung up,
        "protocol_error" or "media_timeout" when the bridge cut a broken or silent leg."""
        ...


class CallControl(Protocol):
    """What the Orchestrator may ask of the telephony side beyond audio (the bridge's ARI call)."""

    async def transfer(self, request: TransferRequest) -> TransferOutcome:
        """Dial `request.endpoint`; when it answers, join the caller to it and return "answered".

        After "answered" the caller's line stays up, joined to the operator, and the call's media
        leg (the bot) is being released: the Orchestrator ends the call with "transferred" and
        must not write audio any more. "busy", "no_answer" (after `request.timeout_s`) and
        "failed" leave the caller with the bot, as before. Never raises but for cancellation.
        """
        ...


class OutboundAudio(Protocol):
    """The bot's voice: a paced playout that sends one 20 ms frame per tick, silence when idle."""

    async def write(self, chunk: AudioChunk) -> None:
        """Queue audio; returns when at most the high-water mark of audio is left to send.

        Cancelling the writer stops nothing by itself: call `clear()` to drop what is queued.
        Raises `AudioClosed` once the caller has hung up.
        """
        ...

    def end_segment(self) -> None:
        """Mark the end of one utterance: pad its last partial frame, reset resampling state."""
        ...

    async def drain(self) -> None:
        """Wait until everything queued has been sent. Raises `AudioClosed` once the caller hung up."""
        ...

    def pause(self) -> None:
        """Send silence from the next frame on, keeping what is queued (a possible barge-in)."""
        ...

    def resume(self) -> None:
        """Continue from where `pause()` stopped: no frame repeated, none skipped."""
        ...

    def clear(self) -> None:
        """Drop all queued audio at once; the next frame sent is silence or newer audio."""
        ...

    @property
    def frames_sent(self) -> int:
        """Bot audio frames (not silence) sent so far."""
        ...
