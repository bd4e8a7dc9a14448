"""Turn-taking state machine (orchestrator/turns.py): every legal transition, and illegal events raise."""

from __future__ import annotations

import pytest

from orchestrator.domain.models import MetricsLog
from orchestrator.turns import (
    FLOOR_TRANSITIONS,
    VOICE_EVENTS,
    VOICE_TRANSITIONS,
    Floor,
    IllegalTurnEvent,
    TurnEvent,
    TurnTaking,
    Voice,
    turn_state_of,
)

# Events that lead from the initial floor (RESPONDING) to each floor state.
PATH_TO: dict[Floor, list[TurnEvent]] = {
    Floor.RESPONDING: [],
    Floor.BOT_TURN: [TurnEvent.BOT_TURN_START],
    Floor.INTERRUPTED: [TurnEvent.BOT_TURN_START, TurnEvent.BARGE_IN],
    Floor.LISTENING: [TurnEvent.BOT_TURN_START, TurnEvent.PLAYBACK_DONE],
    Floor.HEARING: [TurnEvent.BOT_TURN_START, TurnEvent.PLAYBACK_DONE, TurnEvent.PARTIAL],
    Floor.ENDED: [TurnEvent.HANG_UP],
}
FLOOR_EVENTS = [e for e in TurnEvent if e not in VOICE_EVENTS]

# The expected tables, written out by hand from the module docstring's picture and rules (not
# derived from FLOOR_TRANSITIONS / VOICE_TRANSITIONS, so a wrong entry there fails here).
F, E = Floor, TurnEvent
EXPECTED_FLOOR: list[tuple[Floor, TurnEvent, Floor]] = [
    (F.RESPONDING, E.BOT_TURN_START, F.BOT_TURN),
    (F.RESPONDING, E.HANG_UP, F.ENDED),
    (F.RESPONDING, E.END_CALL, F.ENDED),  # a machine answered and there is no message to leave
    (F.BOT_TURN, E.BARGE_IN, F.INTERRUPTED),
    (F.BOT_TURN, E.PLAYBACK_DONE, F.LISTENING),
    (F.BOT_TURN, E.HANG_UP, F.ENDED),
    (F.INTERRUPTED, E.PLAYBACK_DONE, F.LISTENING),
    (F.INTERRUPTED, E.HANG_UP, F.ENDED),
    (F.LISTENING, E.PARTIAL, F.HEARING),
    (F.LISTENING, E.FINAL, F.RESPONDING),
    (F.LISTENING, E.NO_INPUT, F.RESPONDING),
    (F.LISTENING, E.STT_ERROR, F.RESPONDING),
    (F.LISTENING, E.END_CALL, F.ENDED),
    (F.LISTENING, E.HANG_UP, F.ENDED),
    (F.HEARING, E.PARTIAL, F.HEARING),
    (F.HEARING, E.FINAL, F.RESPONDING),
    (F.HEARING, E.NO_INPUT, F.RESPONDING),
    (F.HEARING, E.STT_ERROR, F.RESPONDING),
    (F.HEARING, E.HANG_UP, F.ENDED),
    (F.ENDED, E.HANG_UP, F.ENDED),
    # The service's last word (drain timeout): from anywhere but ENDED back to the bot's move.
    (F.RESPONDING, E.WIND_UP, F.RESPONDING),
    (F.BOT_TURN, E.WIND_UP, F.RESPONDING),
    (F.INTERRUPTED, E.WIND_UP, F.RESPONDING),
    (F.LISTENING, E.WIND_UP, F.RESPONDING),
    (F.HEARING, E.WIND_UP, F.RESPONDING),
    # A key (or a keyed digit string) completes the caller's turn like an STT final.
    (F.LISTENING, E.KEY, F.RESPONDING),
    (F.HEARING, E.KEY, F.RESPONDING),
    # Nobody took a transfer: the bot speaks again (the map's on_transfer_failed state).
    (F.LISTENING, E.TRANSFER_FAILED, F.RESPONDING),
]
EXPECTED_VOICE: list[tuple[Voice, TurnEvent, Voice]] = [
    (Voice.SILENT, E.SPEECH_START, Voice.SPEAKING),
    (Voice.SILENT, E.SPEECH_END, Voice.SILENT),
    (Voice.SPEAKING, E.SPEECH_START, Voice.SPEAKING),
    (Voice.SPEAKING, E.SPEECH_END, Voice.SILENT),
]
LEGAL_FLOOR = {(s, e) for s, e, _ in EXPECTED_FLOOR}


def test_the_tables_are_exactly_the_expected_ones() -> None:
    floor = {(s, e, t) for s, row in FLOOR_TRANSITIONS.items() for e, t in row.items()}
    voice = {(s, e, t) for s, row in VOICE_TRANSITIONS.items() for e, t in row.items()}
    assert floor == set(EXPECTED_FLOOR)
    assert voice == set(EXPECTED_VOICE)
    assert {E.SPEECH_START, E.SPEECH_END} == VOICE_EVENTS


def machine_in(floor: Floor) -> TurnTaking:
    turns = TurnTaking()
    for event in PATH_TO[floor]:
        turns.handle(event, 0.0)
    assert turns.floor is floor
    return turns


def test_every_state_is_reachable_and_has_a_row() -> None:
    assert set(PATH_TO) == set(Floor) == set(FLOOR_TRANSITIONS)
    assert set(VOICE_TRANSITIONS) == set(Voice)


@pytest.mark.parametrize(
    ("state", "event", "target"),
    EXPECTED_FLOOR,
    ids=lambda v: str(v),
)
def test_every_legal_floor_transition(state: Floor, event: TurnEvent, target: Floor) -> None:
    turns = machine_in(state)
    assert turns.allows(event)
    turns.handle(event, 1.0)
    assert turns.floor is target


@pytest.mark.parametrize(
    ("state", "event"),
    [(s, e) for s in Floor for e in FLOOR_EVENTS if (s, e) not in LEGAL_FLOOR],
    ids=lambda v: str(v),
)
def test_every_illegal_floor_event_raises_and_changes_nothing(state: Floor, event: TurnEvent) -> None:
    turns = machine_in(state)
    assert not turns.allows(event)
    with pytest.raises(IllegalTurnEvent, match=f"{event.value} is illegal in {state.value}"):
        turns.handle(event, 1.0)
    assert turns.floor is state


@pytest.mark.parametrize(
    ("state", "event", "target"),
    EXPECTED_VOICE,
    ids=lambda v: str(v),
)
def test_every_legal_voice_transition(state: Voice, event: TurnEvent, target: Voice) -> None:
    turns = TurnTaking()
    if state is Voice.SPEAKING:
        turns.handle(TurnEvent.SPEECH_START, 0.0)
    turns.handle(event, 1.0)
    assert turns.voice is target
    assert turns.floor is Floor.RESPONDING  # rule 2: a voice event never moves the floor


def test_speech_start_while_speaking_takes_the_new_onset() -> None:
    # Raising here used to lose the barge-in the second start carries (the end was not seen).
    turns = TurnTaking()
    turns.handle(TurnEvent.SPEECH_START, 1.0)
    turns.handle(TurnEvent.SPEECH_START, 2.0)
    assert turns.voice is Voice.SPEAKING
    assert turns.speech_onset == 2.0


def test_voice_events_are_legal_in_every_floor_state() -> None:
    for floor in Floor:
        turns = machine_in(floor)
        turns.handle(TurnEvent.SPEECH_START, 3.0)
        turns.handle(TurnEvent.SPEECH_END, 4.0)
        assert turns.floor is floor and turns.voice is Voice.SILENT


def test_the_onset_is_forgotten_after_an_uninterrupted_bot_turn_and_kept_after_barge_in() -> None:
    turns = machine_in(Floor.BOT_TURN)
    turns.handle(TurnEvent.SPEECH_START, 1.5)  # echo or a backchannel over the bot
    turns.handle(TurnEvent.PLAYBACK_DONE)
    assert turns.speech_onset is None
    turns = machine_in(Floor.BOT_TURN)
    turns.handle(TurnEvent.SPEECH_START, 1.5)
    turns.handle(TurnEvent.BARGE_IN)
    turns.handle(TurnEvent.PLAYBACK_DONE)
    assert turns.speech_onset == 1.5  # t1 of the caller's turn


def test_the_spec_turn_state_mirrors_the_floor_from_construction_on() -> None:
    seen: list[Floor] = []
    turns = TurnTaking(on_change=seen.append)
    for event in PATH_TO[Floor.HEARING] + [TurnEvent.FINAL, TurnEvent.BOT_TURN_START, TurnEvent.BARGE_IN]:
        turns.handle(event, 0.0)
    assert seen == [
        Floor.RESPONDING,
        Floor.BOT_TURN,
        Floor.LISTENING,
        Floor.HEARING,
        Floor.RESPONDING,
        Floor.BOT_TURN,
        Floor.INTERRUPTED,
    ]
    assert [turn_state_of(f) for f in seen] == [
        "USER_TURN",
        "BOT_TURN",
        "USER_TURN",
        "USER_TURN",
        "USER_TURN",
        "BOT_TURN",
        "USER_TURN",
    ]


def test_the_bot_speaks_and_the_caller_is_heard_by_floor() -> None:
    for floor in Floor:
        turns = machine_in(floor)
        assert turns.bot_may_speak is (floor is Floor.BOT_TURN)
        assert turns.hears_caller is (floor is not Floor.BOT_TURN)
        assert turns.ended is (floor is Floor.ENDED)


def test_metrics_log_start_turn_works_with_no_argument_as_in_the_spec() -> None:
    ticks = iter([10.0, 20.0])
    log = MetricsLog(trace_id="c", clock=lambda: next(ticks))
    log.t2_stt_final = 1.0
    log.start_turn()
    assert (log.turn_index, log.t1_first_user_audio, log.t2_stt_final) == (1, 10.0, None)
    log.start_turn(at=15.5)  # the caller's speech onset, when known
    assert (log.turn_index, log.t1_first_user_audio) == (2, 15.5)
    assert MetricsLog(trace_id="d").clock is not None  # time.monotonic by default
