"""The Orchestrator: one instance per call, the conductor of the dialogue (spec section 4).

This module is the call's lifecycle and the wiring of its parts, which live next to it:
- `orchestrator.caller_side` the Orchestrator's base: the gateway's voice and key signals, the
                          STT's results held to the end of the caller's turn;
- `orchestrator.bot_turns` the bot's turns (`BotVoice`): each a cancellable playback task;
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
from collections.abc import Awaitable, Callable

from orchestrator.answer import AnswerPipeline
from orchestrator.backchannel import answer_words
from orchestrator.barge_in import BargeIn
from orchestrator.bot_turns import BotTurns
from orchestrator.breaker import CircuitBreaker
from orchestrator.call_context import CallContext
from orchestrator.call_settings import CallSettings
from orchestrator.caller_side import CallerSide
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
    STTStreamer,
    TTSManager,
)
from orchestrator.dialogue import DialogueLoop
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.domain.models import SessionState
from orchestrator.events import (
    CallEvent,
    CallEventKind,
    CallOutcome,
    EndReason,
    EventValue,
    Observer,
    notify,
)
from orchestrator.interruption_settings import InterruptionSettings
from orchestrator.metrics import Mark, MetricsLogger, MetricsSink
from orchestrator.playback import AudioRole, PlaylistPlayer
from orchestrator.recognition_capabilities import ResendAccounting
from orchestrator.responses import Renderer
from orchestrator.tasks import TaskOwner, bounded
from orchestrator.turns import Floor, TurnEvent, TurnTaking, turn_state_of
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


class Orchestrator(CallerSide):
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
        super().__init__(call_id, clock=clock, dialogue_map=dialogue_map, call=call, stt_breaker=stt_breaker)
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
        # The call's parts call back into this Orchestrator through `weakly` (the dialogue speaks through
        # `BotTurns`, which holds nothing of it): it holds them, so strong callbacks would make the
        # whole call one reference cycle, freed only by a full collection (bridge/gc_policy.py).
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
        self._bot = BotTurns(
            ctx,
            turns=self.turns,
            tasks=self.tasks,
            barge_in=self.barge_in,
            player=self._player,
            answers=self._answers,
            render=render,
        )
        self.responses = self._bot.responses
        self._control: CallControl | None = None
        self._dialogue = DialogueLoop(
            ctx,
            voice=self._bot,
            unscripted=self._bot.unscripted,
            responses=self.responses,
            flow_engine=flow_engine,
            classifier=intent_classifier,
            turns=self.turns,
            results=self._user_results,
            intent_step=intent_step,
            stt_down=None if stt_breaker is None else self._stt_health.still_down,
            control=weakly(self._control_now),
        )
        self._outbound: OutboundAudio | None = None
        self._inbound: InboundAudio | None = None
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
        map's emergency phrase (`BotTurns.apologise`).
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
                    self._ctx, dialogue, player=self._player, turns=self.turns, bot_turn=self._bot.bot_turn
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
                await self._bot.apologise(self._outbound)
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
            stt_resend_dropped_ms=(
                self._recognition.resend_dropped_ms if isinstance(self._recognition, ResendAccounting) else 0
            ),
            stt_results_dropped=self.barge_in.results_dropped,
            finals_held=self.end_of_turn.finals_held,
            finals_joined=self.end_of_turn.finals_joined,
        )

    # ------------------------------------------------------------------ callbacks
    def _floor(self) -> Floor:
        return self.turns.floor

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


def _failure(task: asyncio.Task[None]) -> BaseException | None:
    """The exception a finished task ended with (None while running, cancelled or clean)."""
    return task.exception() if task.done() and not task.cancelled() else None
