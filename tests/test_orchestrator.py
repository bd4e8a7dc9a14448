"""Orchestrator timelines on virtual time: what the caller hears, frame by frame, and in what order.

Every clip is labelled audio (see testkit.fakes), so the outbound frame log shows exactly which
clip played when, where a filler was cut and whether anything leaked past a barge-in. The caller's
side is real plumbing too: `FakeInbound` pushes a 20 ms frame per pacer tick into the recognition
stream's `AudioBuffer`, and `FakeSTT` recognises the caller's lines from the audio it consumed.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from orchestrator.audio import FRAME_BYTES, FRAME_S
from orchestrator.cache.memory import InMemoryAudioCache
from orchestrator.call_settings import CallSettings
from orchestrator.clock import LoopClock
from orchestrator.contracts import CallControl, IntentClassifier, IntentStep
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.dialogue_map.templates import render_template
from orchestrator.domain.errors import CallSetupError, ClassifierError, STTError
from orchestrator.domain.models import AudioChunk, LLMStreamChunk, SttResult
from orchestrator.factory import CallServices, create_orchestrator_instance
from orchestrator.flow_engine import MapFlowEngine
from orchestrator.interruption_settings import InterruptionSettings
from orchestrator.machine_check import MachineCheckSettings
from orchestrator.orchestrator import (
    CallEvent,
    CallOutcome,
    Orchestrator,
)
from orchestrator.playback import Cover, FillerSequence, PlaylistPlayer
from orchestrator.tasks import TaskOwner
from orchestrator.turns import Floor, FloorLost
from testkit.fakes import (
    FakeInbound,
    FakeLLM,
    FakeRecognition,
    FakeSTT,
    FakeSynthesis,
    FakeTTS,
    KeywordClassifier,
    LLMAttempt,
    RecordingSink,
    Say,
    SttFailure,
    clip,
    make_playout,
)
from testkit.virtual_time import run_virtual

CLIPS = {
    "static:greeting": (101, 1.0),
    "static:intro": (102, 0.6),
    "filler:hmm": (103, 0.4),
    "static:rub": (104, 0.3),
    "static:bye": (105, 1.0),
    "static:ask_area": (106, 0.8),
    "static:faq_expensive": (107, 1.0),
    "filler:still_working": (108, 0.8),
    "filler:emergency": (109, 0.6),
    "static:non_secure": (110, 0.8),
    "static:error": (111, 0.6),
    "filler:state": (112, 0.4),
    "static:bye_ok": (113, 0.6),
    "static:drain_bye": (114, 0.8),
}
CACHED = {k: clip(lab, s) for k, (lab, s) in CLIPS.items()}
PRICE_LABEL = 200
LLM_LABEL = 900


def make_map(**settings: Any) -> DialogueMap:
    data: dict[str, Any] = {
        "name": "test",
        "initial_state": "start",
        "settings": {
            "neutral_filler_keys": ["filler:still_working"],
            "emergency_filler_key": "filler:emergency",
            "non_secure_response_key": "static:non_secure",
            "error_playlist": [{"type": "cache", "key": "static:error"}],
            "operation_timeout_s": 5.0,
            "llm_max_retries": 1,
            **settings,
        },
        "intents": {
            "give_area": {
                "examples": ["площадь 45 метров"],
                "entities": ["area"],
                "required_entities": ["area"],
                "clarify_playlist": [{"type": "cache", "key": "static:ask_area"}],
            },
            "refuse": {"examples": ["нет"]},
            "agree": {"examples": ["да"]},
        },
        "entities": {"area": {"type": "number", "min": 1, "max": 1000}},
        "states": {
            "start": {
                "system_response": {"playlist": [{"type": "cache", "key": "static:greeting"}]},
                "transitions": {"give_area": "quote", "refuse": "goodbye"},
            },
            "quote": {
                "system_response": {
                    "playlist": [
                        {"type": "cache", "key": "static:intro"},
                        {"type": "filler", "key": "filler:hmm"},
                        {"type": "tts", "text_template": "{{ session.variables.price }}"},
                        {"type": "cache", "key": "static:rub"},
                    ]
                },
                "fillers": ["filler:state"],
                "set_variables": {"price": "area * 100"},
                "transitions": {"agree": "goodbye_ok", "refuse": "goodbye"},
            },
            "goodbye": {
                "system_response": {"playlist": [{"type": "cache", "key": "static:bye"}]},
                "action": "END_CALL",
            },
            "goodbye_ok": {
                "system_response": {"playlist": [{"type": "cache", "key": "static:bye_ok"}]},
                "action": "END_CALL",
            },
        },
        "faq": {
            "expensive": {
                "questions": ["это дорого"],
                "answer": [{"type": "cache", "key": "static:faq_expensive"}],
            }
        },
        "audio": {key: key for key in CLIPS},
    }
    return DialogueMap.model_validate(data)


def keyword_classifier() -> KeywordClassifier:
    return KeywordClassifier(
        {"give_area": ["площад", "цен"], "refuse": ["нет", "не интересно"], "agree": ["давайте", "согласен"]},
        {"expensive": ["дорог"]},
    )


def label(key: str) -> int:
    return CLIPS[key][0]


@dataclass
class CallRun:
    outcome: CallOutcome
    orchestrator: Orchestrator
    sink: RecordingSink
    events: list[CallEvent]
    records: list[dict[str, Any]]
    stt: FakeSTT
    tts: FakeTTS
    llm: FakeLLM
    inbound: FakeInbound
    kinds: list[str] = field(default_factory=list)

    def turns(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["event"] == "turn"]

    def event_times(self, kind: str) -> list[float]:
        return [e.at for e in self.events if e.kind == kind]


async def run_call(
    script: list[Say | SttFailure],
    *,
    tts: FakeTTS | None = None,
    llm: FakeLLM | None = None,
    dmap: DialogueMap | None = None,
    hangup_at: float | None = 30.0,
    classifier: IntentClassifier | None = None,
    intent_step: IntentStep | None = None,
    stt_class: type[FakeSTT] = FakeSTT,
    stt_options: dict[str, Any] | None = None,
    cache: InMemoryAudioCache | None = None,
    call_settings: CallSettings | None = None,
    drain: tuple[float, float] | None = None,
    control: CallControl | None = None,
    keys: Sequence[tuple[float, str]] = (),
    machine_check: MachineCheckSettings | None = None,
    interruption: InterruptionSettings | None = None,
) -> CallRun:
    """`drain`: (at, deadline): the service begins draining at `at` with that deadline;
    `control`: the call's transfers; `keys`: (at, digit) DTMF the caller presses;
    `machine_check`: screen the call for an answering machine;
    `interruption`: how speech over the bot is judged (default: words from the STT decide)."""
    dmap = dmap or make_map()
    tts = tts or FakeTTS({"4500": PRICE_LABEL}, stream_label=LLM_LABEL)
    llm = llm or FakeLLM([LLMAttempt([(0.3, LLMStreamChunk("Да, работаем."))])])
    pacer, playout, sink = make_playout()
    inbound = FakeInbound([line for line in script if isinstance(line, Say)])
    pacer.add(inbound)  # the caller's frames on the same 20 ms tick as the bot's
    pacer.start()
    failures = [line for line in script if isinstance(line, SttFailure)]
    stt = stt_class(inbound, failures, **(stt_options or {}))
    events: list[CallEvent] = []
    records: list[dict[str, Any]] = []
    services = CallServices(
        dialogue_map=dmap,
        flow_engine=MapFlowEngine(dmap),
        intent_classifier=classifier or keyword_classifier(),
        audio_cache=cache or InMemoryAudioCache(CACHED),
        clock=LoopClock(),
        render=render_template,
        stt_factory=lambda cid: stt,
        tts_factory=lambda cid: tts,
        llm_factory=lambda cid: llm,
        metrics_sink=records.append,
        intent_step=intent_step,
        call=call_settings or CallSettings(),
        interruption=interruption or InterruptionSettings(),
    )
    orch = await create_orchestrator_instance("call-1", services, observer=events.append)
    loop = asyncio.get_running_loop()
    hangup = loop.call_at(hangup_at, inbound.hang_up) if hangup_at is not None else None
    if drain is not None:
        loop.call_at(drain[0], orch.drain_by, drain[1])
    for at, digit in keys:
        loop.call_at(at, orch.on_dtmf, digit, at)
    if machine_check is not None:
        orch.screen_for_machine(machine_check)
    try:
        outcome = await asyncio.wait_for(orch.run(inbound, playout, control), 300)
    finally:
        if hangup is not None:
            hangup.cancel()
        pacer.stop()
        playout.close()
    assert inbound.listener_errors == []  # no illegal turn-taking event from the VAD
    return CallRun(outcome, orch, sink, events, records, stt, tts, llm, inbound)


def call(script: list[Say | SttFailure], **kw: Any) -> CallRun:
    return run_virtual(lambda: run_call(script, **kw))


# --- greeting and pacing -------------------------------------------------------------------


def test_greeting_is_played_whole_and_paced() -> None:
    run = call([], hangup_at=3.0)
    assert run.sink.segments() == [(label("static:greeting"), 50)]
    times = [t for t, _ in run.sink.frames]
    gaps = {round(b - a, 6) for a, b in zip(times, times[1:], strict=False)}
    assert gaps == {0.02}  # one frame every 20 ms, silence included: never a burst, never a gap
    assert run.outcome.reason == "caller_hangup"
    assert not run.outcome.hang_up
    greeting = run.turns()[0]
    assert greeting["route"] == "greeting" and greeting["t6_first_bot_audio"] is not None


# --- scripted turns ----------------------------------------------------------------------


def test_scripted_turn_quotes_the_price_from_the_template() -> None:
    run = call([Say(2.0, "площадь 45 метров")], hangup_at=8.0)
    assert run.sink.labels() == [
        label("static:greeting"),
        label("static:intro"),
        PRICE_LABEL,
        label("static:rub"),
    ]
    assert "filler:hmm" not in {e.data.get("key") for e in run.events if e.kind == "play"}  # answer was ready
    assert run.tts.synthesized == ["4500"]
    state = run.orchestrator.session_state
    assert state.current_state_id == "quote" and state.variables["price"] == 4500
    assert state.state_history == ["start"]
    turn = run.turns()[1]
    assert turn["route"] == "scripted" and turn["intent"] == "give_area"
    assert turn["t1_first_user_audio"] == pytest.approx(2.0)  # VAD onset, not the STT final
    assert turn["t2_stt_final"] == pytest.approx(3.3)
    assert (
        turn["t1_first_user_audio"]
        <= turn["t2_stt_final"]
        <= turn["t3_logic_start"]
        <= turn["t5_tts_first_chunk"]
    )
    assert turn["t6_first_bot_audio"] >= turn["t3_logic_start"]
    assert turn["t4_llm_request"] is None
    assert turn["leader_matches_partial"] is True


def test_missing_entity_plays_the_clarifying_question_and_keeps_the_state() -> None:
    run = call([Say(2.0, "сколько стоит цена уборки")], hangup_at=6.0)
    assert run.sink.labels() == [label("static:greeting"), label("static:ask_area")]
    assert run.orchestrator.session_state.current_state_id == "start"
    assert run.turns()[1]["route"] == "clarify" and run.turns()[1]["missing_entities"] == ["area"]


def test_faq_answers_before_the_llm() -> None:
    run = call([Say(2.0, "это очень дорого")], hangup_at=6.0)
    assert run.sink.labels() == [label("static:greeting"), label("static:faq_expensive")]
    assert run.llm.calls == []
    assert run.turns()[1]["route"] == "faq"


def test_end_call_plays_the_whole_goodbye_then_ends() -> None:
    # The caller tries to talk over the goodbye: END_CALL states are not interruptible.
    run = call([Say(2.0, "нет не интересно"), Say(3.6, "подождите", vad=True)], hangup_at=None)
    assert run.outcome.reason == "end_call" and run.outcome.hang_up
    assert run.sink.segments()[-1] == (label("static:bye"), 50)
    last_audio = max(t for t, lab in run.sink.frames if lab)
    assert run.sink.frames[-1][0] >= last_audio  # the call ended after the last goodbye frame
    assert run.event_times("barge_in") == []
    final = run.records[-1]
    assert final["event"] == "call_end" and final["reason"] == "end_call"


# --- LLM fallback --------------------------------------------------------------------------


def test_llm_fallback_streams_the_answer_through_tts() -> None:
    llm = FakeLLM(
        [LLMAttempt([(0.3, LLMStreamChunk("Да, работаем.")), (0.1, LLMStreamChunk(" Без выходных."))])]
    )
    run = call([Say(2.0, "а вы работаете в субботу")], llm=llm, hangup_at=8.0)
    # The neutral filler covers the LLM + TTS wait and is cut when the first audio is ready.
    assert run.sink.labels() == [label("static:greeting"), label("filler:still_working"), LLM_LABEL]
    ready = run.turns()[1]["t5_tts_first_chunk"]
    assert max(t for t, lab in run.sink.frames if lab == label("filler:still_working")) <= ready
    assert run.llm.calls == [("а вы работаете в субботу", 0)]
    assert run.tts.stream_text == ["Да, работаем.", " Без выходных."]
    turn = run.turns()[1]
    assert turn["route"] == "llm" and turn["model_name"] == "fake-llm"
    assert (
        turn["t3_logic_start"]
        <= turn["t4_llm_request"]
        <= turn["t5_tts_first_chunk"]
        <= turn["answer_audio_at"]
    )
    assert turn["t6_first_bot_audio"] == turn["t3_logic_start"]  # the filler started at once
    assert run.orchestrator.session_state.transcript[-1].text == "Да, работаем. Без выходных."


def test_unsafe_first_chunk_aborts_plays_non_secure_response_and_retries() -> None:
    llm = FakeLLM(
        [
            LLMAttempt([(0.2, LLMStreamChunk("плохой ответ", is_safe=False, safety_reason="deny"))]),
            LLMAttempt([(0.2, LLMStreamChunk("Хороший ответ."))]),
        ]
    )
    run = call([Say(2.0, "расскажи что-нибудь")], llm=llm, hangup_at=8.0)
    assert [a for _, a in run.llm.calls] == [0, 1]
    assert run.llm.aborts >= 1
    assert run.sink.labels() == [
        label("static:greeting"),
        label("filler:still_working"),
        label("static:non_secure"),
        label("filler:still_working"),
        LLM_LABEL,
    ]
    assert "плохой ответ" not in run.tts.stream_text  # nothing unsafe reached the TTS


def test_unsafe_answers_beyond_the_retry_bound_end_with_the_non_secure_response() -> None:
    bad = LLMAttempt([(0.2, LLMStreamChunk("плохо", is_safe=False))])
    run = call([Say(2.0, "расскажи")], llm=FakeLLM([bad, bad]), hangup_at=8.0)
    assert [a for _, a in run.llm.calls] == [0, 1]
    assert run.sink.labels() == [
        label("static:greeting"),
        label("filler:still_working"),
        label("static:non_secure"),
        label("filler:still_working"),
        label("static:non_secure"),
    ]
    assert run.tts.aborted == 1


def test_streaming_tts_unavailable_plays_the_non_secure_response() -> None:
    tts = FakeTTS({"4500": PRICE_LABEL}, fail_stream_open=True)
    run = call([Say(2.0, "расскажи")], tts=tts, hangup_at=6.0)
    assert run.sink.labels() == [label("static:greeting"), label("static:non_secure")]
    assert run.llm.calls == []


# --- fillers -------------------------------------------------------------------------------


def test_fillers_cover_slow_tts_then_the_answer_cuts_the_neutral_filler() -> None:
    # Final at 3.3; intro 3.3-3.9; playlist filler 0.4 s; state filler 0.4 s; neutral filler
    # starts around 4.6 and the price is ready at 3.3 + 1.5 = 4.8: the neutral filler is cut.
    tts = FakeTTS({"4500": PRICE_LABEL}, latency=1.5)
    run = call([Say(2.0, "площадь 45 метров")], tts=tts, hangup_at=9.0)
    assert run.sink.labels() == [
        label("static:greeting"),
        label("static:intro"),
        label("filler:hmm"),
        label("filler:state"),
        label("filler:still_working"),
        PRICE_LABEL,
        label("static:rub"),
    ]
    ready = run.turns()[1]["t5_tts_first_chunk"]
    assert ready == pytest.approx(4.8)
    neutral = [t for t, lab in run.sink.frames if lab == label("filler:still_working")]
    assert max(neutral) <= ready  # no filler frame after the answer was ready
    assert len(neutral) < 40  # cut, not played to its end
    first_answer = min(t for t, lab in run.sink.frames if lab == PRICE_LABEL)
    assert first_answer - ready <= 0.02 + 1e-9  # the answer starts at the very next frame
    assert "filler_cut" in [e.kind for e in run.events]


def test_global_timeout_loops_neutral_fillers_then_plays_the_emergency_filler() -> None:
    tts = FakeTTS({"4500": PRICE_LABEL}, latency=60.0)
    run = call([Say(2.0, "площадь 45 метров"), Say(10.0, "это дорого")], tts=tts, hangup_at=14.0)
    labels = run.sink.labels()
    assert labels[:4] == [
        label("static:greeting"),
        label("static:intro"),
        label("filler:hmm"),
        label("filler:state"),
    ]
    emergency_at = min(t for t, lab in run.sink.frames if lab == label("filler:emergency"))
    assert emergency_at == pytest.approx(3.3 + 5.0, abs=0.05)  # the map's operation_timeout_s
    neutral = [t for t, lab in run.sink.frames if lab == label("filler:still_working")]
    assert len(neutral) > 2 * 40  # the 0.8 s neutral filler looped
    assert PRICE_LABEL not in labels and label("static:rub") not in labels
    assert labels[-1] == label("static:faq_expensive")  # and the call goes on


# --- barge-in ------------------------------------------------------------------------------


# The VAD alone decides (confirmed speech cancels): for tests of what follows a cut, at the instant
# the speech is confirmed.
VAD_DECIDES = InterruptionSettings(use_partials=False)


def test_barge_in_stops_the_bot_within_one_frame_and_the_turn_is_heard() -> None:
    run = call([Say(0.5, "площадь 45 метров")], hangup_at=6.0, interruption=VAD_DECIDES)
    barge = run.event_times("barge_in")
    assert barge == [pytest.approx(0.5)]
    greeting = [t for t, lab in run.sink.frames if lab == label("static:greeting")]
    assert max(greeting) <= 0.5  # no greeting frame after the cancellation instant
    assert len(greeting) == 25
    assert run.sink.labels()[1:] == [label("static:intro"), PRICE_LABEL, label("static:rub")]
    assert run.turns()[0]["interrupted"] is True


def test_a_false_alarm_pauses_the_greeting_and_it_resumes_where_it_stopped() -> None:
    # "ага" for 0.3 s: announced at its onset, never confirmed (too short), rejected at its end.
    run = call([Say(0.4, "ага", duration=0.3, vad=False, onset=True)], hangup_at=4.0)
    greeting = [t for t, lab in run.sink.frames if lab == label("static:greeting")]
    assert len(greeting) == 50  # the whole greeting: nothing dropped ...
    assert run.sink.segments() == [(label("static:greeting"), 50)]  # ... nor repeated
    # Silent from the next frame after the onset until the rejection, then on again.
    assert not [t for t in greeting if 0.42 < t < 0.7]
    assert max(greeting) == pytest.approx(1.0 + 0.3, abs=0.03)  # later by the pause, no more
    assert run.event_times("barge_in") == []
    assert (run.orchestrator.barge_in.pauses, run.orchestrator.barge_in.resumes) == (1, 1)


def numbered(first: int, seconds: float) -> AudioChunk:
    """`seconds` of audio whose frame i is labelled `first + i`: frame order shows on the line."""
    frames = round(seconds / FRAME_S)
    sample = FRAME_BYTES // 2
    return AudioChunk(
        b"".join((first + i).to_bytes(2, "little", signed=True) * sample for i in range(frames))
    )


def numbered_greeting(seconds: float) -> InMemoryAudioCache:
    return InMemoryAudioCache({**CACHED, "static:greeting": numbered(1000, seconds)})


def greeting_frames(run: CallRun) -> list[tuple[float, int]]:
    return [(t, lab) for t, lab in run.sink.frames if 1000 <= lab < 2000]


def test_a_resumed_greeting_goes_on_with_the_next_unsent_frame_at_the_next_tick() -> None:
    # A rejected run (0.4-0.7 s): silence from the frame after the onset, then frame k+1 after
    # frame k, at the first tick after the rejection: nothing repeated, skipped or added.
    run = call(
        [Say(0.4, "ага", duration=0.3, vad=False, onset=True)], hangup_at=4.0, cache=numbered_greeting(1.0)
    )
    frames = greeting_frames(run)
    assert [lab for _, lab in frames] == list(range(1000, 1050))
    times = [t for t, _ in frames]
    gaps = [(a, b) for a, b in zip(times, times[1:], strict=False) if b - a > FRAME_S + 1e-6]
    assert len(gaps) == 1  # one pause
    (last, first), rejected = gaps[0], 0.4 + 0.3
    assert last <= 0.42 + 1e-6  # quiet from the frame after the onset
    assert rejected < first <= rejected + FRAME_S + 1e-6  # resumed at the very next tick
    assert (run.orchestrator.barge_in.pauses, run.orchestrator.barge_in.resumes) == (1, 1)


def test_once_the_stt_gave_words_speech_with_none_resumes_the_greeting() -> None:
    # "ага" (words: the STT works), then 0.8 s of confirmed sound the STT finds no words in (a
    # cough, noise): the greeting pauses and goes on when no words came by the 900 ms window's
    # end and final_wait_ms (400) after the sound, none of it lost (before, that sound cut the
    # greeting).
    script = [Say(0.3, "ага", duration=0.3, stt_delay=0.1), Say(2.0, "", duration=0.8)]
    run = call(script, hangup_at=6.0, cache=numbered_greeting(3.0))
    frames = greeting_frames(run)
    assert [lab for _, lab in frames] == list(range(1000, 1150))
    assert run.event_times("barge_in") == []
    assert not [t for t, _ in frames if 2.02 < t < 3.2 - 1e-6]  # paused over the sound ...
    assert [t for t, _ in frames if 3.2 - 1e-6 <= t <= 3.22 + 1e-6]  # ... on again at the wait's end


def test_while_the_stt_gave_no_words_sustained_speech_cuts_the_greeting() -> None:
    # The STT not known to work (no words and no answer from its service on this call yet):
    # 0.9 s of confirmed speech (`sustained_start_ms`) cancels, so a caller is heard even when
    # the STT is down.
    run = call(
        [Say(0.5, "", duration=1.2)],
        hangup_at=4.0,
        cache=numbered_greeting(3.0),
        stt_options={"answers": False},
    )
    assert run.event_times("barge_in") == [pytest.approx(0.5 + 0.9, abs=0.021)]
    assert max(t for t, _ in greeting_frames(run)) <= 0.52


def test_an_stt_that_answered_keeps_the_greeting_through_speech_with_no_words() -> None:
    # The same 1.2 s of sound, but the recognition's service answered as its stream opened
    # (the default FakeSTT, as SpeechKit): the STT works and found no words in it (a cough, line noise), so
    # the greeting pauses over it and goes on, whole and in order.
    run = call(
        [Say(0.5, "", duration=1.2)],
        hangup_at=5.0,
        cache=numbered_greeting(3.0),
    )
    assert run.event_times("barge_in") == []
    assert [lab for _, lab in greeting_frames(run)] == list(range(1000, 1150))
    assert (run.orchestrator.barge_in.pauses, run.orchestrator.barge_in.resumes) == (1, 1)


def test_an_stt_answer_that_comes_after_the_speech_was_confirmed_still_counts() -> None:
    # A slow connect: the service's first answer comes 1.0 s into the call, after the VAD
    # confirmed the sound (0.8 s) but before its sustained deadline (0.5 + 0.9 s): at the
    # deadline the STT is known to work, so the sound with no words does not cut the greeting.
    run = call(
        [Say(0.5, "", duration=1.2)],
        hangup_at=5.0,
        cache=numbered_greeting(3.0),
        stt_options={"answer_delay_s": 1.0},
    )
    assert run.event_times("barge_in") == []
    assert [lab for _, lab in greeting_frames(run)] == list(range(1000, 1150))


@pytest.mark.parametrize("heard, cut", [("4500", False), ("4600", True)])
def test_the_bots_own_words_recognised_from_its_echo_do_not_cut_it(heard: str, cut: bool) -> None:
    # The price (TTS "4500", 2 s from 3.9) echoes loudly enough for the VAD and the STT: its
    # final "4500" is the bot's own words (the Orchestrator knows the text it plays), not a cut;
    # other words at the same instant are the caller's and cut it.
    tts = FakeTTS({"4500": PRICE_LABEL}, seconds_per_char=0.5)
    script = [Say(2.0, "площадь 45 метров"), Say(4.2, heard, duration=0.4, stt_delay=0.1)]
    run = call(script, tts=tts, hangup_at=8.0)
    price = [t for t, lab in run.sink.frames if lab == PRICE_LABEL]
    if cut:
        assert run.event_times("barge_in") == [pytest.approx(4.2 + 0.4 + 0.1, abs=0.021)]
        assert max(price) <= 4.22
    else:
        assert run.event_times("barge_in") == []
        assert len(price) == 100  # the whole price, paused over the echo and resumed


@pytest.mark.parametrize("heard, cut", [("клининговая компания", False), ("подождите", True)])
def test_a_cached_clips_words_recognised_from_its_echo_do_not_cut_it(heard: str, cut: bool) -> None:
    # The greeting is a cached clip: its words are the map's `audio` text for its key, so their
    # echo recognised by the STT is the bot's own (not a cut); other words are the caller's.
    dmap = make_map()
    dmap.audio["static:greeting"] = "Здравствуйте! Это клининговая компания «Чистый дом»."
    script = [Say(1.0, heard, duration=0.4, stt_delay=0.1)]
    run = call(script, dmap=dmap, hangup_at=5.0, cache=numbered_greeting(3.0))
    if cut:
        assert run.event_times("barge_in") == [pytest.approx(1.0 + 0.4 + 0.1, abs=0.021)]
    else:
        assert run.event_times("barge_in") == []
        assert [lab for _, lab in greeting_frames(run)] == list(range(1000, 1150))  # whole, in order


def test_content_words_cancel_the_paused_bot_and_the_turn_is_heard() -> None:
    # Confirmed speech pauses the bot; its first partial with content words cancels the turn.
    run = call([Say(0.5, "площадь 45 метров")], hangup_at=6.0)
    greeting = [t for t, lab in run.sink.frames if lab == label("static:greeting")]
    assert max(greeting) <= 0.52  # quiet from the speech's frame ...
    barge = run.event_times("barge_in")
    # ... cut on the words: the fake STT's first partial ("площадь", one word outside the
    # backchannel list: held paused) comes a third into the line, its second ("площадь 45") two.
    assert barge == [pytest.approx(0.5 + 2 / 3)]
    assert run.sink.labels()[1:] == [label("static:intro"), PRICE_LABEL, label("static:rub")]
    assert run.turns()[0]["interrupted"] is True


def test_backchannel_words_resume_the_paused_bot() -> None:
    # "ну да" confirmed as speech, its partials only backchannel words: the greeting goes on whole.
    run = call([Say(0.5, "ну да", duration=0.6, stt_delay=0.2)], hangup_at=4.0)
    greeting = [t for t, lab in run.sink.frames if lab == label("static:greeting")]
    assert run.sink.segments()[0] == (label("static:greeting"), 50)  # nothing dropped nor repeated
    assert run.event_times("barge_in") == []
    assert not [t for t in greeting if 0.52 < t < 0.6]  # paused at the speech ...
    assert max(greeting) < 1.0 + 0.6  # ... and resumed on the words, within the window
    assert run.orchestrator.barge_in.resumes >= 1


def test_a_true_interruption_pauses_at_onset_and_cancels_when_confirmed() -> None:
    run = call(
        [Say(0.5, "площадь 45 метров", onset=True, start_delay=0.2)], hangup_at=6.0, interruption=VAD_DECIDES
    )
    greeting = [t for t, lab in run.sink.frames if lab == label("static:greeting")]
    assert max(greeting) <= 0.52  # quiet from the onset's frame, not the confirmation's
    assert run.event_times("barge_in") == [pytest.approx(0.7)]
    assert (run.orchestrator.barge_in.pauses, run.orchestrator.barge_in.resumes) == (1, 0)
    assert run.sink.labels()[1:] == [label("static:intro"), PRICE_LABEL, label("static:rub")]
    assert run.turns()[0]["interrupted"] is True


def test_a_non_interruptible_turn_is_not_paused() -> None:
    data = make_map().model_dump(mode="json", exclude_unset=True)
    data["states"]["start"]["interruptible"] = False
    run = call(
        [Say(0.4, "ага", duration=0.3, vad=False, onset=True)],
        dmap=DialogueMap.model_validate(data),
        hangup_at=3.0,
    )
    greeting = [t for t, lab in run.sink.frames if lab == label("static:greeting")]
    assert run.orchestrator.barge_in.pauses == 0
    assert len(greeting) == 50 and max(greeting) == pytest.approx(1.0, abs=0.03)  # played straight through


def test_a_backchannel_whose_final_comes_after_the_bot_finished_is_dropped() -> None:
    # The case: "ага" near the end of the greeting, too short to barge in; its final
    # arrives after the greeting ended. It is not the caller's next turn.
    run = call([Say(0.8, "ага", duration=0.3, vad=False, onset=True, stt_delay=0.4)], hangup_at=4.0)
    assert run.sink.labels() == [label("static:greeting")]
    assert "ага" in [e.data["text"] for e in run.events if e.kind == "stt_dropped"]
    assert run.orchestrator.session_state.transcript == []


def test_speech_begun_after_the_bot_finished_is_heard_despite_an_earlier_backchannel() -> None:
    run = call(
        [Say(0.8, "ага", duration=0.3, vad=False, onset=True, stt_delay=0.1), Say(1.4, "площадь 45 метров")],
        hangup_at=6.0,
    )
    assert run.sink.labels()[1:] == [label("static:intro"), PRICE_LABEL, label("static:rub")]


def test_speech_over_an_uninterrupted_bot_turn_is_not_taken_as_a_turn() -> None:
    # No VAD report (too short to count), so no barge-in: the STT result is dropped as a backchannel.
    run = call([Say(0.2, "ага", duration=0.3, vad=False)], hangup_at=4.0)
    assert run.sink.labels() == [label("static:greeting")]
    assert [e.data["text"] for e in run.events if e.kind == "stt_dropped"] == ["ага"]
    assert run.orchestrator.session_state.transcript == []


# --- provider failures -------------------------------------------------------------------


def test_stt_failure_plays_the_emergency_filler_and_the_call_goes_on() -> None:
    err = STTError("stream reset", provider="fake-stt", retryable=True)
    run = call([SttFailure(2.0, err), Say(4.0, "это дорого")], hangup_at=8.0)
    assert run.sink.labels() == [
        label("static:greeting"),
        label("filler:emergency"),
        label("static:faq_expensive"),
    ]


def test_fatal_stt_failure_ends_the_call_cleanly() -> None:
    err = STTError("bad credentials", provider="fake-stt", retryable=False)
    run = call([SttFailure(2.0, err)], hangup_at=None)
    assert run.outcome.reason == "stt_failure" and run.outcome.hang_up
    assert run.sink.labels() == [label("static:greeting"), label("filler:emergency")]


def test_tts_failure_plays_the_emergency_filler() -> None:
    tts = FakeTTS({"4500": PRICE_LABEL}, fail_synth=True)
    run = call([Say(2.0, "площадь 45 метров"), Say(6.0, "это дорого")], tts=tts, hangup_at=10.0)
    assert run.sink.labels() == [
        label("static:greeting"),
        label("static:intro"),
        label("filler:emergency"),
        label("static:faq_expensive"),
    ]


def test_llm_failure_plays_the_emergency_filler() -> None:
    llm = FakeLLM([LLMAttempt(error_after=0.5)])
    run = call([Say(2.0, "расскажи анекдот"), Say(6.0, "это дорого")], llm=llm, hangup_at=10.0)
    assert run.sink.labels() == [
        label("static:greeting"),
        label("filler:still_working"),
        label("filler:emergency"),
        label("static:faq_expensive"),
    ]


def test_setup_failure_ends_the_call_cleanly() -> None:
    async def main() -> None:
        dmap = make_map()
        tts = FakeTTS({}, fail_connect=True)
        llm = FakeLLM([])
        services = CallServices(
            dialogue_map=dmap,
            flow_engine=MapFlowEngine(dmap),
            intent_classifier=KeywordClassifier({}, {}),
            audio_cache=InMemoryAudioCache(),
            clock=LoopClock(),
            render=render_template,
            stt_factory=lambda cid: FakeSTT(FakeInbound()),
            tts_factory=lambda cid: tts,
            llm_factory=lambda cid: llm,
        )
        with pytest.raises(CallSetupError, match="setup failed"):
            await create_orchestrator_instance("call-x", services)
        assert tts.closed and llm.shut

    run_virtual(main)


# --- isolation -----------------------------------------------------------------------------


def test_calls_leave_no_tasks_and_share_no_state() -> None:
    async def main() -> None:
        first = await run_call([Say(2.0, "площадь 45 метров")], hangup_at=8.0)
        ref = weakref.ref(first.orchestrator)
        assert first.stt.stopped and first.llm.shut and first.tts.closed
        del first
        gc.collect()
        assert ref() is None  # nothing holds the finished call
        second = await run_call([], hangup_at=2.0)
        assert second.orchestrator.session_state.variables == {}
        assert second.orchestrator.session_state.current_state_id == "start"

    run_virtual(main)  # run_virtual also fails on any task left pending


# --- caller silence ------------------------------------------------------------------------


def test_silence_reprompts_then_says_goodbye_and_ends() -> None:
    dmap = make_map(
        no_input_timeout_s=3.0,
        no_input_max_reprompts=1,
        no_input_goodbye_playlist=[{"type": "cache", "key": "static:bye"}],
    )
    run = call([], dmap=dmap, hangup_at=None)
    greeting, bye = label("static:greeting"), label("static:bye")
    assert run.sink.segments() == [(greeting, 100), (bye, 50)]  # greeting, reprompt (silence between), bye
    starts = [t for t, lab in run.sink.frames if lab == greeting]
    assert starts[50] == pytest.approx(1.0 + 3.0, abs=0.05)  # reprompt 3 s after the greeting ended
    assert run.outcome.reason == "no_input" and run.outcome.hang_up


def test_speech_resets_the_silence_count() -> None:
    dmap = make_map(no_input_timeout_s=3.0, no_input_max_reprompts=1)
    run = call([Say(5.0, "это дорого")], dmap=dmap, hangup_at=14.0, interruption=VAD_DECIDES)
    # A reprompt at 4.0, the caller answers, then after 3 s of silence another reprompt, not the
    # goodbye: the answer reset the count (the two greetings merge into one run of labels).
    assert run.sink.labels() == [
        label("static:greeting"),
        label("static:faq_expensive"),
        label("static:greeting"),
    ]
    assert [e.data["count"] for e in run.events if e.kind == "no_input"] == [1, 1]
    assert run.outcome.reason == "caller_hangup"


def test_classifier_failure_plays_the_emergency_filler() -> None:
    class Flaky(KeywordClassifier):
        async def classify_intent(self, text: str, *, previous_leader: str | None = None) -> Any:
            if "сломайся" in text:
                raise ClassifierError("embeddings service down", provider="embeddings", retryable=True)
            return await super().classify_intent(text, previous_leader=previous_leader)

    base = keyword_classifier()
    run = call(
        [Say(2.0, "сломайся"), Say(6.0, "это дорого")],
        classifier=Flaky(base.intents, base.faq),
        hangup_at=10.0,
    )
    assert run.sink.labels() == [
        label("static:greeting"),
        label("filler:emergency"),
        label("static:faq_expensive"),
    ]
    assert run.turns()[1]["error"].startswith("classifier:")


def test_a_tts_stream_that_never_ends_is_abandoned_after_the_operation_timeout() -> None:
    class EndlessTTS(FakeTTS):
        async def run_stream(self, stream: FakeSynthesis) -> None:
            piece = await stream.next_text()
            assert piece is not None
            self.stream_text.append(piece)
            stream.emit(self.audio(piece, self.stream_label))
            await asyncio.Event().wait()  # never the end of the audio

    tts = EndlessTTS({"4500": PRICE_LABEL}, stream_label=LLM_LABEL)
    run = call([Say(2.0, "расскажи"), Say(14.0, "это дорого")], tts=tts, hangup_at=20.0)
    labels = run.sink.labels()
    assert labels[-3:] == [LLM_LABEL, label("filler:emergency"), label("static:faq_expensive")]
    emergency_at = min(t for t, lab in run.sink.frames if lab == label("filler:emergency"))
    last_answer = max(t for t, lab in run.sink.frames if lab == LLM_LABEL)
    assert emergency_at - last_answer == pytest.approx(5.0, abs=0.1)  # the map's operation_timeout_s


# --- review regressions --------------------------------------------------------------------


class SlowClosingLLM(FakeLLM):
    """Its generator's cleanup awaits, like the real adapter closing its HTTP stream."""

    async def process_user_turn(self, text: str, session: Any, *, attempt: int = 0) -> Any:
        self.calls.append((text, attempt))
        try:
            for delay, chunk in self.attempts[0].chunks:
                await asyncio.sleep(delay)
                yield chunk
        finally:
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("llm_delay, tts_latency", [(3.0, 0.2), (0.3, 3.0)])
def test_barge_in_during_the_llm_filler_leaks_no_filler_frame(llm_delay: float, tts_latency: float) -> None:
    # Barge-in while waiting for the first LLM chunk, then while waiting for the first TTS audio.
    llm = SlowClosingLLM([LLMAttempt([(llm_delay, LLMStreamChunk("Да, работаем."))])])
    tts = FakeTTS({"4500": PRICE_LABEL}, stream_label=LLM_LABEL, latency=tts_latency)
    run = call(
        [Say(2.0, "а вы работаете в субботу"), Say(4.51, "стоп", duration=1.0)],
        llm=llm,
        tts=tts,
        hangup_at=10.0,
        interruption=VAD_DECIDES,
    )
    barge = run.event_times("barge_in")
    assert barge == [pytest.approx(4.51)]
    next_turn = min(e.at for e in run.events if e.kind == "user_said" and e.at > barge[0])
    leaked = [f for f in run.sink.audio_after(barge[0]) if f[0] <= next_turn]
    assert leaked == []


def test_a_partial_without_a_final_does_not_silence_the_line() -> None:
    class PartialOnlySTT(FakeSTT):
        def open_stream(self) -> FakeRecognition:
            stream = super().open_stream()
            partial = SttResult("э", False, 0.3, "partial", received_at=2.0)
            asyncio.get_running_loop().call_at(2.0, stream.emit, partial)
            return stream

    dmap = make_map(no_input_timeout_s=3.0, no_input_max_reprompts=5)

    async def main() -> CallRun:
        return await run_call([], dmap=dmap, hangup_at=12.0, stt_class=PartialOnlySTT)

    run = run_virtual(main)
    assert run.event_times("no_input")[:1] == [pytest.approx(5.0)]  # 3 s after the orphan partial
    assert [t["route"] for t in run.turns()][:3] == ["greeting", "no_final", "no_input"]


def test_an_empty_llm_answer_plays_the_non_secure_response_not_endless_fillers() -> None:
    run = call([Say(2.0, "расскажи"), Say(7.0, "это дорого")], llm=FakeLLM([LLMAttempt([])]), hangup_at=10.0)
    assert run.sink.labels()[-2:] == [label("static:non_secure"), label("static:faq_expensive")]


def test_a_failure_does_not_clip_the_content_queued_before_it() -> None:
    tts = FakeTTS({"4500": PRICE_LABEL}, fail_synth=True)
    run = call([Say(2.0, "площадь 45 метров")], tts=tts, hangup_at=8.0)
    assert run.sink.segments()[1:] == [(label("static:intro"), 30), (label("filler:emergency"), 30)]


def test_caller_still_talking_when_the_answer_is_ready_is_heard_not_talked_over() -> None:
    class SlowClassifier(KeywordClassifier):
        async def classify_intent(self, text: str, *, previous_leader: str | None = None) -> Any:
            await asyncio.sleep(0.3)  # an embeddings round trip
            return await super().classify_intent(text, previous_leader=previous_leader)

    base = keyword_classifier()
    run = call(
        [
            Say(2.0, "площадь 45 метров", partials=False),
            Say(3.4, "нет не интересно", duration=0.4, stt_delay=0.2, partials=False),
        ],
        classifier=SlowClassifier(base.intents, base.faq),
        hangup_at=10.0,
    )
    assert [e.data["text"] for e in run.events if e.kind == "user_said"] == [
        "площадь 45 метров",
        "нет не интересно",
    ]
    assert run.outcome.reason == "end_call"


def test_cancelling_a_call_during_setup_still_shuts_it_down() -> None:
    class HangingTTS(FakeTTS):
        async def connect(self) -> None:
            await asyncio.Event().wait()

    async def main() -> None:
        dmap = make_map()
        tts, llm, records = HangingTTS({}), FakeLLM([LLMAttempt()]), []
        services = CallServices(
            dialogue_map=dmap,
            flow_engine=MapFlowEngine(dmap),
            intent_classifier=keyword_classifier(),
            audio_cache=InMemoryAudioCache(),
            clock=LoopClock(),
            render=render_template,
            stt_factory=lambda _c: FakeSTT(FakeInbound()),
            tts_factory=lambda _c: tts,
            llm_factory=lambda _c: llm,
            metrics_sink=records.append,
        )
        task = asyncio.create_task(create_orchestrator_instance("c", services))
        await asyncio.sleep(1.0)
        task.cancel()
        await asyncio.wait({task})
        assert task.cancelled() and llm.shut and tts.closed
        assert [r["reason"] for r in records if r["event"] == "call_end"] == ["shutdown"]

    run_virtual(main)


# --- the caller's audio path -----------------------------------------------------------------


def test_caller_audio_reaches_the_recognizer_through_the_one_buffer() -> None:
    run = call([Say(2.0, "это дорого")], hangup_at=6.0)
    stream = run.stt.streams[0]
    assert run.inbound.frames_pushed == pytest.approx(6.0 / 0.02, abs=2)  # one frame per tick
    assert stream.buffer.pushed == run.inbound.frames_pushed
    assert stream.frames_heard + stream.frames_dropped + len(stream.buffer) == stream.buffer.pushed
    assert run.records[-1]["stt_frames_dropped"] == 0
    assert run.sink.labels()[-1] == label("static:faq_expensive")  # recognised from its audio


def test_a_recognizer_that_falls_behind_drops_the_oldest_frames_counted_in_the_final_record() -> None:
    # The recognizer stops consuming at 2.0 for 3 s; its buffer holds 1 s (50 frames), so the
    # other 2 s of audio are lost (the oldest first) and counted once, in the final record.
    run = call(
        [Say(6.0, "это дорого")],
        hangup_at=9.0,
        stt_options={"buffer_frames": 50, "stall": (2.0, 3.0)},
    )
    stream = run.stt.streams[0]
    assert stream.frames_dropped == 101  # 151 frames arrived during the stall, 50 were kept
    assert stream.frames_heard + stream.frames_dropped + len(stream.buffer) == stream.buffer.pushed
    final = run.records[-1]
    assert final["event"] == "call_end" and final["stt_frames_dropped"] == 101
    # The recognizer caught up: the caller's later question is still heard and answered.
    assert run.sink.labels()[-1] == label("static:faq_expensive")


class _LossyRecognition(FakeRecognition):
    """A recognition that says reconnects could not resend 340 ms (`ResendAccounting`)."""

    resend_dropped_ms = 340


class _LossySTT(FakeSTT):
    def open_stream(self) -> FakeRecognition:
        stream = _LossyRecognition(
            self, buffer_frames=self.buffer_frames, batch_frames=self.batch_frames, stall=self.stall
        )
        self.streams.append(stream)
        return stream


def test_audio_a_reconnect_could_not_resend_is_in_the_final_record() -> None:
    plain = call([Say(2.0, "это дорого")], hangup_at=6.0)
    assert plain.records[-1]["stt_resend_dropped_ms"] == 0  # a recognition that never resends
    lossy = call([Say(2.0, "это дорого")], hangup_at=6.0, stt_class=_LossySTT)
    final = lossy.records[-1]
    assert final["event"] == "call_end" and final["stt_resend_dropped_ms"] == 340


def test_speech_lost_while_the_recognizer_was_behind_is_not_recognised() -> None:
    # The whole line falls in the audio the full buffer dropped: no result, no turn.
    run = call(
        [Say(2.1, "это дорого", duration=0.5)],
        hangup_at=8.0,
        stt_options={"buffer_frames": 10, "stall": (2.0, 3.0)},
    )
    assert run.stt.streams[0].frames_dropped > 0
    assert [e for e in run.events if e.kind == "user_said"] == []
    assert run.sink.labels() == [label("static:greeting")]


# --- the constrained intent step on unsure turns (issue 8) ------------------------------------


class BandScores:
    """Local scores that put every turn in the unsure band (the keyword classifier routes nothing)."""

    async def label_scores(self, text: str) -> dict[str, float]:
        return {"intent:give_area": 0.3, "intent:refuse": 0.1}


class SlowArbiter:
    """Answers `label` after `delay_s` of (virtual) time."""

    name = "slow-arbiter"

    def __init__(self, label: str | None, delay_s: float) -> None:
        self.label = label
        self.delay_s = delay_s
        self.asked: list[str] = []

    async def choose(self, text: str, options: Any, *, context: str = "") -> str | None:
        self.asked.append(text)
        await asyncio.sleep(self.delay_s)
        return self.label


def step_call(arbiter: SlowArbiter, text: str) -> CallRun:
    from orchestrator.intents.arbiter import ArbiterStep

    dmap = make_map()
    step = ArbiterStep(dmap, BandScores(), arbiter, clock=LoopClock())
    return call([Say(2.0, text, partials=False)], dmap=dmap, intent_step=step, hangup_at=8.0)


def test_an_unsure_turn_goes_through_the_step_to_its_intent_with_the_latency_recorded() -> None:
    arbiter = SlowArbiter("intent:give_area", delay_s=0.4)
    run = step_call(arbiter, "сорок пять метров")  # no keyword: the local classifier routes nothing
    assert arbiter.asked == ["сорок пять метров"]
    assert run.sink.labels() == [
        label("static:greeting"),
        label("static:intro"),
        PRICE_LABEL,
        label("static:rub"),
    ]
    assert run.llm.calls == []  # the free LLM answer was not needed
    assert run.orchestrator.session_state.variables["area"] == 45  # entities taken from the words
    turn = run.turns()[1]
    assert (turn["route"], turn["intent"]) == ("scripted", None)  # the local classifier said nothing
    assert (turn["intent_llm_status"], turn["intent_llm_pick"]) == ("picked", "intent:give_area")
    assert turn["intent_llm_ms"] == pytest.approx(400.0, abs=1.0)
    assert (
        turn["t3_logic_start"]
        <= turn["intent_llm_at"]
        < turn["intent_llm_done_at"]
        <= turn["t6_first_bot_audio"]
    )
    assert turn["response_ms"] >= 400.0


def test_a_step_that_times_out_falls_back_to_the_llm_answer_within_its_bound() -> None:
    arbiter = SlowArbiter("intent:give_area", delay_s=30.0)
    run = step_call(arbiter, "что-то непонятное")
    turn = run.turns()[1]
    assert (turn["intent_llm_status"], turn["intent_llm_pick"]) == ("timeout", None)
    timeout_ms = make_map().settings.intent_arbiter.timeout_s * 1000
    assert turn["intent_llm_ms"] == pytest.approx(timeout_ms, abs=1.0)
    assert turn["route"] == "llm" and len(run.llm.calls) == 1
    # The caller waits at most the step's bound before the LLM answer's filler starts.
    assert turn["t6_first_bot_audio"] - turn["t2_stt_final"] <= timeout_ms / 1000 + 0.1


def test_a_confident_turn_never_asks_the_step() -> None:
    arbiter = SlowArbiter("intent:refuse", delay_s=0.4)
    run = step_call(arbiter, "площадь 45 метров")  # the keyword classifier is sure
    assert arbiter.asked == []
    assert run.turns()[1]["intent_llm_ms"] is None


# --- the service's bounds on a call ([call]) ------------------------------------------------


class SlowCache(InMemoryAudioCache):
    """The greeting's read hangs (a Redis that stopped answering); the rest answer at once."""

    async def get(self, key: str) -> Any:
        if key == "static:greeting":
            await asyncio.sleep(60)
        return await super().get(key)


def test_a_hung_cache_read_is_bounded_by_the_call_settings() -> None:
    run = call([], hangup_at=4.0, cache=SlowCache(CACHED), call_settings=CallSettings(cache_timeout_s=0.5))
    assert run.sink.labels() == [label("filler:emergency")]
    first_audio = min(t for t, lab in run.sink.frames if lab)
    assert first_audio == pytest.approx(0.5, abs=0.05)  # [call] cache_timeout_s, not the 2 s default
    assert run.turns()[0]["error"].startswith("playback:")


class StuckClosing(FakeSynthesis):
    """A synthesis stream whose `aclose()` hangs (a gRPC call that does not go away)."""

    async def aclose(self) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await super().aclose()


class StuckClosingTTS(FakeTTS):
    stream_class = StuckClosing


LONG_ANSWER = "Да, работаем без выходных и праздников, с восьми утра и до десяти вечера."


def test_a_stuck_cleanup_after_barge_in_holds_the_dialogue_for_the_cancel_bound_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    llm = FakeLLM([LLMAttempt([(0.3, LLMStreamChunk(LONG_ANSWER))])])
    tts = StuckClosingTTS({"4500": PRICE_LABEL}, stream_label=LLM_LABEL)
    bounds = CallSettings(cancel_bound_s=1.0, provider_timeout_s=3.0)
    run = call(
        [Say(2.0, "расскажи"), Say(4.5, "стоп", duration=1.0)],
        llm=llm,
        tts=tts,
        hangup_at=12.0,
        call_settings=bounds,
        interruption=VAD_DECIDES,
    )
    barge = run.event_times("barge_in")
    assert barge == [pytest.approx(4.5)]
    # The cut answer's cleanup hangs on the stream; the dialogue listens again after the cancel
    # bound (1 s), not after the cleanup's own bound (3 s), nor four bounds in a row as before.
    listening = min(t for t in run.event_times("listening") if t > barge[0])
    assert listening == pytest.approx(barge[0] + 1.0, abs=0.05)
    assert [t for t, lab in run.sink.frames if lab == LLM_LABEL and barge[0] < t <= listening] == []
    assert "did not stop within 1.0 s" in caplog.text  # the abandoned playback, named
    assert "LLM answer within 3.0 s" in caplog.text  # its cleanup gave up at its one bound
    assert run.turns()[1]["interrupted"] is True


def test_audio_outside_the_bot_turn_is_floor_lost_not_a_fake_cancellation() -> None:
    async def scenario() -> None:
        floor = Floor.LISTENING
        pacer, playout, _sink = make_playout()
        player = PlaylistPlayer(
            call_id="c",
            cache=InMemoryAudioCache(CACHED),
            tts=FakeTTS(),
            clock=LoopClock(),
            tasks=TaskOwner("c"),
            neutral_filler_keys=["filler:still_working"],
            operation_timeout_s=5.0,
            floor=lambda: floor,
            on_audio=lambda _role: None,
            on_tts_first_chunk=lambda: None,
            observe=lambda _kind, **_data: None,
            cache_timeout_s=1.0,
        )
        player.outbound = playout
        with pytest.raises(FloorLost, match="may not speak in LISTENING"):
            await player.write(clip(1, 0.1), "answer")
        # A filler whose turn was lost just ends: no failure, no cancellation it did not get.
        floor = Floor.INTERRUPTED
        cover = Cover(player, FillerSequence(["filler:hmm"], []))
        await asyncio.wait({cover.task})
        assert not cover.task.cancelled() and cover.task.exception() is None
        playout.close()

    run_virtual(scenario)


def test_every_event_kind_has_a_payload_and_a_wrong_key_fails_where_it_is_emitted() -> None:
    from orchestrator.events import PAYLOADS, CallEventKind

    assert set(PAYLOADS) == set(CallEventKind)
    assert (
        CallEvent(CallEventKind.PLAY, 0.0, {"kind": "filler", "key": "filler:hmm"}).data["key"]
        == "filler:hmm"
    )
    with pytest.raises(ValueError, match="user_said event: payload keys \\['txt'\\], expected TextPayload"):
        CallEvent(CallEventKind.USER_SAID, 0.0, {"txt": "алло"})
    with pytest.raises(ValueError, match="expected TransitionPayload"):
        CallEvent(CallEventKind.STATE, 0.0, {"from_state": "start"})
