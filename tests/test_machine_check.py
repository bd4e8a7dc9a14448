"""The bot's own answering-machine check on virtual time: the detector alone (speech runs and
pauses), then whole outbound calls through the real Orchestrator with the caller's speech as
VAD-ed frames: a long greeting -> the voicemail message after it, then hang-up ("machine"); a
short "алло" -> the map's greeting ("human"); silence -> the greeting too."""

from __future__ import annotations

import asyncio

from orchestrator.clock import LoopClock
from orchestrator.machine_check import MachineCheck, MachineCheckSettings, Verdict
from testkit.fakes import Say
from testkit.virtual_time import run_virtual
from tests.test_orchestrator import CLIPS, call, label, make_map

CHECK = MachineCheckSettings(greeting_s=3.5, pause_s=0.8, silence_s=5.0)


def verdict_after(runs: list[tuple[float, float]]) -> tuple[Verdict, float]:
    """The verdict for speech runs (start, end) from t=0, and when it came."""

    async def main() -> tuple[Verdict, float]:
        loop = asyncio.get_running_loop()
        check = MachineCheck(LoopClock(), CHECK)
        t0 = loop.time()
        for start, end in runs:
            loop.call_at(t0 + start, check.speech_start, t0 + start)
            loop.call_at(t0 + end, check.speech_end, t0 + end)
        verdict = await check.verdict()
        return verdict, round(loop.time() - t0, 3)

    return run_virtual(main)


def test_a_short_hello_then_a_pause_is_a_person() -> None:
    assert verdict_after([(0.5, 1.1)]) == ("human", 1.9)  # the pause of 0.8 s after "алло?"


def test_a_long_greeting_is_a_machine_even_with_short_breaths() -> None:
    # 0.4 s breaths are no pause: one run from 0.3 s; a machine 3.5 s after it began.
    assert verdict_after([(0.3, 1.5), (1.9, 3.0), (3.4, 9.0)]) == ("machine", 3.8)


def test_two_hellos_with_a_pause_between_are_a_person() -> None:
    assert verdict_after([(0.2, 0.8), (2.0, 2.5)]) == ("human", 1.6)


def test_no_speech_at_all_is_silent() -> None:
    assert verdict_after([]) == ("silent", 5.0)


VOICEMAIL = [{"type": "cache", "key": "static:bye"}]


def test_a_machine_hears_the_voicemail_message_after_its_greeting_then_the_bot_hangs_up() -> None:
    greeting_end = 0.5 + 6.0
    run = call(
        [Say(0.5, "здравствуйте вы позвонили в компанию оставьте сообщение", duration=6.0)],
        dmap=make_map(voicemail_playlist=VOICEMAIL),
        machine_check=CHECK,
        hangup_at=30.0,
    )
    assert run.outcome.reason == "machine" and run.outcome.hang_up
    verdicts = [e.data["verdict"] for e in run.events if e.kind == "machine_check"]
    assert verdicts == ["machine"]
    assert run.sink.labels() == [label("static:bye")]  # never the greeting
    first = min(t for t, lab in run.sink.frames if lab == label("static:bye"))
    assert first >= greeting_end + CHECK.pause_s  # after the greeting (and its beep), not over it
    bye = [t for t, lab in run.sink.frames if lab == label("static:bye")]
    assert len(bye) == round(CLIPS["static:bye"][1] / 0.02)  # the whole message
    assert [t["route"] for t in run.turns()] == ["voicemail"]


def test_a_machine_and_no_voicemail_message_hangs_up_at_once() -> None:
    run = call([Say(0.5, "оставьте сообщение после сигнала", duration=6.0)], machine_check=CHECK)
    assert run.outcome.reason == "machine" and run.outcome.hang_up
    assert run.sink.frames == [] or all(lab == 0 for _, lab in run.sink.frames)


def test_a_person_who_says_hello_hears_the_greeting() -> None:
    run = call(
        [Say(0.5, "алло", duration=0.6)],
        dmap=make_map(voicemail_playlist=VOICEMAIL),
        machine_check=CHECK,
        hangup_at=5.0,
    )
    verdicts = [e.data["verdict"] for e in run.events if e.kind == "machine_check"]
    assert verdicts == ["human"]
    assert run.sink.labels()[0] == label("static:greeting")
    first = min(t for t, lab in run.sink.frames if lab == label("static:greeting"))
    assert first >= 0.5 + 0.6 + CHECK.pause_s
    assert run.outcome.reason == "caller_hangup"
    assert [t["route"] for t in run.turns()][:1] == ["greeting"]  # "алло" was no turn


def test_a_silent_answer_gets_the_greeting_after_the_silence() -> None:
    run = call([], dmap=make_map(voicemail_playlist=VOICEMAIL), machine_check=CHECK, hangup_at=8.0)
    assert [e.data["verdict"] for e in run.events if e.kind == "machine_check"] == ["silent"]
    assert run.sink.labels() == [label("static:greeting")]
