"""The Orchestrator's side of a graceful drain, on virtual time (`Orchestrator.drain_by`).

A call whose dialogue ends before the drain deadline is untouched; one still going at the deadline
is cut there, hears the map's drain goodbye (else the emergency filler) and ends `drain_timeout`.
"""

from __future__ import annotations

import pytest

from testkit.fakes import Say
from tests.test_orchestrator import call, label, make_map


def test_a_call_that_ends_before_the_deadline_finishes_its_dialogue() -> None:
    dmap = make_map(drain_goodbye_key="static:drain_bye")
    run = call([Say(2.0, "нет не интересно")], dmap=dmap, hangup_at=None, drain=(0.5, 60.0))
    assert run.outcome.reason == "end_call" and run.outcome.hang_up
    assert run.sink.segments() == [(label("static:greeting"), 50), (label("static:bye"), 50)]
    assert "static:drain_bye" not in {e.data.get("key") for e in run.events if e.kind == "play"}


def test_at_the_deadline_a_listening_call_hears_the_drain_goodbye_and_ends() -> None:
    dmap = make_map(drain_goodbye_key="static:drain_bye")
    run = call([], dmap=dmap, hangup_at=None, drain=(0.5, 5.0))
    assert run.outcome.reason == "drain_timeout" and run.outcome.hang_up
    assert run.sink.segments() == [(label("static:greeting"), 50), (label("static:drain_bye"), 40)]
    first = min(t for t, lab in run.sink.frames if lab == label("static:drain_bye"))
    assert first == pytest.approx(5.0, abs=0.05)  # at the deadline, on the call's clock
    last = max(t for t, lab in run.sink.frames if lab)
    assert run.sink.frames[-1][0] >= last  # the call ended after the goodbye's last frame
    turn = run.turns()[-1]
    assert turn["route"] == "drain_goodbye"
    assert run.records[-1]["event"] == "call_end" and run.records[-1]["reason"] == "drain_timeout"


def test_at_the_deadline_the_bot_is_cut_mid_phrase_for_the_goodbye() -> None:
    dmap = make_map(drain_goodbye_key="static:drain_bye")
    run = call([], dmap=dmap, hangup_at=None, drain=(0.1, 0.5))
    # The greeting (1 s) is cut at 0.5 s: nothing of it follows the goodbye.
    assert run.sink.segments() == [(label("static:greeting"), 25), (label("static:drain_bye"), 40)]
    assert run.outcome.reason == "drain_timeout"


def test_without_a_drain_goodbye_the_emergency_filler_plays() -> None:
    run = call([], hangup_at=None, drain=(0.5, 3.0))
    assert run.sink.segments()[-1] == (label("filler:emergency"), 30)
    assert run.outcome.reason == "drain_timeout"
