"""The caller's side of one call: the gateway's voice and key signals, and the STT's results.

`CallerSide` is the Orchestrator's base (`orchestrator.orchestrator`): the `VoiceListener` the
gateway calls synchronously as the caller's audio arrives (speech onset, rejected, start, end;
DTMF keys), fanned out to turn-taking, the STT watchdog, the answering-machine check, barge-in
(`orchestrator.barge_in`) and the end of the caller's turn (`orchestrator.end_of_turn`); and
the `stt_listener` task's body (`_listen_stt`), which drops results heard while the bot spoke
uninterrupted (echoes, backchannels) and holds the rest until the caller's silence ends the
turn, then queues them for the dialogue (`_user_results`). It owns that queue, the end of turn,
the STT watchdog and its health wiring (`orchestrator.stt_health`); times are s on the call's
clock.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from orchestrator.barge_in import BargeIn
from orchestrator.breaker import CircuitBreaker
from orchestrator.call_settings import CallSettings
from orchestrator.contracts import Clock, RecognitionStream
from orchestrator.dialogue import DialogueLoop
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.digit_keys import DtmfPress, UserEvent
from orchestrator.domain.models import SessionState, SttResult
from orchestrator.end_of_turn import EndOfTurn, state_policy
from orchestrator.events import CallEventKind, EventValue
from orchestrator.machine_check import MachineCheck, MachineCheckSettings
from orchestrator.recognition_capabilities import AudioOrigin
from orchestrator.stt_health import SttHealth
from orchestrator.stt_watchdog import SttWatchdog
from orchestrator.turns import TurnEvent, TurnTaking
from orchestrator.weak import weakly

__all__ = ["CallerSide"]


class CallerSide:
    """The caller's side of the Orchestrator (see the module's docstring)."""

    # The Orchestrator's parts this side drives (set by its __init__).
    clock: Clock
    dialogue_map: DialogueMap
    session_state: SessionState
    turns: TurnTaking
    barge_in: BargeIn
    _dialogue: DialogueLoop

    if TYPE_CHECKING:

        def _observe(self, kind: CallEventKind, /, **data: EventValue) -> None: ...

    def __init__(
        self,
        call_id: str,
        *,
        clock: Clock,
        dialogue_map: DialogueMap,
        call: CallSettings,
        stt_breaker: CircuitBreaker | None,
    ) -> None:
        self._user_results: asyncio.Queue[UserEvent] = asyncio.Queue()
        self._stt_health = SttHealth(call_id, stt_breaker, self._user_results.put_nowait)
        self.end_of_turn = EndOfTurn(
            clock=clock,
            forward=self._user_results.put_nowait,
            **state_policy(dialogue_map, weakly(self._state_id)),
        )
        self._watchdog = SttWatchdog(
            clock=clock,
            stall_s=call.stt_stall_s,
            recovery_s=call.stt_recovery_s,
            on_stall=weakly(self._stt_stalled),
            on_recover=self._stt_health.recovered,
            on_give_up=self._stt_health.gave_up,
        )
        self._recognition: RecognitionStream | None = None
        # Where the recognition's audio times start on `clock` if it does not say (`AudioOrigin`):
        # when it was attached; the gateway pushes a frame every 20 ms of a live leg (silence
        # too), so its first frame comes within one frame after.
        self._attached_at: float | None = None

    def _state_id(self) -> str:
        return self.session_state.current_state_id

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

    def _stt_stalled(self, unheard_s: float) -> None:
        self.barge_in.stt_lost()  # sustained speech over the bot cuts it until words come again
        self._stt_health.stalled(unheard_s)
