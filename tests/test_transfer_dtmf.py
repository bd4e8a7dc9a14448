"""TRANSFER and DTMF in maps, on virtual time (the Orchestrator with fakes; `CallControl` faked).

The ARI side of a transfer is tested on a fake ARI in tests/test_ari_transfer.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orchestrator.cache.memory import InMemoryAudioCache
from orchestrator.dialogue_map.loader import reference_problems
from orchestrator.dialogue_map.models import DialogueMap, Transfer
from orchestrator.domain.models import SessionState, TranscriptEntry, TransferOutcome, TransferRequest
from orchestrator.transfer_step import transfer_variables
from testkit.fakes import KeywordClassifier, Say, clip
from tests.test_orchestrator import CACHED, CLIPS, CallRun, call, make_map

TRANSFER_CLIPS = {"static:connecting": (120, 0.6), "static:busy": (121, 0.6), "static:got_phone": (122, 0.4)}


def label(key: str) -> int:
    return {**CLIPS, **TRANSFER_CLIPS}[key][0]


def transfer_map(**transfer: Any) -> DialogueMap:
    data = make_map().model_dump(by_alias=True, exclude_none=True)
    data["intents"]["operator"] = {"examples": ["позовите оператора"]}
    data["intents"]["give_phone"] = {
        "examples": ["мой телефон 8 916"],
        "entities": ["phone"],
        "required_entities": ["phone"],
        "clarify_playlist": [{"type": "cache", "key": "static:ask_area"}],
    }
    data["entities"]["phone"] = {
        "type": "digits",
        "min_length": 3,
        "max_length": 6,
        "inter_digit_timeout_s": 2,
    }
    data["global_transitions"] = {"operator": "to_operator"}
    data["global_dtmf"] = {"0": "operator"}
    data["states"]["start"]["transitions"]["give_phone"] = "got_phone"
    data["states"]["start"]["collect_digits"] = {"entity": "phone", "intent": "give_phone"}
    data["states"]["to_operator"] = {
        "system_response": {"playlist": [{"type": "cache", "key": "static:connecting"}]},
        "action": "TRANSFER",
        "transfer": {
            "endpoint": "PJSIP/operator",
            "timeout_s": 20,
            "on_transfer_failed": "operator_busy",
            "variables": ["phone"],
            **transfer,
        },
    }
    data["states"]["operator_busy"] = {
        "system_response": {"playlist": [{"type": "cache", "key": "static:busy"}]},
        "transitions": {"refuse": "goodbye"},
    }
    data["states"]["got_phone"] = {
        "system_response": {"playlist": [{"type": "cache", "key": "static:got_phone"}]},
        "transitions": {"refuse": "goodbye"},
    }
    data["audio"].update({k: k for k in TRANSFER_CLIPS})
    return DialogueMap.model_validate(data)


def classifier() -> KeywordClassifier:
    return KeywordClassifier({"operator": ["оператор"], "refuse": ["нет"]}, {})


class FakeControl:
    """`CallControl`: rings for `ring_s` of the call's clock, then answers `outcome`."""

    def __init__(self, outcome: TransferOutcome, ring_s: float = 1.0) -> None:
        self.outcome, self.ring_s = outcome, ring_s
        self.requests: list[tuple[float, TransferRequest]] = []

    async def transfer(self, request: TransferRequest) -> TransferOutcome:
        self.requests.append((asyncio.get_running_loop().time(), request))
        await asyncio.sleep(self.ring_s)
        return self.outcome


def run(script: list[Say], **kw: Any) -> CallRun:
    kw.setdefault("dmap", transfer_map())
    kw.setdefault("classifier", classifier())
    cached = {**CACHED, **{k: clip(lab, sec) for k, (lab, sec) in TRANSFER_CLIPS.items()}}
    kw.setdefault("cache", InMemoryAudioCache(cached))
    return call(script, **kw)


def transfers(r: CallRun) -> list[dict[str, Any]]:
    return [dict(e.data) for e in r.events if e.kind == "transfer"]


# --- transfer --------------------------------------------------------------------------------


def test_asking_for_the_operator_transfers_after_the_playlist_with_what_was_collected() -> None:
    control = FakeControl("answered")
    r = run([Say(2.0, "позовите оператора")], control=control, hangup_at=None)
    assert r.outcome.reason == "transferred" and not r.outcome.hang_up
    assert r.sink.labels() == [label("static:greeting"), label("static:connecting")]
    ((asked_at, request),) = control.requests
    last_connecting = max(t for t, lab in r.sink.frames if lab == label("static:connecting"))
    assert asked_at >= last_connecting  # the caller heard the whole playlist first
    assert request.endpoint == "PJSIP/operator" and request.timeout_s == 20 and request.sip_headers
    assert request.variables == {
        "VB_INTENT": "operator",
        "VB_STATE": "start",
        "VB_TRANSCRIPT": "user: позовите оператора",
        "VB_VAR_PHONE": "",
    }
    assert transfers(r) == [{"target": "PJSIP/operator", "outcome": "answered"}]
    assert r.records[-1]["reason"] == "transferred"


@pytest.mark.parametrize("outcome", ["busy", "no_answer", "failed"])
def test_a_transfer_nobody_takes_returns_to_the_bot_in_on_transfer_failed(outcome: TransferOutcome) -> None:
    control = FakeControl(outcome, ring_s=5.0)
    r = run([Say(2.0, "позовите оператора"), Say(14.0, "нет")], control=control, hangup_at=None)
    assert transfers(r) == [{"target": "PJSIP/operator", "outcome": outcome}]
    assert r.sink.labels() == [
        label("static:greeting"),
        label("static:connecting"),
        label("static:busy"),
        label("static:bye"),
    ]
    assert r.orchestrator.session_state.state_history == ["start", "to_operator", "operator_busy"]
    assert r.outcome.reason == "end_call"
    failed = [t for t in r.turns() if t["route"] == "transfer_failed"]
    assert failed and failed[0]["transfer"] == outcome


def test_without_call_control_a_transfer_fails_over_at_once() -> None:
    r = run([Say(2.0, "позовите оператора")], hangup_at=10.0)
    assert transfers(r) == [{"target": "PJSIP/operator", "outcome": "failed"}]
    assert r.orchestrator.session_state.current_state_id == "operator_busy"


def test_dialplan_target_is_dialled_as_a_local_channel_without_sip_headers() -> None:
    control = FakeControl("answered")
    dmap = transfer_map(endpoint=None, context="operators", extension="100")
    r = run([Say(2.0, "позовите оператора")], dmap=dmap, control=control, hangup_at=None)
    request = control.requests[0][1]
    assert request.endpoint == "Local/100@operators" and not request.sip_headers
    assert r.outcome.reason == "transferred"


def test_transfer_variables_are_bounded_and_one_line() -> None:
    session = SessionState(call_id="c", current_state_id="to_operator")
    session.state_history = ["start"]
    session.variables = {"phone": "8916\r\nX-Evil: 1"}
    session.transcript = [TranscriptEntry("user", "слово " * 400), TranscriptEntry("bot", "ответ")]
    spec = Transfer(
        endpoint="PJSIP/op", on_transfer_failed="x", variables=["phone", "name"], transcript_turns=2
    )
    out = transfer_variables(session, spec, "operator")
    assert out["VB_VAR_PHONE"] == "8916 X-Evil: 1" and out["VB_VAR_NAME"] == ""
    assert len(out["VB_TRANSCRIPT"]) == 1000 and out["VB_TRANSCRIPT"].endswith("bot: ответ")
    assert all("\n" not in v and "\r" not in v for v in out.values())


# --- DTMF --------------------------------------------------------------------------------------


def test_a_key_during_the_greeting_cuts_it_and_routes_its_intent() -> None:
    control = FakeControl("answered")
    r = run([], keys=[(0.5, "0")], control=control, hangup_at=None)
    assert r.event_times("barge_in") == [pytest.approx(0.5)]
    greeting = [t for t, lab in r.sink.frames if lab == label("static:greeting")]
    assert max(greeting) < 0.6  # cut within a frame or two of the key
    assert r.outcome.reason == "transferred"
    assert control.requests[0][1].variables["VB_TRANSCRIPT"] == "user: [DTMF 0]"
    key_turn = r.turns()[1]
    assert key_turn["dtmf"] is True and key_turn["intent"] == "operator" and key_turn["route"] == "scripted"


def test_a_key_that_means_nothing_does_not_interrupt() -> None:
    dmap = transfer_map()
    data = dmap.model_dump(by_alias=True, exclude_none=True)
    del data["states"]["start"]["collect_digits"]
    r = run([], dmap=DialogueMap.model_validate(data), keys=[(0.5, "7")], hangup_at=3.0)
    assert r.event_times("barge_in") == []
    assert r.sink.segments() == [(label("static:greeting"), 50)]


def test_a_keyed_digit_string_ends_at_the_terminator() -> None:
    keys = [(1.5, "8"), (1.8, "9"), (2.1, "1"), (2.4, "6"), (2.7, "#")]
    r = run([], keys=keys, hangup_at=5.0)
    assert r.orchestrator.session_state.variables["phone"] == "8916"
    assert r.orchestrator.session_state.current_state_id == "got_phone"
    assert r.sink.labels() == [label("static:greeting"), label("static:got_phone")]
    got = [t for t, lab in r.sink.frames if lab == label("static:got_phone")]
    assert min(got) == pytest.approx(2.7, abs=0.05)


def test_a_keyed_digit_string_ends_after_the_inter_digit_pause() -> None:
    r = run([], keys=[(1.5, "1"), (1.8, "2"), (2.1, "3")], hangup_at=6.0)
    assert r.orchestrator.session_state.variables["phone"] == "123"
    got = [t for t, lab in r.sink.frames if lab == label("static:got_phone")]
    assert min(got) == pytest.approx(4.1, abs=0.05)  # 2 s after the last key, on the call's clock


def test_a_keyed_digit_string_ends_at_max_length() -> None:
    keys = [(1.5 + 0.2 * i, d) for i, d in enumerate("1234567")]
    r = run([], keys=keys, hangup_at=5.0)
    assert r.orchestrator.session_state.variables["phone"] == "123456"


def test_a_too_short_digit_string_asks_again() -> None:
    r = run([], keys=[(1.5, "1"), (1.8, "#")], hangup_at=5.0)
    assert r.orchestrator.session_state.current_state_id == "start"
    assert r.sink.labels() == [label("static:greeting"), label("static:ask_area")]


# --- the map ---------------------------------------------------------------------------------


def test_map_references_of_transfer_and_dtmf_are_checked() -> None:
    data = transfer_map().model_dump(by_alias=True, exclude_none=True)
    data["states"]["to_operator"]["transfer"]["on_transfer_failed"] = "nowhere"
    data["global_dtmf"]["9"] = "no_such_intent"
    data["states"]["start"]["collect_digits"]["entity"] = "area"
    problems = dict(reference_problems(DialogueMap.model_validate(data)))
    assert problems["$.states.to_operator.transfer.on_transfer_failed"] == "unknown state 'nowhere'"
    assert problems['$.global_dtmf["9"]'] == "unknown intent 'no_such_intent'"
    assert "not a digits entity" in problems["$.states.start.collect_digits.entity"]


@pytest.mark.parametrize(
    ("transfer", "error"),
    [
        ({"on_transfer_failed": "x"}, "either endpoint"),
        (
            {"endpoint": "PJSIP/op", "context": "c", "extension": "1", "on_transfer_failed": "x"},
            "either endpoint",
        ),
        ({"context": "c", "on_transfer_failed": "x"}, "both context and extension"),
    ],
)
def test_a_transfer_target_must_be_one_thing(transfer: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Transfer.model_validate(transfer)
