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
Barge-in arrives synchronously from the gateway's VAD (`on_speech_start`), so the bot stops within
the current 20 ms frame: the playback task is cancelled and the outbound buffer cleared at once.
It has two stages: at the first tens of ms of possible speech (`on_speech_onset`) an interruptible
turn's audio pauses (the queue kept); a run that turns out not to be speech (`on_speech_rejected`)
resumes it from the next unsent frame, and confirmed speech cancels it as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from orchestrator.answer import AnswerPipeline
from orchestrator.breaker import CircuitBreaker, GuardedLLM
from orchestrator.call_context import CallContext
from orchestrator.call_settings import CallSettings
from orchestrator.contracts import (
    AudioCache,
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
from orchestrator.dialogue import DialogueLoop, DtmfPress, Reply, UserEvent
from orchestrator.dialogue_map.expressions import ExpressionError
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.dialogue_map.templates import TemplateError
from orchestrator.domain.errors import AudioClosed, CallSetupError, ProviderError, STTError
from orchestrator.domain.models import SessionState, SttResult
from orchestrator.events import (
    CallEvent,
    CallEventKind,
    CallOutcome,
    EndReason,
    EventValue,
    Observer,
    notify,
)
from orchestrator.machine_check import MachineCheck, MachineCheckSettings
from orchestrator.metrics import Mark, MetricsLogger, MetricsSink
from orchestrator.playback import AudioRole, PlaylistPlayer, PreparedItem
from orchestrator.responses import Renderer, Responses, play_emergency
from orchestrator.stt_watchdog import SttWatchdog
from orchestrator.tasks import TaskOwner, bounded, cancel_and_wait
from orchestrator.turns import Floor, FloorLost, TurnEvent, TurnTaking, turn_state_of

__all__ = [
    "CallEvent",
    "CallEventKind",
    "CallOutcome",
    "CallServices",
    "Orchestrator",
    "Renderer",
    "create_orchestrator_instance",
]

# How long after an uninterrupted bot turn the results of speech that began over it are dropped
# as a backchannel (SpeechKit finalises 0.3-0.8 s after the speech ends), s.
_LATE_BACKCHANNEL_S = 1.5

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
    ) -> None:
        """`call`: the service's bounds on one call (`[call]`; defaults when None);
        `stt_breaker`: the service's STT circuit (None: none)."""
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
        self.turns = TurnTaking(on_change=self._on_floor)
        self.current_playback_task: asyncio.Task[None] | None = None
        self._cut: asyncio.Future[None] | None = None  # resolved by the barge-in on the bot's turn
        self.end_reason: EndReason | None = None
        self.end_detail: str | None = None  # what failed, for provider failures and errors
        self._stt_breaker = stt_breaker
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
            floor=lambda: self.turns.floor,
            on_audio=self._on_bot_audio,
            on_tts_first_chunk=lambda: self.metrics_logger.mark(Mark.T5_TTS_FIRST_CHUNK),
            observe=self._observe,
            cache_timeout_s=call.cache_timeout_s,
        )
        ctx = CallContext(
            call_id, dialogue_map, self.session_state, self.metrics_logger, clock, call, self._observe
        )
        self._answers = AnswerPipeline(ctx, player=self._player, tts=tts_manager, llm=llm_manager)
        self.responses = Responses(ctx, render=render, player=self._player, play=self._play_prepared)
        self._user_results: asyncio.Queue[UserEvent] = asyncio.Queue()
        self._control: CallControl | None = None
        self._dialogue = DialogueLoop(
            ctx,
            voice=self,
            unscripted=self._handle_unscripted_flow,
            responses=self.responses,
            flow_engine=flow_engine,
            classifier=intent_classifier,
            turns=self.turns,
            results=self._user_results,
            intent_step=intent_step,
            stt_down=None if stt_breaker is None else self._stt_still_down,
            control=lambda: self._control,
        )
        self._watchdog = SttWatchdog(
            clock=clock,
            stall_s=call.stt_stall_s,
            recovery_s=call.stt_recovery_s,
            on_stall=self._stt_stalled,
            on_recover=self._stt_recovered,
            on_give_up=self._stt_gave_up,
        )
        self._outbound: OutboundAudio | None = None
        self._inbound: InboundAudio | None = None
        self._recognition: RecognitionStream | None = None
        self._stt_results_dropped = 0
        self._paused = False  # the outbound is paused at a speech onset (two-stage barge-in)
        self._overlap_open = False  # the caller spoke over the bot's turn, no final heard yet
        self._backchannel_until: float | None = None  # drop that speech's results until then
        self.pauses = 0  # onsets that paused the bot
        self.resumes = 0  # of those, false alarms: the bot went on from where it paused
        self._shut_down = False
        self._drain_deadline: float | None = None  # clock time; set once by `drain_by`
        self._draining = asyncio.Event()

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
            listener = self.tasks.spawn(self._listen_stt(recognition), "stt_listener")
            watchdog = self.tasks.spawn(self._watchdog.run(), "stt_watchdog")
            dialogue = self.tasks.spawn(self._dialogue.run(), "dialogue")
            hangup = self.tasks.spawn(inbound_stream.wait_hangup(), "hangup")
            drain = self.tasks.spawn(self._drain_timer(), "drain")
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
                await self._wind_up(dialogue)
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
        if self._drain_deadline is None:
            self._drain_deadline = deadline
            self._draining.set()

    async def _drain_timer(self) -> None:
        await self._draining.wait()
        assert self._drain_deadline is not None
        delay = self._drain_deadline - self.clock.now()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _wind_up(self, dialogue: asyncio.Task[None]) -> None:
        """The drain deadline passed: cut the dialogue, say goodbye (bounded), end the call."""
        settings = self.dialogue_map.settings
        key = settings.drain_goodbye_key or settings.emergency_filler_key
        log.info(
            "call %s: drain timeout in state %s: goodbye %s, then hang-up",
            self.call_id,
            self.session_state.current_state_id,
            key,
        )
        await cancel_and_wait(dialogue, timeout=self._call.cancel_bound_s)
        self._player.interrupt()  # fillers cut, the cut turn's queued audio dropped
        if self.turns.ended:
            return
        self.turns.handle(TurnEvent.WIND_UP)
        self.metrics_logger.start_bot_only_turn()
        self.metrics_logger.set(route="drain_goodbye", state=self.session_state.current_state_id)
        outbound = self._player.outbound
        assert outbound is not None, "run() sets the outbound stream"

        async def goodbye() -> None:
            await self._player.play_clip(key, "answer")
            await outbound.drain()

        try:
            async with asyncio.timeout(self._call.apologise_timeout_s):
                await self.bot_turn(goodbye, interruptible=False)
        except TimeoutError:
            log.warning(
                "call %s: the drain goodbye did not finish within %.1f s",
                self.call_id,
                self._call.apologise_timeout_s,
            )
        finally:
            self.metrics_logger.emit_turn()
        if self.turns.allows(TurnEvent.END_CALL):
            self.turns.handle(TurnEvent.END_CALL)

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
            stt_results_dropped=self._stt_results_dropped,
        )

    # ------------------------------------------------------------------ the caller's side
    async def _listen_stt(self, recognition: RecognitionStream) -> None:
        async for event in recognition:
            if isinstance(event, SttResult):
                self._watchdog.heard(self.clock.now())  # echo too: STT is alive
                if self._stt_breaker is not None:
                    self._stt_breaker.success()
            elif not event.retryable and self._stt_breaker is not None:
                self._stt_breaker.failure(f"call {self.call_id}: {event}")
            if isinstance(event, SttResult) and not self.turns.hears_caller:
                # Heard while the bot spoke and nobody interrupted: echo or a backchannel.
                self._overlap_open = not event.is_final  # its final may come after the turn
                self._drop(event)
                continue
            if isinstance(event, SttResult) and self._late_backchannel(event):
                continue
            self._user_results.put_nowait(event)

    def _drop(self, event: SttResult) -> None:
        self._stt_results_dropped += 1
        self._observe(CallEventKind.STT_DROPPED, text=event.text)

    def _late_backchannel(self, event: SttResult) -> bool:
        """Whether `event` ends speech that began during an uninterrupted bot turn (dropped)."""
        until = self._backchannel_until
        if until is None:
            return False
        if self.clock.now() > until:
            self._backchannel_until = None
            return False
        if event.is_final:
            self._backchannel_until = None
        self._drop(event)
        return True

    # VoiceListener (called synchronously by the gateway)
    def on_speech_onset(self, at: float) -> None:
        """Maybe speech (tens of ms of it): pause an interruptible bot turn, keeping its place."""
        self._new_speech()
        task = self.current_playback_task
        outbound = self._outbound
        if self._paused or outbound is None or task is None or task.done() or not self.turns.bot_may_speak:
            return
        outbound.pause()  # silence from the next frame; the queue and its writers wait
        self._paused = True
        self.pauses += 1

    def on_speech_rejected(self, at: float) -> None:
        """Not speech after all (a cough, a click, a short backchannel): resume where it paused."""
        if self._resume():
            self.resumes += 1

    def _new_speech(self) -> None:
        if self.turns.floor is Floor.BOT_TURN:
            self._overlap_open = True  # over the bot: if it does not interrupt, a backchannel
        else:
            self._backchannel_until = None  # the caller speaks anew: their results are a turn

    def _resume(self) -> bool:
        outbound = self._outbound
        if not self._paused or outbound is None:
            return False
        self._paused = False
        outbound.resume()
        return True

    def on_speech_start(self, at: float) -> None:
        """Caller speech began: remember the onset (t1); barge in if the bot is talking."""
        self.turns.handle(TurnEvent.SPEECH_START, at)
        self._watchdog.speech_start(at)
        if (check := self._dialogue.machine_check) is not None:
            check.speech_start(at)
        self._new_speech()
        if not self.handle_barge_in():  # a no-op unless an interruptible bot turn is playing
            self._resume()  # paused, but the turn is not interruptible now (or already over)

    def on_speech_end(self, at: float) -> None:
        """Caller speech ended (STT decides where the utterance ends; this only tracks talking)."""
        self.turns.handle(TurnEvent.SPEECH_END, at)
        self._watchdog.speech_end(at)
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
            self.handle_barge_in()  # a no-op unless an interruptible bot turn is playing
        self._user_results.put_nowait(DtmfPress(digit, at))

    def handle_barge_in(self) -> bool:
        """Stop the bot now (spec 2.5); True if playback was cut."""
        task = self.current_playback_task
        if not self.turns.allows(TurnEvent.BARGE_IN) or task is None or task.done():
            return False
        self.turns.handle(TurnEvent.BARGE_IN)  # the bot may not write from this instant
        task.cancel()  # now, within this frame; `bot_turn` waits for the unwinding, bounded
        if self._cut is not None and not self._cut.done():
            self._cut.set_result(None)
        self._player.interrupt()  # fillers cut, queued audio dropped: the next frame is silence
        self._resume()  # the queue is gone: the next bot turn must not start paused
        self.metrics_logger.mark(Mark.BARGE_IN)
        self._observe(CallEventKind.BARGE_IN)
        return True

    # STT health (the watchdog's callbacks, in its task or in `_listen_stt`)
    async def _stt_still_down(self) -> bool:
        """At the call's start: whether the STT circuit is open and stays so for one probe
        (`probe_every_s + probe_timeout_s`): another call's stall opened it, and a healthy STT
        closes it on the next probe, so this call waits that long rather than fail at once."""
        breaker = self._stt_breaker
        assert breaker is not None
        if breaker.is_open:
            s = breaker.settings
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(s.probe_every_s + s.probe_timeout_s):
                    await breaker.wait_state("closed")
        return not breaker.allow()  # a refusal is counted

    def _stt_stalled(self, unheard_s: float) -> None:
        why = f"no recognition result for {unheard_s:.1f} s of the caller's speech"
        log.warning("call %s: STT stalled: %s", self.call_id, why)
        if self._stt_breaker is not None:
            self._stt_breaker.failure(f"call {self.call_id}: {why}")
        self._user_results.put_nowait(STTError(why, provider="stt", retryable=True))

    def _stt_recovered(self, stalled_s: float) -> None:
        log.info("call %s: STT recovered after %.1f s", self.call_id, stalled_s)

    def _stt_gave_up(self, stalled_s: float) -> None:
        why = f"no recognition result within {stalled_s:.1f} s of the stall"
        log.warning("call %s: STT did not recover: %s", self.call_id, why)
        self._user_results.put_nowait(STTError(why, provider="stt", retryable=False))

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
        cut = self._cut = asyncio.get_running_loop().create_future()
        if interruptible:
            self.current_playback_task = task
            if self.turns.caller_speaking:
                # The caller started talking before the answer was ready and is still talking:
                # their words must be heard, not talked over.
                self.handle_barge_in()
        try:
            await asyncio.wait({task, cut}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.current_playback_task = self._cut = None
            self._resume()  # a turn that ended (or was cancelled) while paused leaves no pause
            if not task.done() or cut.done():  # cut, or we are cancelled: bounded unwinding
                await cancel_and_wait(task, timeout=self._call.cancel_bound_s)
        interrupted = self.turns.floor is Floor.INTERRUPTED
        if not interrupted and self._overlap_open and self.turns.floor is Floor.BOT_TURN:
            # Speech began over this turn and did not interrupt it: its results still to come
            # are a backchannel ("ага"), not the caller's next turn.
            self._backchannel_until = self.clock.now() + _LATE_BACKCHANNEL_S
        self._overlap_open = False
        self.turns.handle(TurnEvent.PLAYBACK_DONE)
        if interrupted:
            self.metrics_logger.set(interrupted=True)
            return False
        task.result()
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
    def _on_floor(self, floor: Floor) -> None:
        self.session_state.turn_state = turn_state_of(floor)

    def _on_bot_audio(self, role: AudioRole) -> None:
        self.metrics_logger.mark(Mark.T6_FIRST_BOT_AUDIO)
        if role == "answer":
            self.metrics_logger.mark(Mark.ANSWER_AUDIO)

    def _observe(self, kind: CallEventKind, /, **data: EventValue) -> None:
        notify(self._observer, CallEvent(kind, self.clock.now(), data))


def _failure(task: asyncio.Task[None]) -> BaseException | None:
    """The exception a finished task ended with (None while running, cancelled or clean)."""
    return task.exception() if task.done() and not task.cancelled() else None


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
    call: CallSettings = field(default_factory=CallSettings)  # the service's bounds on one call
    intent_step: IntentStep | None = None  # the constrained step for unsure turns (None: none)
    # The service's circuit per provider (None: none): a call that starts while STT's is open
    # ends at once (emergency phrase); while the LLM's is open, answers fail without a request.
    stt_breaker: CircuitBreaker | None = None
    llm_breaker: CircuitBreaker | None = None


async def create_orchestrator_instance(
    call_id: str, services: CallServices, *, observer: Observer | None = None
) -> Orchestrator:
    """Build a fresh Orchestrator for `call_id` and await its async setup (spec 4.1).

    Raises `CallSetupError` when setup fails; whatever was created is shut down first.
    """
    llm = services.llm_factory(call_id)
    orchestrator = Orchestrator(
        call_id,
        dialogue_map=services.dialogue_map,
        flow_engine=services.flow_engine,
        intent_classifier=services.intent_classifier,
        tts_manager=services.tts_factory(call_id),
        stt_streamer=services.stt_factory(call_id),
        llm_manager=llm if services.llm_breaker is None else GuardedLLM(llm, services.llm_breaker),
        audio_cache=services.audio_cache,
        clock=services.clock,
        render=services.render,
        metrics_sink=services.metrics_sink,
        observer=observer,
        call=services.call,
        intent_step=services.intent_step,
        stt_breaker=services.stt_breaker,
    )
    try:
        async with asyncio.timeout(services.call.setup_timeout_s):
            await orchestrator._setup_connections()
    except asyncio.CancelledError:
        orchestrator.end_reason = "shutdown"
        await orchestrator.shutdown()
        raise
    except Exception as exc:
        orchestrator.end_reason = "setup_failed"  # what the service logs and counts for it too
        orchestrator.end_detail = f"{type(exc).__name__}: {exc}"
        await orchestrator.shutdown()
        raise CallSetupError(f"call {call_id}: setup failed: {exc!r}") from exc
    return orchestrator
