"""Turn-taking as an explicit state machine (in the style of h11's `_state.py`).

Two parties, one small machine each, each a transition table (data, below):

FLOOR, whose move it is. The call starts in RESPONDING: the bot has the first move (the greeting).

    RESPONDING --BOT_TURN_START--> BOT_TURN --PLAYBACK_DONE------------------> LISTENING
                                      |                                      |   PARTIAL
                                   BARGE_IN                                  v   v  |
                                      v                                     HEARING-+
                                  INTERRUPTED --PLAYBACK_DONE--> LISTENING
    LISTENING, HEARING --FINAL, NO_INPUT, STT_ERROR, KEY--> RESPONDING   (the bot's move: its reply)
    LISTENING --TRANSFER_FAILED--> RESPONDING   (nobody took a transfer: the bot goes on)
    LISTENING, RESPONDING --END_CALL--> ENDED   (RESPONDING: a machine, and no message to leave)
    every state --HANG_UP--> ENDED
    every state but ENDED --WIND_UP--> RESPONDING   (the service takes the floor for a last goodbye)

VOICE, the caller's voice activity as the gateway's VAD reports it: SILENT <-SPEECH_START/END-> SPEAKING.

Rules:
1. A (state, event) pair missing from its table is illegal: `handle()` raises `IllegalTurnEvent`
   and changes nothing. Nothing is inferred from combinations of flags.
2. Events of one machine never move the other. The couplings are here and nowhere else:
   - SPEECH_START records the speech onset (`speech_onset`, t1 of the caller's next turn).
   - PLAYBACK_DONE from BOT_TURN forgets the onset: speech that began while the bot spoke
     uninterrupted belonged to that turn (echo, a backchannel). From INTERRUPTED the onset is
     kept: the caller who barged in is starting their turn.
3. The bot writes audio only in BOT_TURN (`bot_may_speak`): from the BARGE_IN instant no task of
   the cut turn queues another byte.
4. The caller's words count as a turn only outside BOT_TURN (`hears_caller`); during BOT_TURN
   they are echo or a backchannel, and are dropped.
5. `SessionState.turn_state` (the spec's BOT_TURN/USER_TURN) mirrors FLOOR through the
   `on_change` callback, on every change and at construction, and is set nowhere else:
   BOT_TURN while the bot speaks, USER_TURN otherwise.
6. SPEECH_END while SILENT is legal and changes nothing (the VAD may have heard the start before
   the Orchestrator attached); SPEECH_START while SPEAKING is legal too and takes the new onset
   (an end the listener did not see): raising there would lose the barge-in it carries.
7. ENDED is final: only HANG_UP (a no-op there) is legal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from types import MappingProxyType

from orchestrator.domain.models import TurnState


class Floor(StrEnum):
    """Whose move it is."""

    RESPONDING = "RESPONDING"  # the bot prepares its reply (classification, routing)
    BOT_TURN = "BOT_TURN"  # the bot's playback runs (`current_playback_task`)
    INTERRUPTED = "INTERRUPTED"  # the caller barged in; the cut playback is unwinding
    LISTENING = "LISTENING"  # waiting for the caller; nothing heard yet
    HEARING = "HEARING"  # partial results arrived: the caller's turn is open, no final yet
    ENDED = "ENDED"


class Voice(StrEnum):
    """Whether the caller is talking (the gateway's VAD)."""

    SILENT = "SILENT"
    SPEAKING = "SPEAKING"


class TurnEvent(StrEnum):
    """What moves a machine."""

    SPEECH_START = "SPEECH_START"  # VAD: the caller started talking
    SPEECH_END = "SPEECH_END"  # VAD: the caller stopped
    PARTIAL = "PARTIAL"  # an STT partial was taken for the caller's turn
    FINAL = "FINAL"  # an STT final was taken: the caller's turn is complete
    NO_INPUT = "NO_INPUT"  # the no-input timeout passed (also with a partial and no final)
    KEY = "KEY"  # a DTMF key (or a keyed digit string) completed the caller's turn
    TRANSFER_FAILED = "TRANSFER_FAILED"  # nobody took a transfer: the bot takes the floor back
    STT_ERROR = "STT_ERROR"  # recognition failed (in-band STTError)
    BOT_TURN_START = "BOT_TURN_START"  # the bot's playback starts
    BARGE_IN = "BARGE_IN"  # the caller cut an interruptible bot turn off
    PLAYBACK_DONE = "PLAYBACK_DONE"  # the bot turn's playback ended (finished, failed or cut)
    END_CALL = "END_CALL"  # the dialogue decided to end the call after its last bot turn
    HANG_UP = "HANG_UP"  # the call is over (caller hung up, shutdown, error)
    # The service ends the call (drain timeout): whatever was going on was cancelled, and the bot
    # takes the floor for its goodbye.
    WIND_UP = "WIND_UP"


FLOOR_TRANSITIONS: Mapping[Floor, Mapping[TurnEvent, Floor]] = MappingProxyType(
    {
        Floor.RESPONDING: {
            TurnEvent.WIND_UP: Floor.RESPONDING,
            TurnEvent.BOT_TURN_START: Floor.BOT_TURN,
            TurnEvent.END_CALL: Floor.ENDED,
            TurnEvent.HANG_UP: Floor.ENDED,
        },
        Floor.BOT_TURN: {
            TurnEvent.WIND_UP: Floor.RESPONDING,
            TurnEvent.BARGE_IN: Floor.INTERRUPTED,
            TurnEvent.PLAYBACK_DONE: Floor.LISTENING,
            TurnEvent.HANG_UP: Floor.ENDED,
        },
        Floor.INTERRUPTED: {
            TurnEvent.WIND_UP: Floor.RESPONDING,
            TurnEvent.PLAYBACK_DONE: Floor.LISTENING,
            TurnEvent.HANG_UP: Floor.ENDED,
        },
        Floor.LISTENING: {
            TurnEvent.WIND_UP: Floor.RESPONDING,
            TurnEvent.PARTIAL: Floor.HEARING,
            TurnEvent.FINAL: Floor.RESPONDING,
            TurnEvent.KEY: Floor.RESPONDING,
            TurnEvent.TRANSFER_FAILED: Floor.RESPONDING,
            TurnEvent.NO_INPUT: Floor.RESPONDING,
            TurnEvent.STT_ERROR: Floor.RESPONDING,
            TurnEvent.END_CALL: Floor.ENDED,
            TurnEvent.HANG_UP: Floor.ENDED,
        },
        Floor.HEARING: {
            TurnEvent.WIND_UP: Floor.RESPONDING,
            TurnEvent.PARTIAL: Floor.HEARING,
            TurnEvent.FINAL: Floor.RESPONDING,
            TurnEvent.KEY: Floor.RESPONDING,
            TurnEvent.NO_INPUT: Floor.RESPONDING,
            TurnEvent.STT_ERROR: Floor.RESPONDING,
            TurnEvent.HANG_UP: Floor.ENDED,
        },
        Floor.ENDED: {
            TurnEvent.HANG_UP: Floor.ENDED,
        },
    }
)

VOICE_TRANSITIONS: Mapping[Voice, Mapping[TurnEvent, Voice]] = MappingProxyType(
    {
        Voice.SILENT: {
            TurnEvent.SPEECH_START: Voice.SPEAKING,
            TurnEvent.SPEECH_END: Voice.SILENT,
        },
        Voice.SPEAKING: {
            TurnEvent.SPEECH_START: Voice.SPEAKING,
            TurnEvent.SPEECH_END: Voice.SILENT,
        },
    }
)

VOICE_EVENTS = frozenset({TurnEvent.SPEECH_START, TurnEvent.SPEECH_END})


class FloorLost(Exception):
    """Bot audio was offered while the bot does not have the floor (rule 3).

    After a barge-in (floor INTERRUPTED) it only means a writer of the cut turn ran before its
    cancellation reached it, and is handled quietly; in any other state it is a bug.
    """

    def __init__(self, floor: Floor) -> None:
        super().__init__(f"turn-taking: the bot may not speak in {floor.value}")
        self.floor = floor


class IllegalTurnEvent(RuntimeError):
    """An event the current state does not allow: a bug in the code that sent it."""

    def __init__(self, event: TurnEvent, state: Floor | Voice) -> None:
        super().__init__(f"turn-taking: {event.value} is illegal in {state.value}")
        self.event = event
        self.state = state


def turn_state_of(floor: Floor) -> TurnState:
    """The spec's two-valued view of the floor (rule 5)."""
    return "BOT_TURN" if floor is Floor.BOT_TURN else "USER_TURN"


class TurnTaking:
    """One call's turn-taking: the FLOOR and VOICE machines and the caller's speech onset.

    `on_change(floor)` is called at construction and after every change of the floor.
    """

    __slots__ = ("floor", "voice", "speech_onset", "_on_change")

    def __init__(self, on_change: Callable[[Floor], None] | None = None) -> None:
        self.floor = Floor.RESPONDING
        self.voice = Voice.SILENT
        self.speech_onset: float | None = None  # clock time of the caller's current speech start
        self._on_change = on_change
        if on_change is not None:
            on_change(self.floor)

    def handle(self, event: TurnEvent, at: float | None = None) -> None:
        """Apply `event` (at clock time `at`, for SPEECH_START). Raises `IllegalTurnEvent`."""
        if event in VOICE_EVENTS:
            voice = VOICE_TRANSITIONS[self.voice].get(event)
            if voice is None:
                raise IllegalTurnEvent(event, self.voice)
            self.voice = voice
            if event is TurnEvent.SPEECH_START:
                self.speech_onset = at
            return
        before = self.floor
        floor = FLOOR_TRANSITIONS[before].get(event)
        if floor is None:
            raise IllegalTurnEvent(event, before)
        if event is TurnEvent.PLAYBACK_DONE and before is Floor.BOT_TURN:
            self.speech_onset = None  # rule 2: that speech belonged to the bot's turn
        self.floor = floor
        if floor is not before and self._on_change is not None:
            self._on_change(floor)

    def allows(self, event: TurnEvent) -> bool:
        """Whether `event` is legal now."""
        if event in VOICE_EVENTS:
            return event in VOICE_TRANSITIONS[self.voice]
        return event in FLOOR_TRANSITIONS[self.floor]

    @property
    def bot_may_speak(self) -> bool:
        """Rule 3: whether bot audio may be queued now."""
        return self.floor is Floor.BOT_TURN

    @property
    def hears_caller(self) -> bool:
        """Rule 4: whether an STT result arriving now can be the caller's turn."""
        return self.floor is not Floor.BOT_TURN

    @property
    def caller_speaking(self) -> bool:
        """Whether the VAD says the caller is talking."""
        return self.voice is Voice.SPEAKING

    @property
    def ended(self) -> bool:
        """Whether the call is over."""
        return self.floor is Floor.ENDED
