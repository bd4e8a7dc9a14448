"""The Orchestrator: one instance per call, the conductor of the dialogue (spec section 4).

This module is the call's lifecycle; its parts live next to it:
- `orchestrator.turns`    turn-taking, an explicit state machine (who has the floor, barge-in);
- `orchestrator.dialogue` the dialogue loop (listen, classify, route, reply);
- `orchestrator.answer`   the LLM answer pipeline (gate, pipe, playback, retry);
- `orchestrator.responses` map playlists rendered, the error playlist, the emergency filler;
- `orchestrator.playback` playlists, fillers and their cuts;
- `orchestrator.events`   what observers are told (`CallEvent`) and how a call ended.

Audio path: `run()` opens the call's recognition stream and attaches it to the inbound side, so
the gateway pushes every caller frame straight into the recognizer (one bounded buffer, one drop
counter, exported in the final record); the Orchestrator itself holds no audio.

Tasks of one call (named `<call_id>:<role>`, owned by one `TaskOwner`, all cancelled and awaited
with a bound before `run()` returns):
- `stt_listener` iterates the recognition results, drops those heard while the bot spoke
                 uninterrupted (echoes, backchannels), and hands the rest to the dialogue.
- `dialogue`     greeting, then one user turn after another until the call ends.
- `hangup`       waits for the caller's hang-up.
- `drain`        idle until the service drains (`drain_by`), then sleeps until the drain deadline;
                 if the call is still going then, the dialogue is cancelled and the caller hears
                 the map's drain goodbye before the call ends (`drain_timeout`).
- `stt_watchdog` STT health (`orchestrator.stt_watchdog`): the caller's speech with no result for
                 `[call] stt_stall_s` is a stalled STT: the emergency phrase (not interruptible),
                 the STT circuit opens; no result within `stt_recovery_s` more ends the call
                 ("stt_failure"); a result in time and the call goes on. A call that starts while
                 the STT circuit is open waits for one probe (`[breaker] probe_every_s +
                 probe_timeout_s`) for it to close; still open, it hears the emergency phrase and
                 ends the same way.
- `playback`     one parent task per bot turn (`current_playback_task`); barge-in cancels it, and
                 everything it started (synthesis, fillers, the LLM pipeline) is cancelled with it.
Barge-in (pause at onset, resume after a false alarm, cut; backchannels) is `orchestrator.barge_in`;
STT health wiring is `orchestrator.stt_health`; the drain and its wind-up are `orchestrator.wind_up`;
the process-wide services and the per-call factory are `orchestrator.factory`.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from orchestrator.answer import AnswerPipeline
from orchestrator.backchannel import answer_words
from orchestrator.barge_in import BargeIn
from orchestrator.breaker import CircuitBreaker
from orchestrator.call_context import CallContext
from orchestrator.call_settings import CallSettings
from orchestrator.contracts import (
    AudioCache,
    AudioOrigin,
    CallControl,
    Clock,
    FlowEngine,
    InboundAudio,
    IntentClassifier,
    IntentStep,
    LLMManager,
    OutboundAudio,
    RecognitionStream,
    STTStreamer,
    TTSManager,
)
from orchestrator.dialogue import BotVoice, DialogueLoop, DtmfPress, Reply, UserEvent
from orchestrator.dialogue_map.expressions import ExpressionError
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.dialogue_map.templates import TemplateError
from orchestrator.domain.errors import AudioClosed, ProviderError
from orchestrator.domain.models import SessionState, SttResult
from orchestrator.end_of_turn import EndOfTurn, state_policy
from orchestrator.events import (
    CallEvent,
    CallEventKind,
    CallOutcome,
    EndReason,
    EventValue,
    Observer,
    notify,
)
from orchestrator.interruption import InterruptionSettings
from orchestrator.machine_check import MachineCheck, MachineCheckSettings
from orchestrator.metrics import Mark, MetricsLogger, MetricsSink
from orchestrator.playback import AudioRole, PlaylistPlayer, PreparedItem
from orchestrator.responses import Renderer, Responses, play_emergency
from orchestrator.stt_health import SttHealth
from orchestrator.stt_watchdog import SttWatchdog
from orchestrator.tasks import TaskOwner, bounded, cancel_and_wait
from orchestrator.turns import Floor, FloorLost, TurnEvent, TurnTaking, turn_state_of
from orchestrator.weak import weakly
from orchestrator.wind_up import DrainDeadline, wind_up

__all__ = [
    "CallEvent",
    "CallEventKind",
    "CallOutcome",
    "Orchestrator",
    "Renderer",
]

log = logging.getLogger(__name__)


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
        observer: Observer | None = None,
        call: CallSettings | None = None,
        intent_step: IntentStep | None = None,
        stt_breaker: CircuitBreaker | None = None,
        interruption: InterruptionSettings | None = None,
    ) -> None:
        """`call`: the service's bounds on one call (`[call]`; defaults when None);
        `stt_breaker`: the service's STT circuit (None: none); `interruption`: how speech over
        the bot is judged (`[interruption]`; defaults when None)."""
        settings = dialogue_map.settings
        call = call if call is not None else CallSettings()
        self.call_id = call_id
        self.dialogue_map = dialogue_map
        self.flow_engine = flow_engine
        self.intent_classifier = intent_classifier
        self.tts_manager = tts_manager
        self.stt_streamer = stt_streamer
        self.llm_manager = llm_manager
        self.clock = clock
        self.session_state = SessionState(call_id=call_id, current_state_id=dialogue_map.initial_state)
        self.metrics_logger = MetricsLogger(trace_id=call_id, clock=clock, sink=metrics_sink)
        # The call's parts call back into this Orchestrator through `weakly` (and the dialogue
        # speaks through a weak proxy): it holds them, so strong callbacks would make the whole
        # call one reference cycle, freed only by a full collection (bridge/gc_policy.py).
        self.turns = TurnTaking(on_change=weakly(self._on_floor))
        observe = weakly(self._observe)
        self.end_reason: EndReason | None = None
        self.end_detail: str | None = None  # what failed, for provider failures and errors
        self.tasks = TaskOwner(call_id, cancel_bound_s=call.cancel_bound_s)
        self._observer = observer
        self._call = call
        self._player = PlaylistPlayer(
            call_id=call_id,
            cache=audio_cache,
            tts=tts_manager,
            clock=clock,
            tasks=self.tasks,
            neutral_filler_keys=settings.neutral_filler_keys,
            operation_timeout_s=settings.operation_timeout_s,
            floor=weakly(self._floor),
            on_audio=weakly(self._on_bot_audio),
            on_tts_first_chunk=weakly(self._on_tts_first_chunk),
            observe=observe,
            cache_timeout_s=call.cache_timeout_s,
        )
        ctx = self._ctx = CallContext(
            call_id, dialogue_map, self.session_state, self.metrics_logger, clock, call, observe
        )
        self._answers = AnswerPipeline(ctx, player=self._player, tts=tts_manager, llm=llm_manager)
        self.responses = Responses(ctx, render=render, player=self._player, play=weakly(self._play_prepared))
        self._user_results: asyncio.Queue[UserEvent] = asyncio.Queue()
        self._stt_health = SttHealth(call_id, stt_breaker, self._user_results.put_nowait)
        self.end_of_turn = EndOfTurn(
            clock=clock,
            forward=self._user_results.put_nowait,
            **state_policy(dialogue_map, weakly(self._state_id)),
        )
        self.barge_in = BargeIn(
            turns=self.turns,
            player=self._player,
            clock=clock,
            metrics=self.metrics_logger,
            observe=observe,
            outbound=weakly(self._outbound_now),
            interruption=interruption,
            answer_words=weakly(self._answer_words),
            stt_answered=weakly(self._stt_answered),
            stt_origin=weakly(self._stt_origin),
        )
        self._control: CallControl | None = None
        self._dialogue = DialogueLoop(
            ctx,
            voice=cast(BotVoice, weakref.proxy(self)),
            unscripted=weakly(self._handle_unscripted_flow),
            responses=self.responses,
            flow_engine=flow_engine,
            classifier=intent_classifier,
            turns=self.turns,
            results=self._user_results,
            intent_step=intent_step,
            stt_down=None if stt_breaker is None else self._stt_health.still_down,
            control=weakly(self._control_now),
        )
        self._watchdog = SttWatchdog(
            clock=clock,
            stall_s=call.stt_stall_s,
            recovery_s=call.stt_recovery_s,
            on_stall=weakly(self._stt_stalled),
            on_recover=self._stt_health.recovered,
            on_give_up=self._stt_health.gave_up,
        )
        self._outbound: OutboundAudio | None = None
        self._inbound: InboundAudio | None = None
        self._recognition: RecognitionStream | None = None
        # Where the recognition's audio times start on `clock` if it does not say (`AudioOrigin`):
        # when it was attached; the gateway pushes a frame every 20 ms of a live leg (silence
        # too), so its first frame comes within one frame after.
        self._attached_at: float | None = None
        self._shut_down = False
        self._drain = DrainDeadline(clock)

    # ------------------------------------------------------------------ lifecycle
    async def _setup_connections(self) -> None:
        """Async setup awaited by the factory (the TTS connection); raises on failure."""
        await self.tts_manager.connect()

    async def run(
        self,
        inbound_stream: InboundAudio,
        outbound_stream: OutboundAudio,
        control: CallControl | None = None,
    ) -> CallOutcome:
        """Run the call to its end: recognition, greeting, dialogue loop; always shuts down.

        `control` transfers the caller for `action: TRANSFER` states (None: transfers fail and
        the map's `on_transfer_failed` state goes on).

        A failure nothing in the dialogue handled (the dialogue or the STT listener raising: a
        bug) is logged once with the call id and ends the call with reason "error", after the
        map's emergency phrase (`_apologise`).
        """
        self._inbound, self._outbound = inbound_stream, outbound_stream
        self._control = control
        self._player.outbound = outbound_stream
        try:
            recognition = self._recognition = self.stt_streamer.open_stream()
            inbound_stream.attach(self, recognition)
            self._attached_at = self.clock.now()
            listener = self.tasks.spawn(self._listen_stt(recognition), "stt_listener")
            watchdog = self.tasks.spawn(self._watchdog.run(), "stt_watchdog")
            dialogue = self.tasks.spawn(self._dialogue.run(), "dialogue")
            hangup = self.tasks.spawn(inbound_stream.wait_hangup(), "hangup")
            drain = self.tasks.spawn(self._drain.wait(), "drain")
            pending = {hangup, dialogue, listener, watchdog, drain}
            # The listener may end quietly (the recognition ended); failing, it ends the call, as
            # does a failing watchdog (else a stalled STT would go unnoticed for the whole call).
            helpers = (listener, watchdog)
            while {hangup, dialogue, drain} <= pending and not any(_failure(t) for t in helpers):
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            failed = next((t for t in (dialogue, *helpers) if _failure(t) is not None), None)
            exc = None if failed is None else _failure(failed)
            if failed is not None and exc is not None:
                role = failed.get_name().rpartition(":")[2]
                log.error("call %s: %s failed", self.call_id, role, exc_info=exc)
                self.end_reason = "error"
                self.end_detail = f"{type(exc).__name__}: {exc}"
            elif drain.done() and not dialogue.done() and not hangup.done():
                await wind_up(
                    self._ctx, dialogue, player=self._player, turns=self.turns, bot_turn=self.bot_turn
                )
                self.end_reason = "drain_timeout"
            elif dialogue.done():
                self.end_reason = self._dialogue.end_reason
                self.end_detail = self.end_detail or self._dialogue.end_detail
            else:
                self.end_reason = inbound_stream.hangup_reason  # a hang-up, or a broken leg
                recognition.end_input()
        except asyncio.CancelledError:
            self.end_reason = self.end_reason or "shutdown"
            raise
        finally:
            await self.tasks.aclose()
            self.tasks.keep_alive(self)  # the parts call back weakly (`weakly`)
            self.turns.handle(TurnEvent.HANG_UP)
            if self.end_reason == "error":
                await self._apologise()
            await self.shutdown()
        return CallOutcome(self.end_reason or "error", self.metrics_logger.log.turn_index)

    def drain_by(self, deadline: float) -> None:
        """The service is draining: the dialogue may go on until clock time `deadline`.

        Past it, if the call is still going, whatever the bot or the caller was doing is cut, the
        caller hears the map's `drain_goodbye_key` (else its emergency filler), bounded by
        `[call] apologise_timeout_s`, and `run()` returns with `drain_timeout`. Synchronous, so
        a signal handler can call it; idempotent (the first deadline stays). Works before `run()`.
        """
        self._drain.drain_by(deadline)

    async def _apologise(self) -> None:
        """After a failure nothing in the dialogue handled (a bug, e.g. in a map condition): the
        map's emergency phrase (`responses.play_emergency`, bounded by `[call]
        apologise_timeout_s`). Never raises."""
        if self._outbound is None:
            return
        await play_emergency(
            self._player.cache,
            self._outbound,
            self.dialogue_map.settings.emergency_filler_key,
            call_id=self.call_id,
            bound_s=self._call.apologise_timeout_s,
            cache_timeout_s=self._call.cache_timeout_s,
        )

    async def shutdown(self) -> None:
        """Release the call's providers and emit the final metrics record. Idempotent."""
        if self._shut_down:
            return
        self._shut_down = True
        self.end_of_turn.close()
        if self._inbound is not None:
            self._inbound.attach(None, None)
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [("llm", self.llm_manager.shutdown)]
        if self._recognition is not None:
            steps.append(("stt", self._recognition.aclose))
        steps.append(("tts", self.tts_manager.aclose))
        for name, step in steps:
            await bounded(step(), self._call.provider_timeout_s, f"shut down call {self.call_id}'s {name}")
        self.metrics_logger.emit_final(
            reason=self.end_reason,
            end_detail=self.end_detail,
            final_state=self.session_state.current_state_id,
            state_history=list(self.session_state.state_history),
            stt_frames_dropped=self._recognition.frames_dropped if self._recognition is not None else 0,
            stt_results_dropped=self.barge_in.results_dropped,
            finals_held=self.end_of_turn.finals_held,
            finals_joined=self.end_of_turn.finals_joined,
        )

    # ------------------------------------------------------------------ the caller's side
    def _stt_answered(self) -> float | None:
        recognition = self._recognition
        return recognition.answered_at if recognition is not None else None

    def _stt_origin(self) -> float | None:
        recognition = self._recognition
        if isinstance(recognition, AudioOrigin):
            return recognition.audio_origin  # (its own: it restarts its times, or knows better)
        return self._attached_at

    async def _listen_stt(self, recognition: RecognitionStream) -> None:
        async for event in recognition:
            if isinstance(event, SttResult):
                self._watchdog.heard(self.clock.now())  # echo too: STT is alive
            self._stt_health.result(event)
            if not isinstance(event, SttResult):
                self.end_of_turn.flush()  # what the caller said before the error is theirs
                self._user_results.put_nowait(event)
            elif self.barge_in.screen(event):
                self.end_of_turn.result(event)  # held until the caller's silence ends the turn
        self.end_of_turn.flush()

    # VoiceListener (called synchronously by the gateway)
    def on_speech_onset(self, at: float) -> None:
        """Maybe speech (tens of ms of it): pause an interruptible bot turn, keeping its place."""
        self.barge_in.on_speech_onset(at)
        self.end_of_turn.speech_onset(at)

    def on_speech_rejected(self, at: float) -> None:
        """Not speech after all (a cough, a click, a short backchannel): resume where it paused."""
        self.barge_in.on_speech_rejected(at)
        self.end_of_turn.speech_rejected(at)

    def on_speech_start(self, at: float) -> None:
        """Caller speech began: remember the onset (t1); barge in if the bot is talking."""
        self.turns.handle(TurnEvent.SPEECH_START, at)
        self._watchdog.speech_start(at)
        if (check := self._dialogue.machine_check) is not None:
            check.speech_start(at)
        self.barge_in.speech_start()
        self.end_of_turn.speech_start(at)

    def on_speech_end(self, at: float) -> None:
        """Caller speech ended at `at` (its last voiced frame): a held STT final may be due."""
        self.turns.handle(TurnEvent.SPEECH_END, at)
        self._watchdog.speech_end(at)
        self.barge_in.speech_end()
        self.end_of_turn.speech_end(at)
        if (check := self._dialogue.machine_check) is not None:
            check.speech_end(at)

    def screen_for_machine(self, settings: MachineCheckSettings) -> None:
        """Check an outbound call for an answering machine before the greeting (call before
        `run`): a machine hears the map's voicemail message and the call ends ("machine")."""
        self._dialogue.machine_check = MachineCheck(self.clock, settings)

    def on_dtmf(self, digit: str, at: float) -> None:
        """A DTMF digit: queued for the dialogue (`orchestrator.dialogue`); a key that means
        something in the current state cuts an interruptible bot turn, like speech."""
        self._observe(CallEventKind.DTMF, digit=digit)
        if self.turns.ended:
            return
        state_id = self.session_state.current_state_id
        state = self.dialogue_map.state(state_id)
        if state.collect_digits is not None or self.dialogue_map.dtmf_intent(state_id, digit) is not None:
            self.barge_in.handle_barge_in()  # a no-op unless an interruptible bot turn is playing
        self.end_of_turn.flush()  # what the caller said before the key is their turn first
        self._user_results.put_nowait(DtmfPress(digit, at))

    def handle_barge_in(self) -> bool:
        """Stop the bot now (spec 2.5); True if playback was cut."""
        return self.barge_in.handle_barge_in()

    # ------------------------------------------------------------------ the bot's side (BotVoice)
    async def bot_turn(self, body: Reply, *, interruptible: bool | None = None) -> bool:
        """Run one bot response as the cancellable `current_playback_task`.

        Returns False when barge-in cut it; the cut playback then gets `[call] cancel_bound_s` to
        unwind before the dialogue listens again (past it, it is abandoned to the call's owner).
        Provider failures (and a template that cannot render) end in the emergency filler.
        """
        if interruptible is None:
            interruptible = self.dialogue_map.is_interruptible(self.session_state.current_state_id)
        self.turns.handle(TurnEvent.BOT_TURN_START)
        task = self.tasks.spawn(self._guarded(body), "playback")
        barge_in = self.barge_in
        cut = barge_in.cut = asyncio.get_running_loop().create_future()
        if interruptible:
            barge_in.current_playback_task = task
            if self.turns.caller_speaking:
                # The caller started talking before the answer was ready and is still talking:
                # their words must be heard, not talked over.
                self.handle_barge_in()
        try:
            await asyncio.wait({task, cut}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            barge_in.current_playback_task = barge_in.cut = None
            barge_in.resume()  # a turn that ended (or was cancelled) while paused leaves no pause
            if not task.done() or cut.done():  # cut, or we are cancelled: bounded unwinding
                await cancel_and_wait(task, timeout=self._call.cancel_bound_s)
        interrupted = self.turns.floor is Floor.INTERRUPTED
        barge_in.turn_over(interrupted=interrupted)
        self.turns.handle(TurnEvent.PLAYBACK_DONE)
        if interrupted:
            self.metrics_logger.set(interrupted=True)
            return False
        try:
            task.result()
        finally:
            del task  # a failure's traceback holds this frame: no cycle through the task
        return True

    async def _guarded(self, body: Reply) -> None:
        try:
            try:
                await body()
            except AudioClosed:
                return  # the caller hung up: nobody is left to hear an apology
            except (ProviderError, TemplateError, ExpressionError) as exc:
                # What a bot turn can expect to fail; a ConfigError or a bug fails the dialogue.
                await self.responses.provider_failure(exc, stage="playback")
        except AudioClosed:
            # The caller hung up during the apology. (Raised, it would end this task failed, and
            # a dialogue cancelled by that hang-up never retrieves it: "Task exception was never
            # retrieved", with the traceback, on every such call.)
            return
        except FloorLost:
            if self.turns.floor is not Floor.INTERRUPTED:
                raise  # audio outside a bot turn: a bug, not a barge-in
            # A writer of the cut turn ran before its cancellation reached it: nothing to do.

    async def _play_audio_playlist(self, playlist: Sequence[PreparedItem], outbound: OutboundAudio) -> None:
        """Play a prepared playlist with fillers from the current state (spec 4.5)."""
        state = self.dialogue_map.state(self.session_state.current_state_id)
        assert outbound is self._player.outbound, "run() hands the player its outbound stream"
        await self._player.play_playlist(playlist, state.fillers)

    async def _play_prepared(self, playlist: Sequence[PreparedItem]) -> None:
        assert self._outbound is not None, "run() sets the outbound stream"
        await self._play_audio_playlist(playlist, self._outbound)

    async def _handle_unscripted_flow(self, text: str) -> None:
        """Off-script answer from the LLM, streamed through TTS (spec 4.3; `orchestrator.answer`)."""
        state = self.dialogue_map.state(self.session_state.current_state_id)
        await self._answers.answer(text, self.session_state, state.fillers)

    # ------------------------------------------------------------------ callbacks
    def _floor(self) -> Floor:
        return self.turns.floor

    def _state_id(self) -> str:
        return self.session_state.current_state_id

    def _outbound_now(self) -> OutboundAudio | None:
        return self._outbound

    def _control_now(self) -> CallControl | None:
        return self._control

    def _answer_words(self) -> frozenset[str]:
        return answer_words(self.dialogue_map, self.session_state.current_state_id)

    def _on_tts_first_chunk(self) -> None:
        self.metrics_logger.mark(Mark.T5_TTS_FIRST_CHUNK)

    def _on_floor(self, floor: Floor) -> None:
        self.session_state.turn_state = turn_state_of(floor)

    def _on_bot_audio(self, role: AudioRole) -> None:
        self.metrics_logger.mark(Mark.T6_FIRST_BOT_AUDIO)
        if role == "answer":
            self.metrics_logger.mark(Mark.ANSWER_AUDIO)

    def _observe(self, kind: CallEventKind, /, **data: EventValue) -> None:
        if kind is CallEventKind.PLAY:
            # Its words recognised from its echo are not the caller's: a TTS item carries its
            # text, a cached clip's is the map's `audio` text for its key (fillers have none).
            text = data.get("text")
            if not isinstance(text, str):
                key = data.get("key")
                text = self.dialogue_map.audio.get(key) if isinstance(key, str) else None
            if text:
                self.barge_in.bot_says(text)
        notify(self._observer, CallEvent(kind, self.clock.now(), data))

    def _stt_stalled(self, unheard_s: float) -> None:
        self.barge_in.stt_lost()  # sustained speech over the bot cuts it until words come again
        self._stt_health.stalled(unheard_s)


def _failure(task: asyncio.Task[None]) -> BaseException | None:
    """The exception a finished task ended with (None while running, cancelled or clean)."""
    return task.exception() if task.done() and not task.cancelled() else None
