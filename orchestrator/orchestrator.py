"""The Orchestrator: one instance per call, the conductor of the dialogue (spec section 4).

Tasks of one call (all named `<call_id>:<role>`, all cancelled and awaited before `run()` returns):
- `audio_rx`     reads the caller's frames into the STT audio queue; ends at hangup.
- `stt_listener` reads STT results, drops those heard while the bot spoke uninterrupted (echoes,
                 backchannels), and hands the rest to the dialogue.
- `dialogue`     greeting, then one user turn after another until END_CALL.
- `playback`     one parent task per bot turn (`current_playback_task`); barge-in cancels it, and
                 everything it started (synthesis, fillers, LLM pipe) is cancelled with it.
Barge-in arrives synchronously from the gateway's VAD (`on_speech_start`), so the bot stops within
the current 20 ms frame: the playback task is cancelled and the outbound buffer cleared at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.contracts import (
    AudioCache,
    Clock,
    FlowEngine,
    InboundAudio,
    IntentClassifier,
    LLMManager,
    OutboundAudio,
    SttEvent,
    STTStreamer,
    TTSManager,
    TtsStreamItem,
)
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.domain.errors import (
    CallSetupError,
    ClassifierError,
    LLMError,
    ProviderError,
    TTSConnectionError,
    VoicebridgeError,
)
from orchestrator.domain.models import (
    IntentResult,
    LLMStreamChunk,
    SessionState,
    SttResult,
    TranscriptEntry,
)
from orchestrator.flow_engine import missing_entities
from orchestrator.metrics import MetricsLogger, MetricsSink
from orchestrator.playback import (
    AudioRole,
    Cover,
    FillerSequence,
    PlaylistPlayer,
    PreparedItem,
    prepare,
)
from orchestrator.tasks import cancel_and_wait

log = logging.getLogger(__name__)

EndReason = Literal["end_call", "caller_hangup", "stt_failed", "no_input", "error", "shutdown"]
Route = Literal["scripted", "clarify", "flow_error", "faq", "llm"]
Renderer = Callable[[str, SessionState], str]


@dataclass(slots=True, frozen=True)
class CallEvent:
    """Something that happened in a call, for observers (tests, the text demo, logs)."""

    kind: str
    at: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class CallOutcome:
    """How a call ended; the bridge hangs the caller up when `hang_up` is true."""

    reason: EndReason
    turns: int

    @property
    def hang_up(self) -> bool:
        """Whether the bot side should end the phone call."""
        return self.reason != "caller_hangup"


class Orchestrator:
    """Runs one call's dialogue; create it with `create_orchestrator_instance`."""

    def __init__(
        self,
        call_id: str,
        *,
        dialogue_map: DialogueMap,
        flow_engine: FlowEngine,
        intent_classifier: IntentClassifier,
        tts_manager: TTSManager,
        stt_streamer: STTStreamer,
        llm_manager: LLMManager,
        audio_cache: AudioCache,
        clock: Clock,
        render: Renderer,
        metrics_sink: MetricsSink | None = None,
        observer: Callable[[CallEvent], None] | None = None,
        stt_queue_frames: int = 250,
        provider_timeout_s: float = 5.0,
    ) -> None:
        settings = dialogue_map.settings
        self.call_id = call_id
        self.dialogue_map = dialogue_map
        self.flow_engine = flow_engine
        self.intent_classifier = intent_classifier
        self.tts_manager = tts_manager
        self.stt_manager = stt_streamer
        self.llm_manager = llm_manager
        self.clock = clock
        self.neutral_fillers_keys = list(settings.neutral_filler_keys)
        self.non_secure_response = settings.non_secure_response_key
        self.emergency_filler_key = settings.emergency_filler_key
        self.session_state = SessionState(call_id=call_id, current_state_id=dialogue_map.initial_state)
        self.metrics_logger = MetricsLogger(trace_id=call_id, clock=clock, sink=metrics_sink)
        self.current_playback_task: asyncio.Task[None] | None = None
        self.call_ended = False
        self.end_reason: EndReason | None = None
        self._render = render
        self._observer = observer
        self._stt_queue_frames = stt_queue_frames
        self._provider_timeout_s = provider_timeout_s
        self._player = PlaylistPlayer(
            call_id=call_id,
            cache=audio_cache,
            tts=tts_manager,
            clock=clock,
            neutral_filler_keys=self.neutral_fillers_keys,
            operation_timeout_s=settings.operation_timeout_s,
            on_audio=self._on_bot_audio,
            on_tts_first_chunk=lambda: self.metrics_logger.mark("t5_tts_first_chunk"),
            observe=self._observe,
        )
        self._outbound: OutboundAudio | None = None
        self._inbound: InboundAudio | None = None
        self._user_results: asyncio.Queue[SttEvent] = asyncio.Queue()
        self._barged_in = False
        self._speech_at: float | None = None  # VAD onset of the caller's current speech
        self._stt_frames_dropped = 0
        self._stt_results_dropped = 0
        self._no_input_count = 0
        self._caller_speaking = False
        self._shut_down = False

    # ------------------------------------------------------------------ lifecycle
    async def _setup_connections(self) -> None:
        """Async setup awaited by the factory (the TTS connection); raises on failure."""
        await self.tts_manager.connect()

    async def run(self, inbound_stream: InboundAudio, outbound_stream: OutboundAudio) -> CallOutcome:
        """Run the call to its end: STT, greeting, dialogue loop; always shuts down."""
        self._inbound, self._outbound = inbound_stream, outbound_stream
        self._player.outbound = outbound_stream
        inbound_stream.set_voice_listener(self)
        tasks: list[asyncio.Task[None]] = []
        try:
            audio_chunk_queue: asyncio.Queue[bytes | None] = asyncio.Queue(self._stt_queue_frames)
            stt_response_queue = self.stt_manager.start_recognition(audio_chunk_queue)
            rx = asyncio.create_task(
                self._feed_stt(inbound_stream, audio_chunk_queue), name=f"{self.call_id}:audio_rx"
            )
            listener = asyncio.create_task(
                self._listen_stt(stt_response_queue), name=f"{self.call_id}:stt_listener"
            )
            dialogue = asyncio.create_task(self._converse(), name=f"{self.call_id}:dialogue")
            tasks = [rx, listener, dialogue]
            await asyncio.wait({rx, dialogue}, return_when=asyncio.FIRST_COMPLETED)
            if dialogue.done():
                exc = None if dialogue.cancelled() else dialogue.exception()
                if exc is not None:
                    log.error("call %s: dialogue failed", self.call_id, exc_info=exc)
                    self.end_reason = "error"
            else:
                self.end_reason = "caller_hangup"
        except asyncio.CancelledError:
            self.end_reason = self.end_reason or "shutdown"
            raise
        finally:
            await cancel_and_wait(*tasks)
            self.call_ended = True
            await self.shutdown()
        return CallOutcome(self.end_reason or "error", self.metrics_logger.log.turn_index)

    async def shutdown(self) -> None:
        """Release the call's providers and emit the final metrics record. Idempotent."""
        if self._shut_down:
            return
        self._shut_down = True
        if self._inbound is not None:
            self._inbound.set_voice_listener(None)
        steps: Sequence[tuple[str, Callable[[], Awaitable[None]]]] = (
            ("llm", self.llm_manager.shutdown),
            ("stt", self.stt_manager.stop_recognition),
            ("tts", self.tts_manager.aclose),
        )
        for name, step in steps:
            try:
                async with asyncio.timeout(self._provider_timeout_s):
                    await step()
            except Exception:
                log.exception("call %s: %s shutdown failed", self.call_id, name)
        self.metrics_logger.emit_final(
            reason=self.end_reason,
            final_state=self.session_state.current_state_id,
            state_history=list(self.session_state.state_history),
            stt_frames_dropped=self._stt_frames_dropped,
            stt_results_dropped=self._stt_results_dropped,
        )

    # ------------------------------------------------------------------ inbound side
    async def _feed_stt(self, inbound: InboundAudio, queue: asyncio.Queue[bytes | None]) -> None:
        while (frame := await inbound.read_frame()) is not None:
            if queue.full():
                # STT is behind: drop the oldest audio, recent speech matters more.
                queue.get_nowait()
                self._stt_frames_dropped += 1
            queue.put_nowait(frame)
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(None)

    async def _listen_stt(self, stt_response_queue: asyncio.Queue[SttEvent]) -> None:
        while True:
            event = await stt_response_queue.get()
            if (
                isinstance(event, SttResult)
                and self.session_state.turn_state == "BOT_TURN"
                and not self._barged_in
            ):
                # Heard while the bot spoke and nobody interrupted: echo or a backchannel.
                self._stt_results_dropped += 1
                self._observe("stt_dropped", text=event.text)
                continue
            self._user_results.put_nowait(event)

    # VoiceListener (called synchronously by the gateway)
    def on_speech_start(self, at: float) -> None:
        """Caller speech began: remember the onset (t1); barge in if the bot is talking."""
        self._speech_at = at
        self._caller_speaking = True
        if self.session_state.turn_state == "BOT_TURN":
            self.handle_barge_in()

    def on_speech_end(self, at: float) -> None:
        """Caller speech ended (STT decides where the utterance ends; this only tracks talking)."""
        self._caller_speaking = False

    def on_dtmf(self, digit: str, at: float) -> None:
        """A DTMF digit: logged; maps do not route on digits yet."""
        self._observe("dtmf", digit=digit)

    def handle_barge_in(self) -> bool:
        """Stop the bot now (spec 2.5); True if playback was cut."""
        task = self.current_playback_task
        if self.session_state.turn_state != "BOT_TURN" or task is None or task.done():
            return False
        task.cancel()
        self._player.interrupt()  # nothing more reaches the caller after this instant
        self._barged_in = True
        self.session_state.turn_state = "USER_TURN"
        self.metrics_logger.set(barge_in_at=self.clock.now())
        self._observe("barge_in")
        return True

    # ------------------------------------------------------------------ dialogue
    async def _converse(self) -> None:
        await self._greet()
        await self._dialogue_loop()

    async def _greet(self) -> None:
        state = self.dialogue_map.state(self.session_state.current_state_id)
        self.metrics_logger.start_bot_only_turn()
        self.metrics_logger.set(route="greeting", state=self.session_state.current_state_id)
        await self._bot_turn(lambda: self._play_state_playlist(state.system_response.playlist))
        self.metrics_logger.emit_turn()
        self._maybe_end_call("scripted")

    async def _dialogue_loop(self) -> None:
        """One user turn after another until END_CALL (spec 4.4)."""
        leader: str | None = None
        bot_spoke = True  # the greeting
        while not self.call_ended:
            self.session_state.turn_state = "USER_TURN"
            if bot_spoke:
                bot_spoke = False
                self._observe("listening", state=self.session_state.current_state_id)
                if not self._barged_in:
                    # Speech that began during an uninterrupted bot turn belonged to that turn.
                    self._speech_at = None
            try:
                event = await self._next_user_event()
            except TimeoutError:
                self._close_unfinished_turn()
                leader = None
                await self._no_input()
                bot_spoke = True
                continue
            self._barged_in = False
            if isinstance(event, ProviderError):
                self._close_unfinished_turn()
                leader = None
                self.metrics_logger.start_bot_only_turn()
                self.metrics_logger.set(route="stt_failure", state=self.session_state.current_state_id)
                await self._bot_turn(functools.partial(self._provider_failure, event, stage="stt"))
                self.metrics_logger.emit_turn()
                if not event.retryable:
                    self.end_reason = "stt_failed"
                    self.call_ended = True
                bot_spoke = True
                continue
            if not event.text.strip():
                continue  # noise the recogniser turned into nothing: not a turn
            self._no_input_count = 0
            if not self.metrics_logger.turn_open:
                self.metrics_logger.start_turn(self._speech_at or event.received_at)
            if not event.is_final:
                leader = await self._classify_partial(event, leader)
                continue
            await self._user_turn(event, leader)
            leader = None
            bot_spoke = True

    def _close_unfinished_turn(self) -> None:
        """A turn that had partials but will get no final still gets its metrics record."""
        if self.metrics_logger.turn_open:
            self.metrics_logger.set(route="no_final")
            self.metrics_logger.emit_turn()

    async def _next_user_event(self) -> SttEvent:
        """The next STT event; TimeoutError when the caller stays silent for the no-input timeout.

        Also bounded while a turn is open: a partial whose final never comes (noise the
        recogniser dropped, a stream reset) must not leave the line silent for good.
        """
        timeout = self.dialogue_map.settings.no_input_timeout_s
        if timeout is None:
            return await self._user_results.get()
        waiting_since = self.clock.now()
        while True:
            try:
                async with asyncio.timeout(timeout):
                    return await self._user_results.get()
            except TimeoutError:
                spoke = self._speech_at is not None and self._speech_at >= waiting_since
                if self._caller_speaking or spoke:
                    waiting_since = self.clock.now()  # the caller is talking: STT will follow
                    continue
                raise

    async def _no_input(self) -> None:
        """The caller said nothing: reprompt, and after too many reprompts say goodbye and end."""
        settings = self.dialogue_map.settings
        self._no_input_count += 1
        self._observe("no_input", count=self._no_input_count)
        self.metrics_logger.start_bot_only_turn()
        self.metrics_logger.set(route="no_input", state=self.session_state.current_state_id)
        try:
            await self._reprompt_or_hang_up(settings)
        finally:
            self.metrics_logger.emit_turn()

    async def _reprompt_or_hang_up(self, settings: Any) -> None:
        if self._no_input_count > settings.no_input_max_reprompts:
            items = settings.no_input_goodbye_playlist
            await self._bot_turn(lambda: self._play_state_playlist(items), interruptible=False)
            self.call_ended = True
            self.end_reason = "no_input"
            return
        state = self.dialogue_map.state(self.session_state.current_state_id)
        reprompt = settings.no_input_playlist or state.system_response.playlist
        await self._bot_turn(lambda: self._play_state_playlist(reprompt))

    async def _classify_partial(self, result: SttResult, leader: str | None) -> str | None:
        """Quick classification of a partial: track the leading intent and its stability."""
        if len(result.text.strip()) < self.dialogue_map.settings.partial_min_chars:
            return leader
        self.metrics_logger.mark("t3_logic_start")
        try:
            async with asyncio.timeout(self._provider_timeout_s):
                _, new_leader = await self.intent_classifier.classify_intent(
                    result.text, previous_leader=self.session_state.previous_intent_leader
                )
        except (ProviderError, TimeoutError):
            return leader  # the final classification will retry; a partial is only a hint
        stable = self.metrics_logger.context.get("leader_stable_partials", 0)
        stable = stable + 1 if new_leader is not None and new_leader == leader else 0
        self.metrics_logger.set(partial_leader=new_leader, leader_stable_partials=stable)
        return new_leader

    async def _user_turn(self, result: SttResult, partial_leader: str | None) -> None:
        metrics = self.metrics_logger
        metrics.mark("t2_stt_final", result.received_at)
        metrics.log.t3_logic_start = self.clock.now()
        text = result.text.strip()
        self.session_state.transcript.append(TranscriptEntry("user", text))
        self._observe("user_said", text=text)
        metrics.set(text=text, stt_confidence=result.confidence, state=self.session_state.current_state_id)
        try:
            async with asyncio.timeout(self._provider_timeout_s):
                intent, leader = await self.intent_classifier.classify_intent(
                    text, previous_leader=self.session_state.previous_intent_leader
                )
        except (ClassifierError, TimeoutError) as exc:
            await self._bot_turn(functools.partial(self._provider_failure, exc, stage="classifier"))
            metrics.emit_turn()
            return
        metrics.set(
            intent=intent.intent_id if intent else None,
            confidence=round(intent.score, 3) if intent else None,
            leader=leader,
            leader_matches_partial=leader is not None and leader == partial_leader,
        )
        route = await self._route(text, intent)
        self.session_state.previous_intent_leader = leader
        metrics.set(route=route, next_state=self.session_state.current_state_id)
        metrics.emit_turn()
        self._maybe_end_call(route)

    async def _route(self, text: str, intent: IntentResult | None) -> Route:
        """Scripted path, FAQ, or the LLM; plays the bot's answer. Returns the route taken."""
        dmap = self.dialogue_map
        state_id = self.session_state.current_state_id
        if intent is not None and self.flow_engine.has_transition(state_id, intent.intent_id):
            definition = dmap.intents[intent.intent_id]
            missing = missing_entities(dmap, intent.intent_id, self.session_state.variables, intent.entities)
            if missing:
                self.metrics_logger.set(missing_entities=missing)
                await self._bot_turn(lambda: self._play_state_playlist(definition.clarify_playlist))
                return "clarify"
            flow = self.flow_engine.process_event(self.session_state, intent)
            if flow.status == "SUCCESS" and flow.updated_session is not None:
                self._apply(flow.updated_session)
                state = dmap.state(self.session_state.current_state_id)
                await self._bot_turn(lambda: self._play_state_playlist(state.system_response.playlist))
                return "scripted"
            self.metrics_logger.set(flow_status=flow.status, flow_detail=flow.detail)
            if flow.status == "MISSING_ENTITY":
                await self._bot_turn(lambda: self._play_state_playlist(definition.clarify_playlist))
                return "clarify"
            await self._bot_turn(self._play_error_playlist)
            return "flow_error"
        try:
            async with asyncio.timeout(self._provider_timeout_s):
                faq = await self.intent_classifier.find_faq_answer(text)
        except (ClassifierError, TimeoutError):
            faq = None  # the LLM can still answer
        if faq is not None:
            self.metrics_logger.set(faq=faq.faq_id, faq_score=round(faq.score, 3))
            answer = dmap.faq[faq.faq_id].answer
            await self._bot_turn(lambda: self._play_state_playlist(answer))
            return "faq"
        await self._bot_turn(lambda: self._handle_unscripted_flow(text))
        return "llm"

    def _apply(self, updated: dict[str, Any]) -> None:
        before = self.session_state.current_state_id
        for key in ("current_state_id", "variables", "state_history"):
            if key in updated:
                setattr(self.session_state, key, updated[key])
        after = self.session_state.current_state_id
        if after != before:
            self._observe("state", from_state=before, to_state=after)

    def _maybe_end_call(self, route: Route) -> None:
        state = self.dialogue_map.state(self.session_state.current_state_id)
        if route == "scripted" and state.action == "END_CALL":
            self.call_ended = True
            self.end_reason = "end_call"
            self._observe("end_call", state=self.session_state.current_state_id)

    # ------------------------------------------------------------------ bot turns
    async def _bot_turn(
        self, body: Callable[[], Awaitable[None]], *, interruptible: bool | None = None
    ) -> bool:
        """Run one bot response as the cancellable `current_playback_task`.

        Returns False when barge-in cut it. Provider failures inside end in the emergency filler.
        """
        self.session_state.turn_state = "BOT_TURN"
        self._barged_in = False
        if interruptible is None:
            interruptible = self.dialogue_map.is_interruptible(self.session_state.current_state_id)
        self._player.begin_turn()
        task = asyncio.create_task(self._guarded(body), name=f"{self.call_id}:playback")
        if interruptible:
            self.current_playback_task = task
            if self._caller_speaking:
                # The caller started talking before the answer was ready and is still talking:
                # their words must be heard, not talked over.
                self.handle_barge_in()
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            await cancel_and_wait(task)
            raise
        finally:
            self.current_playback_task = None
        if task.cancelled():
            self.metrics_logger.set(interrupted=True)
            return False
        task.result()
        return True

    async def _guarded(self, body: Callable[[], Awaitable[None]]) -> None:
        try:
            await body()
        except (ProviderError, VoicebridgeError) as exc:
            await self._provider_failure(exc, stage="playback")

    async def _play_audio_playlist(self, playlist: Sequence[PreparedItem], outbound: OutboundAudio) -> None:
        """Play a prepared playlist with fillers from the current state (spec 4.5)."""
        state = self.dialogue_map.state(self.session_state.current_state_id)
        self._player.outbound = outbound
        await self._player.play_playlist(playlist, state.fillers)

    async def _play_state_playlist(self, items: Sequence[Any]) -> None:
        assert self._outbound is not None
        try:
            prepared = prepare(items, lambda t: self._render(t, self.session_state))
        except VoicebridgeError as exc:
            log.error("call %s: cannot render playlist: %s", self.call_id, exc)
            self.metrics_logger.set(flow_status="EXECUTION_ERROR", flow_detail=str(exc))
            await self._play_error_playlist()
            return
        await self._play_audio_playlist(prepared, self._outbound)

    async def _play_error_playlist(self) -> None:
        assert self._outbound is not None
        state = self.dialogue_map.state(self.session_state.current_state_id)
        items = state.error_playlist or self.dialogue_map.settings.error_playlist
        try:
            prepared = prepare(items, lambda t: self._render(t, self.session_state))
        except VoicebridgeError:
            prepared = [PreparedItem("cache", key=self.emergency_filler_key)]
        await self._play_audio_playlist(prepared, self._outbound)

    async def _provider_failure(self, exc: BaseException, *, stage: str) -> None:
        """Any STT/TTS/LLM failure: the caller hears the emergency filler, the call goes on."""
        log.warning("call %s: %s failure: %s", self.call_id, stage, exc)
        self.metrics_logger.set(error=f"{stage}: {exc}")
        self._observe("provider_failure", stage=stage, error=str(exc))
        if self._outbound is None:
            return
        # No clear(): fillers were cut when the failed work ended; what is queued is content.
        try:
            await self._player.play_clip(self.emergency_filler_key, "answer")
            await self._outbound.drain()
        except ProviderError:
            log.error("call %s: emergency filler unavailable", self.call_id)

    def _on_bot_audio(self, role: AudioRole) -> None:
        self.metrics_logger.mark("t6_first_bot_audio")
        if role == "answer" and "answer_audio_at" not in self.metrics_logger.context:
            self.metrics_logger.set(answer_audio_at=self.clock.now())

    # ------------------------------------------------------------------ unscripted (LLM) flow
    async def _handle_unscripted_flow(self, text: str) -> None:
        """Off-script answer from the LLM, streamed through TTS, behind a first-chunk safety gate."""
        assert self._outbound is not None
        metrics = self.metrics_logger
        metrics.set(model_name=self.llm_manager.model_name)
        state = self.dialogue_map.state(self.session_state.current_state_id)
        fillers = FillerSequence(state.fillers, self.neutral_fillers_keys)
        deadline = self.clock.now() + self.dialogue_map.settings.operation_timeout_s
        # One cover from the start to the first audio: the filler is not restarted when the
        # stream opens or the first LLM chunk arrives, only cut when there is audio to play.
        cover: Cover | None = await self._player.start_cover(fillers)
        stream_open = completed = False
        try:
            try:
                async with asyncio.timeout(self._provider_timeout_s):
                    text_input_queue, audio_output_queue = await self.tts_manager.start_llm_stream()
                stream_open = True
            except (TTSConnectionError, TimeoutError) as exc:
                log.warning("call %s: streaming TTS unavailable: %s", self.call_id, exc)
                metrics.set(error=f"tts_stream: {exc}")
                assert cover is not None
                await cover.stop()
                await self._player.play_clip(self.non_secure_response)
                await self._outbound.drain()
                return
            for attempt in range(self.dialogue_map.settings.llm_max_retries + 1):
                if cover is None:
                    cover = await self._player.start_cover(fillers)
                metrics.mark("t4_llm_request")
                metrics.set(llm_attempts=attempt + 1)
                llm_text_stream = self.llm_manager.process_user_turn(
                    text, self.session_state, attempt=attempt
                )
                first = await self._first_llm_chunk(llm_text_stream, deadline)
                if first is None:
                    log.warning("call %s: the LLM answered nothing", self.call_id)
                    await cover.stop()
                    cover = None
                    await self._player.play_clip(self.non_secure_response)
                    break
                if not first.is_safe:
                    metrics.set(unsafe_reason=first.safety_reason)
                    self._observe("llm_unsafe", reason=first.safety_reason, attempt=attempt)
                    await self.llm_manager.abort_generation()
                    await _close_stream(llm_text_stream)
                    await cover.stop()
                    cover = None
                    await self._player.play_clip(self.non_secure_response)
                    continue
                text_input_queue.put_nowait(first.text_chunk)
                await self._speak_llm_answer(
                    first, llm_text_stream, text_input_queue, audio_output_queue, cover, deadline
                )
                completed = True
                break
            await self._outbound.drain()
        finally:
            if cover is not None:
                await cover.stop()
            if stream_open and not completed:
                await self.tts_manager.abort_llm_stream()
            await self.llm_manager.abort_generation()

    async def _first_llm_chunk(self, stream: Any, deadline: float) -> LLMStreamChunk | None:
        """Await the first LLM chunk (the safety gate reads it before any audio starts)."""
        first: asyncio.Task[LLMStreamChunk] = asyncio.create_task(
            anext(stream), name=f"{self.call_id}:llm_first"
        )
        try:
            await self._player.wait_ready(first, deadline)
        finally:
            if not first.done():
                await cancel_and_wait(first)
        try:
            return first.result()
        except StopAsyncIteration:
            return None
        except ProviderError:
            raise
        except Exception as exc:
            raise LLMError(repr(exc), provider="llm", retryable=False) from exc

    async def _speak_llm_answer(
        self,
        first: LLMStreamChunk,
        llm_text_stream: Any,
        text_input_queue: asyncio.Queue[str | None],
        audio_output_queue: asyncio.Queue[TtsStreamItem],
        cover: Cover,
        deadline: float,
    ) -> None:
        answer: list[str] = [first.text_chunk]
        pipe = asyncio.create_task(
            self._pipe_llm_to_tts(llm_text_stream, text_input_queue, answer),
            name=f"{self.call_id}:llm_pipe",
        )
        playback = asyncio.create_task(
            self._stream_audio_from_queue(audio_output_queue, cover, deadline),
            name=f"{self.call_id}:llm_playback",
        )
        try:
            await asyncio.wait({playback})
            playback.result()
        finally:
            await cancel_and_wait(pipe, playback)
            spoken = "".join(answer).strip()
            if spoken:
                self.session_state.transcript.append(TranscriptEntry("bot", spoken))
                self._observe("llm_said", text=spoken)

    async def _pipe_llm_to_tts(
        self, llm_text_stream: Any, text_input_queue: asyncio.Queue[str | None], answer: list[str]
    ) -> None:
        """Task 1 (Pipe): LLM text chunks into the TTS stream; stops at an unsafe chunk."""
        try:
            async for chunk in llm_text_stream:
                if not chunk.is_safe:
                    self.metrics_logger.set(unsafe_tail=chunk.safety_reason)
                    await self.llm_manager.abort_generation()
                    break
                if chunk.text_chunk:
                    answer.append(chunk.text_chunk)
                    text_input_queue.put_nowait(chunk.text_chunk)
        except ProviderError as exc:
            # Mid-answer failure: what was said stays said; the answer just ends here.
            log.warning("call %s: LLM stream broke: %s", self.call_id, exc)
            self.metrics_logger.set(error=f"llm: {exc}")
        finally:
            text_input_queue.put_nowait(None)
            self.metrics_logger.set(llm_done_at=self.clock.now())
            await _close_stream(llm_text_stream)  # finalise the generator now, not at GC

    async def _stream_audio_from_queue(
        self, audio_output_queue: asyncio.Queue[TtsStreamItem], cover: Cover, deadline: float
    ) -> None:
        """Task 2 (Playback): TTS audio to the caller; the filler is cut when the first chunk is here."""
        first: asyncio.Task[TtsStreamItem] = asyncio.create_task(
            audio_output_queue.get(), name=f"{self.call_id}:tts_first"
        )
        try:
            await self._player.wait_ready(first, deadline)
        finally:
            if not first.done():
                await cancel_and_wait(first)
        await cover.stop()
        item = first.result()
        if item is None:
            return
        if isinstance(item, ProviderError):
            raise item
        self.metrics_logger.mark("t5_tts_first_chunk")
        self._observe("play", kind="llm")
        await self._player.write(item, "answer")
        await self._player.stream(audio_output_queue.get, "answer")

    # ------------------------------------------------------------------ observation
    def _observe(self, event: str, /, **data: Any) -> None:
        if self._observer is not None:
            try:
                self._observer(CallEvent(event, self.clock.now(), data))
            except Exception:
                log.exception("call observer failed")


async def _close_stream(stream: Any) -> None:
    """Finalise an LLM answer stream (an async generator) now rather than in the GC, unowned."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


@dataclass(slots=True)
class CallServices:
    """Process-wide services shared by every call, and factories for the per-call ones."""

    dialogue_map: DialogueMap
    flow_engine: FlowEngine
    intent_classifier: IntentClassifier
    audio_cache: AudioCache
    clock: Clock
    render: Renderer
    stt_factory: Callable[[str], STTStreamer]
    tts_factory: Callable[[str], TTSManager]
    llm_factory: Callable[[str], LLMManager]
    metrics_sink: MetricsSink | None = None
    setup_timeout_s: float = 5.0


async def create_orchestrator_instance(
    call_id: str, services: CallServices, *, observer: Callable[[CallEvent], None] | None = None
) -> Orchestrator:
    """Build a fresh Orchestrator for `call_id` and await its async setup (spec 4.1).

    Raises `CallSetupError` when setup fails; whatever was created is shut down first.
    """
    orchestrator = Orchestrator(
        call_id,
        dialogue_map=services.dialogue_map,
        flow_engine=services.flow_engine,
        intent_classifier=services.intent_classifier,
        tts_manager=services.tts_factory(call_id),
        stt_streamer=services.stt_factory(call_id),
        llm_manager=services.llm_factory(call_id),
        audio_cache=services.audio_cache,
        clock=services.clock,
        render=services.render,
        metrics_sink=services.metrics_sink,
        observer=observer,
    )
    try:
        async with asyncio.timeout(services.setup_timeout_s):
            await orchestrator._setup_connections()
    except asyncio.CancelledError:
        orchestrator.end_reason = "shutdown"
        await orchestrator.shutdown()
        raise
    except Exception as exc:
        orchestrator.end_reason = "error"
        await orchestrator.shutdown()
        raise CallSetupError(f"call {call_id}: setup failed: {exc!r}") from exc
    return orchestrator
