"""The dialogue loop (spec 4.4): the bot's move, then the caller's, until the call ends.

Each round is a reply and a listen:
- reply: one bot turn (greeting, answer, clarifying question, reprompt, emergency filler), with
  its metrics record; the reply decides whether the call ends after it (`end_reason`).
- listen: STT results taken one by one. A partial opens the caller's turn and is classified
  quickly (the leading intent and how many partials in a row it led); a final, the no-input
  timeout or an STT failure closes the listen and names the next reply.
Routing of a final (scripted path, clarify, FAQ, intent step, LLM) and its reply are
`orchestrator.routing.TurnRouter`'s; this module holds the loop, its replies that are not an
answer (greeting, reprompt, emergency phrase, voicemail) and what comes after a scripted turn.
Turn-taking moves only through `TurnTaking.handle()`, never by setting a flag.

DTMF (`DtmfPress` in the same queue as the STT events): keys and digit strings are read by the
`DigitCollector` (`orchestrator.digit_keys`); a complete key turn is routed here as its intent.
TRANSFER: after a scripted turn into an `action: TRANSFER` state, `orchestrator.transfer_step`
dials; a failed transfer goes on in the state's `on_transfer_failed` (its playlist played).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

from orchestrator.call_context import CallContext
from orchestrator.contracts import CallControl, FlowEngine, IntentClassifier, IntentStep
from orchestrator.dialogue_map.models import Transfer
from orchestrator.digit_keys import DigitCollector, DtmfPress, KeyTurn, UserEvent
from orchestrator.domain.errors import ClassifierError, ProviderError, STTError
from orchestrator.domain.models import IntentResult, SttResult, TranscriptEntry
from orchestrator.events import CallEventKind, EndReason
from orchestrator.machine_check import MachineCheck
from orchestrator.metrics import Mark
from orchestrator.responses import Responses
from orchestrator.routing import BotVoice, Reply, Route, TurnRouter, Unscripted
from orchestrator.transfer_step import dial_transfer
from orchestrator.turns import Floor, TurnEvent, TurnTaking

log = logging.getLogger(__name__)

__all__ = ["DialogueLoop"]


class DialogueLoop:
    """One call's dialogue; `run()` returns when the call should end (`end_reason` set)."""

    def __init__(
        self,
        ctx: CallContext,
        *,
        voice: BotVoice,
        unscripted: Unscripted,
        responses: Responses,
        flow_engine: FlowEngine,
        classifier: IntentClassifier,
        turns: TurnTaking,
        results: asyncio.Queue[UserEvent],
        intent_step: IntentStep | None = None,
        stt_down: Callable[[], Awaitable[bool]] | None = None,
        control: Callable[[], CallControl | None] = lambda: None,
    ) -> None:
        """`results`: the caller's STT events (`CallerSide._listen_stt` fills it); `stt_down`:
        whether the service's STT circuit is still open after a bounded wait for it to close
        (then the call ends at once, see `run`; None: no circuit); `control`: the call's
        `CallControl` for transfers (None: every transfer fails)."""
        self.end_reason: EndReason | None = None
        self.end_detail: str | None = None  # what failed, when a provider failure ends the call
        self._stt_down = stt_down
        self._voice, self._responses = voice, responses
        self._session, self._map, self._metrics = ctx.session, ctx.dialogue_map, ctx.metrics
        self._classifier, self._turns = classifier, turns
        self._clock, self._results, self._observe = ctx.clock, results, ctx.observe
        self._provider_timeout_s = ctx.call.provider_timeout_s
        self._router = TurnRouter(
            ctx,
            voice=voice,
            unscripted=unscripted,
            responses=responses,
            flow_engine=flow_engine,
            classifier=classifier,
            intent_step=intent_step,
        )
        self._control = control
        self._no_input_count = 0
        self._keys = DigitCollector(self._map, self._session, flow_engine)
        # Outbound calls screened for answering machines: the greeting waits for its verdict.
        self.machine_check: MachineCheck | None = None

    async def run(self) -> None:
        """Greeting, then listen and reply until a reply ends the call (then END_CALL).

        While the STT circuit stays open (`stt_down`) the call cannot be heard: instead of the
        greeting the caller hears the emergency phrase and the call ends ("stt_failure").
        """
        reply: Reply = self._greet
        if self._stt_down is not None and await self._stt_down():
            down = STTError("circuit open: STT is down, the call is not answered", provider="stt")
            reply = functools.partial(self._stt_failure, down)
        elif self.machine_check is not None:
            verdict = await self.machine_check.verdict()
            self._observe(CallEventKind.MACHINE_CHECK, verdict=verdict)
            if verdict == "machine":
                reply = self._voicemail
            while not self._results.empty():  # a person's "алло?" was an answer, not a turn
                self._results.get_nowait()
        while True:
            await reply()
            if self.end_reason is not None:
                self._turns.handle(TurnEvent.END_CALL)
                return
            reply = await self._listen()

    # ------------------------------------------------------------------ listening
    async def _listen(self) -> Reply:
        """Take STT results until one closes the caller's turn; return the bot's reply to it."""
        self._observe(CallEventKind.LISTENING, state=self._session.current_state_id)
        leader: str | None = None
        stable = 0  # partials in a row with the same leading intent
        while True:
            try:
                event = await self._next_user_event()
            except TimeoutError:
                if self._keys.keying:  # the caller paused between keys: what was keyed is the string
                    self._close_unfinished_turn()
                    self._turns.handle(TurnEvent.KEY)
                    return self._key_reply(self._keys.done(self._clock.now()))
                self._close_unfinished_turn()
                self._turns.handle(TurnEvent.NO_INPUT)
                return self._no_input
            if isinstance(event, DtmfPress):
                key_turn = self._keys.on_key(event)
                if key_turn is None:
                    continue
                reply = self._key_reply(key_turn)
                self._no_input_count = 0
                self._close_unfinished_turn()
                self._turns.handle(TurnEvent.KEY)
                return reply
            if isinstance(event, ProviderError):
                self._close_unfinished_turn()
                self._turns.handle(TurnEvent.STT_ERROR)
                return functools.partial(self._stt_failure, event)
            if not event.text.strip():
                continue  # noise the recogniser turned into nothing: not a turn
            self._no_input_count = 0
            if self._turns.floor is Floor.LISTENING:
                onset = self._turns.speech_onset
                self._metrics.start_turn(onset if onset is not None else event.received_at)
            if not event.is_final:
                self._turns.handle(TurnEvent.PARTIAL)
                leader, stable = await self._classify_partial(event, leader, stable)
                continue
            self._turns.handle(TurnEvent.FINAL)
            return functools.partial(self._user_turn, event, leader)

    def _close_unfinished_turn(self) -> None:
        """A turn that had partials but will get no final still gets its metrics record."""
        if self._turns.floor is Floor.HEARING:
            self._metrics.set(route="no_final")
            self._metrics.emit_turn()

    async def _next_user_event(self) -> UserEvent:
        """The next STT event or key; TimeoutError when the caller stays silent for the no-input
        timeout, or pauses past the inter-digit timeout while keying a digit string.

        Also bounded while a turn is open: a partial whose final never comes (noise the
        recogniser dropped, a stream reset) must not leave the line silent for good.
        """
        spec = self._keys.collecting()
        if self._keys.keying and spec is not None:
            async with asyncio.timeout(spec[1].inter_digit_timeout_s):
                return await self._results.get()
        timeout = self._map.settings.no_input_timeout_s
        if timeout is None:
            return await self._results.get()
        waiting_since = self._clock.now()
        while True:
            try:
                async with asyncio.timeout(timeout):
                    return await self._results.get()
            except TimeoutError:
                onset = self._turns.speech_onset
                if self._turns.caller_speaking or (onset is not None and onset >= waiting_since):
                    waiting_since = self._clock.now()  # the caller is talking: STT will follow
                    continue
                raise

    async def _classify_partial(
        self, result: SttResult, leader: str | None, stable: int
    ) -> tuple[str | None, int]:
        """Quick classification of a partial: the leading intent and its stability."""
        if len(result.text.strip()) < self._map.settings.partial_min_chars:
            return leader, stable
        self._metrics.mark(Mark.T3_LOGIC_START)
        try:
            async with asyncio.timeout(self._provider_timeout_s):
                _, new_leader = await self._classifier.classify_intent(
                    result.text, previous_leader=self._session.previous_intent_leader
                )
        except (ProviderError, TimeoutError):
            return leader, stable  # the final classification will retry; a partial is only a hint
        stable = stable + 1 if new_leader is not None and new_leader == leader else 0
        self._metrics.set(partial_leader=new_leader, leader_stable_partials=stable)
        return new_leader, stable

    # ------------------------------------------------------------------ keys
    def _key_reply(self, turn: KeyTurn) -> Reply:
        return functools.partial(self._key_turn, turn.intent, turn.text, turn.at)

    async def _key_turn(self, intent: IntentResult, text: str, at: float) -> None:
        """A turn the caller took with keys: routed as `intent`, as if said."""
        metrics = self._metrics
        metrics.start_turn(at)
        self._session.transcript.append(TranscriptEntry("user", text))
        metrics.set(text=text, dtmf=True, intent=intent.intent_id, state=self._session.current_state_id)
        route = await self._router.route_intent(intent)
        metrics.set(route=route, next_state=self._session.current_state_id)
        metrics.emit_turn()
        await self._after_scripted(route)

    # ------------------------------------------------------------------ replies
    async def _greet(self) -> None:
        state = self._map.state(self._session.current_state_id)
        self._metrics.start_bot_only_turn()
        self._metrics.set(route="greeting", state=self._session.current_state_id)
        await self._voice.bot_turn(lambda: self._responses.play_items(state.system_response.playlist))
        self._metrics.emit_turn()
        self._maybe_end_call("scripted")

    async def _voicemail(self) -> None:
        """An answering machine: the map's voicemail message after its greeting, then hang up."""
        playlist = self._map.settings.voicemail_playlist
        self.end_reason = "machine"
        if not playlist or self.machine_check is None:
            return
        await self.machine_check.wait_quiet()
        self._metrics.start_bot_only_turn()
        self._metrics.set(route="voicemail", state=self._session.current_state_id)
        await self._voice.bot_turn(lambda: self._responses.play_items(playlist), interruptible=False)
        self._metrics.emit_turn()

    async def _no_input(self) -> None:
        """The caller said nothing: reprompt, and after too many reprompts say goodbye and end."""
        settings = self._map.settings
        self._no_input_count += 1
        self._observe(CallEventKind.NO_INPUT, count=self._no_input_count)
        self._metrics.start_bot_only_turn()
        self._metrics.set(route="no_input", state=self._session.current_state_id)
        try:
            if self._no_input_count > settings.no_input_max_reprompts:
                goodbye = settings.no_input_goodbye_playlist
                await self._voice.bot_turn(lambda: self._responses.play_items(goodbye), interruptible=False)
                self.end_reason = "no_input"
                return
            state = self._map.state(self._session.current_state_id)
            reprompt = settings.no_input_playlist or state.system_response.playlist
            await self._voice.bot_turn(lambda: self._responses.play_items(reprompt))
        finally:
            self._metrics.emit_turn()

    async def _stt_failure(self, error: ProviderError) -> None:
        """The emergency phrase, not interruptible (the caller may talk on over a dead STT); a
        non-retryable failure then ends the call ("stt_failure"), the phrase its last words."""
        self._metrics.start_bot_only_turn()
        self._metrics.set(route="stt_failure", state=self._session.current_state_id)
        apology = functools.partial(self._responses.provider_failure, error, stage="stt")
        await self._voice.bot_turn(apology, interruptible=False)
        self._metrics.emit_turn()
        if not error.retryable:
            self.end_reason = "stt_failure"
            self.end_detail = f"stt: {error}"

    async def _user_turn(self, result: SttResult, partial_leader: str | None) -> None:
        metrics = self._metrics
        metrics.mark(Mark.T2_STT_FINAL, result.received_at)
        metrics.mark(Mark.T3_LOGIC_START, keep_first=False)  # the final's, not a partial's
        text = result.text.strip()
        self._session.transcript.append(TranscriptEntry("user", text))
        self._observe(CallEventKind.USER_SAID, text=text)
        metrics.set(text=text, stt_confidence=result.confidence, state=self._session.current_state_id)
        try:
            async with asyncio.timeout(self._provider_timeout_s):
                intent, leader = await self._classifier.classify_intent(
                    text, previous_leader=self._session.previous_intent_leader
                )
        except (ClassifierError, TimeoutError) as exc:
            await self._voice.bot_turn(
                functools.partial(self._responses.provider_failure, exc, stage="classifier")
            )
            metrics.emit_turn()
            return
        intent = self._keys.said(text) or intent  # digits said where the state collects them
        metrics.set(
            intent=intent.intent_id if intent else None,
            confidence=round(intent.score, 3) if intent else None,
            leader=leader,
            leader_matches_partial=leader is not None and leader == partial_leader,
        )
        route = await self._router.route(text, intent)
        self._session.previous_intent_leader = leader
        metrics.set(route=route, next_state=self._session.current_state_id)
        metrics.emit_turn()
        await self._after_scripted(route)

    async def _after_scripted(self, route: Route) -> None:
        """After a turn's reply: a TRANSFER state transfers, an END_CALL state ends the call."""
        state = self._map.state(self._session.current_state_id)
        if route == "scripted" and state.action == "TRANSFER" and state.transfer is not None:
            await self._transfer(state.transfer)
        else:
            self._maybe_end_call(route)

    async def _transfer(self, spec: Transfer) -> None:
        """Hand the caller over (its playlist was played); see the module docstring."""
        session, target = self._session, spec.dial_string()
        control = self._control()
        outcome = await dial_transfer(
            control, session, spec, self._router.last_intent, self._provider_timeout_s
        )
        self._observe(CallEventKind.TRANSFER, target=target, outcome=outcome)
        if outcome == "answered":
            self.end_reason = "transferred"
            return
        before, after = session.current_state_id, spec.on_transfer_failed
        session.state_history.append(before)
        session.current_state_id = after
        self._observe(CallEventKind.STATE, from_state=before, to_state=after)
        state = self._map.state(after)
        self._turns.handle(TurnEvent.TRANSFER_FAILED)
        self._metrics.start_bot_only_turn()
        self._metrics.set(route="transfer_failed", transfer=outcome, state=after)
        await self._voice.bot_turn(lambda: self._responses.play_items(state.system_response.playlist))
        self._metrics.emit_turn()
        self._maybe_end_call("scripted")

    def _maybe_end_call(self, route: Route) -> None:
        state = self._map.state(self._session.current_state_id)
        if route == "scripted" and state.action == "END_CALL":
            self.end_reason = "end_call"
            self._observe(CallEventKind.END_CALL, state=self._session.current_state_id)
