"""End of turn by speech timing (orchestrator/end_of_turn.py): split answers are one turn.

Virtual time throughout: scripted STT finals and VAD events at exact instants.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from orchestrator.clock import LoopClock
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.domain.models import SttResult
from orchestrator.end_of_turn import (
    EndOfTurn,
    ends_on_number,
    expects_number,
    final_hold,
    join_finals,
)
from orchestrator.turn_completion import looks_incomplete
from testkit.fakes import Say, SttFailure
from testkit.virtual_time import run_virtual
from tests.test_orchestrator import call, make_map

Step = Callable[[EndOfTurn], None]


def final(text: str, at: float) -> SttResult:
    return SttResult(text, is_final=True, confidence=0.9, kind="final", received_at=at)


def timeline(
    steps: list[tuple[float, Step]],
    *,
    hold: float = 0.0,
    incomplete_hold: float = 0.0,
    until: float = 10.0,
) -> list[tuple[float, str]]:
    """Run `steps` (at, action) on virtual time; returns (time, text) of the finals released.
    `hold`: a number-expecting state's hold of a final ending on a number; `incomplete_hold`:
    the hold of a final whose words cannot end a sentence (`final_hold`)."""

    async def main() -> list[tuple[float, str]]:
        loop = asyncio.get_running_loop()
        out: list[tuple[float, str]] = []
        eot = EndOfTurn(
            clock=LoopClock(),
            forward=lambda r: out.append((round(loop.time(), 3), r.text)) if r.is_final else None,
            hold=lambda r: final_hold(
                r.text, number_state=True, number_hold_s=hold, incomplete_hold_s=incomplete_hold
            ),
        )
        for at, step in steps:
            loop.call_at(at, step, eot)
        await asyncio.sleep(until)
        eot.close()
        return out

    return run_virtual(main)


def offer(text: str, at: float) -> tuple[float, Step]:
    return at, lambda e: e.result(final(text, at))


def partial(text: str, at: float) -> tuple[float, Step]:
    return at, lambda e: e.result(
        SttResult(text, is_final=False, confidence=0.5, kind="partial", received_at=at)
    )


def vad(kind: str, at: float, edge: float | None = None) -> tuple[float, Step]:
    """A VAD event reported at `at` about the instant `edge` (default `at`)."""
    t = at if edge is None else edge
    actions: dict[str, Step] = {
        "start": lambda e: e.speech_start(t),
        "end": lambda e: e.speech_end(t),
        "onset": lambda e: e.speech_onset(t),
        "rejected": lambda e: e.speech_rejected(t),
    }
    return at, actions[kind]


def test_a_final_after_the_caller_stopped_is_released_at_once() -> None:
    out = timeline([vad("start", 1.0), vad("end", 1.8), offer("да", 2.1)])
    assert out == [(2.1, "да")]


def test_a_final_in_the_vads_hangover_waits_only_for_the_speech_end() -> None:
    # The reverted attempt waited up to 3 s for a next final here: the final arrives 0.3 s after
    # the last voiced frame, the VAD reports the end 0.4 s after it (its hangover); no voice
    # followed the final, so it goes at the report.
    out = timeline([vad("start", 1.0), offer("хорошо", 2.3), vad("end", 2.4, edge=2.0)])
    assert out == [(2.4, "хорошо")]


def test_finals_of_one_answer_said_with_a_pause_are_joined() -> None:
    # "сто" (0.4 s), pause 0.4 s, "двадцать квадратных метров": SpeechKit finalises "сто" once the
    # caller already speaks again; the VAD (hangover 0.4 s) never saw the pause end the speech.
    out = timeline(
        [
            vad("start", 1.0),
            offer("сто", 1.9),
            partial("двадцать", 2.6),  # the recogniser hears the caller go on
            offer("двадцать квадратных метров", 3.7),
            vad("end", 3.8, edge=3.4),
        ],
        hold=1.0,
    )
    assert out == [(3.8, "сто двадцать квадратных метров")]


def test_a_number_waits_its_hold_and_speech_in_it_continues_the_turn() -> None:
    steps = [vad("start", 1.0), vad("end", 1.8, edge=1.4), offer("сто", 1.9)]
    steps += [
        vad("onset", 2.1),
        vad("start", 2.3, edge=2.1),
        partial("двадцать", 2.8),
        vad("end", 3.4, edge=3.0),
        offer("двадцать", 3.5),
    ]
    out = timeline(steps, hold=1.0)
    # "двадцать" ends on a number too: held until 1.0 s after the speech ended (3.0 + 1.0).
    assert out == [(4.0, "сто двадцать")]


def test_the_final_of_words_heard_after_a_held_number_is_awaited_past_the_final_wait() -> None:
    # Split corpus, seed 12: "100" (rejected onsets: too short), then "10 метров" whose quiet
    # end the VAD does not count: its final comes 1.03 s after the VAD's last voiced frame.
    # The recogniser's partial "10" showed new words, so their final is awaited (`words_wait_s`,
    # 2 s) and the turn is "110", not "100" then "10 метров" (with `final_wait_s` only: 3.58).
    steps = [vad("onset", 0.44), vad("rejected", 0.96, edge=0.66), vad("onset", 1.26)]
    steps += [offer("100", 1.42), vad("start", 1.56, edge=1.26), partial("10", 1.56)]
    steps += [vad("end", 2.98, edge=2.58), offer("10 метров", 3.61)]
    assert timeline(steps, hold=1.0) == [(3.61, "100 10 метров")]
    # No final for those words ever comes: bounded, 2 s after the speech end.
    assert timeline(steps[:-1], hold=1.0) == [(4.58, "100")]


def test_a_long_continuation_is_bounded_from_its_latest_words_not_the_held_final() -> None:
    # "100", then 3.2 s of "двадцать квадратных метров": the hold's bound (`max_hold_s`, 4 s)
    # counts from the recogniser's latest new words, so the held "100" (at 1.70) does not go
    # alone at 5.70 while the continuation is still being finalised (5.72).
    steps = [vad("onset", 0.86), vad("rejected", 1.14, edge=0.86), offer("100", 1.70)]
    steps += [vad("onset", 1.76), vad("start", 2.06, edge=1.76), partial("20", 2.04)]
    steps += [partial("20 квадратных", 3.0), vad("end", 4.94, edge=4.54)]
    assert timeline([*steps, offer("20 квадратных метров", 5.72)], hold=1.0) == [
        (5.72, "100 20 квадратных метров")
    ]
    # Still bounded when neither the final nor the VAD's end comes: 4 s after the latest words.
    assert timeline(steps[:-1], hold=1.0) == [(7.0, "100")]


def test_a_number_alone_goes_after_its_hold() -> None:
    out = timeline([vad("start", 1.0), vad("end", 1.8, edge=1.4), offer("сто", 1.9)], hold=1.0)
    assert out == [(2.4, "сто")]


def test_voice_after_a_final_without_a_final_of_its_own_is_waited_for_boundedly() -> None:
    # The caller's voice went on after "да" was final (a cough, a breath taken as speech) and no
    # final of its own comes: "да" goes 1 s (FINAL_WAIT_S) after that voice ended.
    out = timeline([vad("start", 1.0), offer("да", 1.7), vad("end", 2.4, edge=2.0)])
    assert out == [(3.0, "да")]


def test_a_short_run_after_a_held_number_is_voice_whose_final_is_awaited() -> None:
    # Too short to barge in ("двадцать" said fast), the VAD rejects it; it is still the caller.
    steps = [
        vad("start", 1.0),
        vad("end", 1.8, edge=1.4),
        offer("сто", 1.9),
        vad("onset", 2.0),
        vad("rejected", 2.2),
    ]
    assert timeline(steps, hold=1.0) == [(3.2, "сто")]  # its final never came: 1 s after it
    steps.append(offer("двадцать", 2.6))
    assert timeline(steps, hold=1.0) == [(3.2, "сто двадцать")]  # came: joined; the hold from 2.2


def test_no_final_is_held_without_bound_while_the_vad_says_speaking() -> None:
    out = timeline([vad("start", 1.0), offer("сто", 1.5), partial("двадцать", 2.0)], hold=1.0, until=20.0)
    assert out == [(6.0, "сто")]  # MAX_HOLD_S after the latest new words (the final: 1.5)


@pytest.mark.parametrize("hold", [0.0, 1.0])
def test_a_vad_stuck_in_speech_holds_a_final_only_the_final_wait(hold: float) -> None:
    # Line noise keeps the VAD in speech; no new words come: the final goes FINAL_WAIT_S after it.
    out = timeline([vad("start", 1.0), offer("сто", 1.5), partial("сто", 1.6)], hold=hold, until=20.0)
    assert out == [(2.5, "сто")]


def test_an_empty_final_is_neither_held_nor_joined() -> None:
    assert timeline([vad("start", 1.0), vad("end", 1.8), offer("", 2.1)]) == []
    steps = [vad("start", 1.0), vad("end", 1.8, edge=1.4), offer("сто", 1.9), offer(" ", 2.0)]
    assert timeline(steps, hold=1.0) == [(2.4, "сто")]


def test_a_joined_turn_counts_as_one_held() -> None:
    async def main() -> tuple[int, int]:
        eot = EndOfTurn(clock=LoopClock(), forward=lambda r: None, hold=lambda r: 1.0)
        eot.speech_start(0.0)
        eot.result(final("сто", 0.5))
        eot.result(final("двадцать", 0.9))
        eot.flush()
        return eot.finals_held, eot.finals_joined

    assert run_virtual(main) == (1, 1)


def test_without_any_vad_report_finals_are_not_held() -> None:
    out = timeline([offer("сто", 1.5), offer("двадцать", 2.5)], hold=1.0)
    assert out == [(1.5, "сто"), (2.5, "двадцать")]


# --- words that say the caller is not done (orchestrator/turn_completion.py) -------------------


def test_an_unfinished_final_in_the_pause_waits_and_the_rest_joins_it() -> None:
    # "мне нужно" (speech 1.0-1.6), pause 0.7 s, "к хирургу" (2.3-3.0). SpeechKit finalises
    # "мне нужно" at 2.0, in the pause: taken at once it is a turn of its own (the bot answers
    # half a sentence). Its words cannot end a sentence: held 1 s from the speech end (2.6); the
    # caller's voice at 2.3 then waits for the rest's final.
    steps = [
        vad("start", 1.0),
        vad("end", 2.0, edge=1.6),
        offer("мне нужно", 2.0),
        vad("onset", 2.34, edge=2.3),
        vad("start", 2.6, edge=2.3),
        partial("к", 2.7),
        vad("end", 3.4, edge=3.0),
        offer("к хирургу", 3.5),
    ]
    assert timeline(steps) == [(2.0, "мне нужно"), (3.5, "к хирургу")]  # without the hold
    assert timeline(steps, incomplete_hold=1.0) == [(3.5, "мне нужно к хирургу")]


def test_an_unfinished_final_alone_goes_after_its_hold_from_the_speech_end() -> None:
    # The caller stopped after "я хотел бы" and said nothing more: the turn is theirs 1 s after
    # their last voiced frame (1.6), not 1 s after the final arrived (2.0).
    steps = [vad("start", 1.0), vad("end", 2.0, edge=1.6), offer("я хотел бы", 2.0)]
    assert timeline(steps, incomplete_hold=1.0) == [(2.6, "я хотел бы")]


def test_a_complete_answer_is_not_held_by_the_incomplete_hold() -> None:
    # "да" is a whole answer: it goes when its final comes, and what the caller adds after the
    # pause ("всё верно") is a turn of its own (bench/README.md 4b: joining it would hold every
    # yes/no answer).
    steps = [vad("start", 1.0), vad("end", 1.7, edge=1.3), offer("да", 1.8)]
    steps += [vad("onset", 2.04, edge=2.0), vad("start", 2.3, edge=2.0), vad("end", 3.0, edge=2.6)]
    steps.append(offer("всё верно", 3.1))
    assert timeline(steps, incomplete_hold=1.0) == [(1.8, "да"), (3.1, "всё верно")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("мне нужно", True),
        ("я хотел бы", True),
        ("скажите", True),
        ("Скажите, пожалуйста", True),  # "пожалуйста" goes with any request
        ("запишите меня на", True),
        ("это по поводу", True),
        ("потому что", True),
        ("э-э", True),
        ("я хотела бы перенести", True),  # a modal, a transitive infinitive, no object yet
        ("двадцать", True),  # a round number a smaller one may follow
        ("100", True),
        ("я не", True),
        ("да", False),
        ("нет", False),
        ("подождите", False),
        ("да, пожалуйста", False),
        ("да, можно", False),
        ("нет, не нужно", False),
        ("я хочу записаться", False),  # intransitive: complete
        ("мне к терапевту", False),
        ("запишите меня на среду", False),
        ("а когда", False),  # a whole question
        ("а", True),  # "а" ... "сколько это стоит"
        ("а?", False),  # punctuated as a question: "pardon?"
        ("пять", False),
        ("в 10", False),
        ("", False),
    ],
)
def test_looks_incomplete(text: str, expected: bool) -> None:
    assert looks_incomplete(text) is expected


def test_final_hold_by_state_and_words() -> None:
    kw = {"number_hold_s": 0.8, "incomplete_hold_s": 1.0}
    assert final_hold("сто", number_state=True, **kw) == 0.8  # the map's hold for numbers
    assert final_hold("сто", number_state=False, **kw) == 1.0  # a dangling number elsewhere
    assert final_hold("мне нужно", number_state=True, **kw) == 1.0  # words, in any state
    assert final_hold("45 метров", number_state=True, **kw) == 0.0
    assert final_hold("мне нужно", number_state=False, number_hold_s=1.0, incomplete_hold_s=0.0) == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("сто", True),
        ("площадь 45", True),
        ("пятого", True),
        ("сорок пять метров", False),
        ("да", False),
        ("", False),
    ],
)
def test_ends_on_number(text: str, expected: bool) -> None:
    assert ends_on_number(text) is expected


@pytest.mark.parametrize(
    ("left", "right", "numbers", "joined"),
    [
        ("площадь 100", "20 квадратных метров", True, "площадь 120 квадратных метров"),
        ("2000", "300", True, "2300"),
        ("100", "5 метров", True, "105 метров"),
        ("в 10", "30", True, "в 10 30"),  # 30 does not fit in 10's zero: a time, two numbers
        ("100", "20", False, "100 20"),  # digits dictated in groups stay as said
        ("сто", "двадцать", True, "сто двадцать"),
        ("1,5", "00", True, "1,5 00"),
        ("", "20 метров", True, "20 метров"),
        ("сто ", "", False, "сто"),
    ],
)
def test_join_finals(left: str, right: str, numbers: bool, joined: str) -> None:
    assert join_finals(left, right, numbers=numbers) == joined


def test_which_states_expect_a_number() -> None:
    dmap = make_map()
    assert expects_number(dmap, "start")  # give_area carries a number entity
    assert not expects_number(dmap, "quote")  # yes/no


# --- whole calls (the Orchestrator wires the VAD and the STT listener) --------------------------


def said(run: object) -> list[str]:
    return [str(e.data["text"]) for e in run.events if e.kind == "user_said"]  # type: ignore[attr-defined]


def test_the_issues_case_one_turn_area_120() -> None:
    # "площадь сто" (0.4 s), pause 0.4 s, "двадцать квадратных метров"; the first final comes
    # 0.5 s after its speech, when the caller already speaks again.
    run = call(
        [
            Say(1.5, "площадь 100", duration=0.4, stt_delay=0.5),
            Say(2.3, "20 квадратных метров", duration=1.0),
        ],
        hangup_at=9.0,
    )
    # SpeechKit normalises the numbers to digits: "100" and "20" are one number, 120.
    assert said(run) == ["площадь 120 квадратных метров"]
    assert run.orchestrator.session_state.variables["price"] == 12000
    assert run.orchestrator.end_of_turn.finals_joined == 1
    final = run.records[-1]  # the call-end record reports both
    assert final["event"] == "call_end" and (final["finals_held"], final["finals_joined"]) == (1, 1)


def test_a_final_in_the_pause_waits_and_the_rest_of_the_number_joins_it() -> None:
    # The first final arrives in the 0.6 s pause, before the caller goes on.
    run = call(
        [Say(1.5, "площадь 100", duration=0.4, stt_delay=0.3), Say(2.5, "20 метров", duration=0.8)],
        hangup_at=9.0,
    )
    assert said(run) == ["площадь 120 метров"]
    assert run.orchestrator.session_state.variables["price"] == 12000


def test_a_complete_answer_is_taken_when_its_final_comes() -> None:
    run = call([Say(1.5, "площадь 45 метров", duration=0.6, stt_delay=0.3)], hangup_at=6.0)
    turn = run.turns()[1]
    assert turn["t2_stt_final"] == pytest.approx(2.4, abs=0.03)
    assert turn["t3_logic_start"] - turn["t2_stt_final"] < 0.05
    assert run.orchestrator.end_of_turn.finals_held == 0


@pytest.mark.parametrize(
    ("text", "setting", "hold"),
    [
        ("площадь 100", "turn_number_hold_ms", 0.8),  # a number where the state expects one
        ("мне нужно", "turn_incomplete_hold_ms", 0.7),  # words that cannot end a sentence
    ],
)
def test_a_held_final_waits_the_maps_hold(text: str, setting: str, hold: float) -> None:
    run = call(
        [Say(1.5, text, duration=0.4, stt_delay=0.3)],
        hangup_at=8.0,
        dmap=make_map(**{setting: round(hold * 1000)}),
    )
    turn = run.turns()[1]
    assert turn["t3_logic_start"] == pytest.approx(1.9 + hold, abs=0.03)  # speech end + the hold


def test_a_key_pressed_while_a_final_is_held_comes_after_it() -> None:
    # "площадь 100" is held for the number hold (speech end 1.9 + 1.0 s); the caller presses "1"
    # at 2.5: what they said is their turn first, the key then answers the quote.
    data = make_map().model_dump(by_alias=True, exclude_none=True)
    data["states"]["quote"]["dtmf"] = {"1": "agree"}
    run = call(
        [Say(1.5, "площадь 100", duration=0.4, stt_delay=0.3)],
        hangup_at=12.0,
        dmap=DialogueMap.model_validate(data),
        keys=[(2.5, "1")],
    )
    assert said(run) == ["площадь 100"]
    assert [t.get("dtmf", False) for t in run.turns()[1:]] == [False, True]
    assert run.orchestrator.session_state.current_state_id == "goodbye_ok"


def test_an_unfinished_request_and_its_rest_are_one_turn_in_a_call() -> None:
    # "скажите" (0.4 s), its final 0.3 s later in the 0.6 s pause, then "это дорого": one turn,
    # the FAQ's answer; with the map's incomplete hold 0, "скажите" alone is a turn first.
    script: list[Say | SttFailure] = [
        Say(1.5, "скажите", duration=0.4, stt_delay=0.3),
        Say(2.5, "это дорого", duration=0.6),
    ]
    run = call(script, hangup_at=9.0)
    assert said(run) == ["скажите это дорого"]
    assert run.orchestrator.end_of_turn.finals_joined == 1
    off = call(script, hangup_at=9.0, dmap=make_map(turn_incomplete_hold_ms=0))
    assert said(off) == ["скажите", "это дорого"]
