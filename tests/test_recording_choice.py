"""Which calls are recorded: `[recording] enabled`, a map's `recording`, a call's VB_RECORD.

The rule (`recording_wanted`) as a table, VB_RECORD's values, the map's switch validated, and a
real `serve --standins` process whose calls come through the fake ARI with VB_RECORD among the
caller channel's `channelvars` (as Asterisk sends them with ari.conf `channelvars = VB_RECORD`).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bridge.recording import parse_record_flag, recording_wanted
from orchestrator.dialogue_map.loader import load_dialogue_map
from orchestrator.domain.errors import DialogueMapError
from testkit.fake_ari import FakeAri
from tests.test_drain import ROOT, serve, stop

CLEANING = ROOT / "dialogue_maps" / "cleaning_quote.ru.json"


@pytest.mark.parametrize(
    ("service", "map_recording", "call_record", "recorded"),
    [
        (False, None, None, False),  # off by default
        (True, None, None, True),  # the service records every call
        (True, False, None, False),  # a map that says false is not recorded
        (True, False, True, False),  # ... not even when the call asks for it
        (False, True, None, True),  # a map that says true is recorded with the service off
        (True, True, False, False),  # a call's VB_RECORD=0 always wins (the caller said no)
        (True, None, False, False),
        (False, None, True, True),  # a call's VB_RECORD=1 records where the map does not forbid it
    ],
)
def test_precedence(
    service: bool, map_recording: bool | None, call_record: bool | None, recorded: bool
) -> None:
    assert recording_wanted(service, map_recording, call_record) is recorded


@pytest.mark.parametrize(
    ("value", "flag"),
    [(None, None), ("", None), (" ", None), ("1", True), ("Yes", True), ("0", False), ("off", False)],
)
def test_vb_record_values(value: str | None, flag: bool | None) -> None:
    assert parse_record_flag(value) is flag


def test_a_vb_record_that_is_no_flag_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"VB_RECORD='maybe': expected 1 or 0"):
        parse_record_flag("maybe")


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_the_maps_switch_is_a_json_boolean(tmp_path: Path, value: object) -> None:
    data = json.loads(CLEANING.read_text(encoding="utf-8"))
    data["recording"] = value
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    if value is None:
        assert load_dialogue_map(path).recording is None
        return
    with pytest.raises(DialogueMapError, match=r"\$\.recording: Input should be a valid boolean"):
        load_dialogue_map(path)


async def test_calls_are_recorded_as_their_map_and_vb_record_say(fake_ari: FakeAri, tmp_path: Path) -> None:
    private = json.loads(CLEANING.read_text(encoding="utf-8"))
    private["recording"] = False  # e.g. a map whose callers give medical details
    private_map = tmp_path / "private.json"
    private_map.write_text(json.dumps(private, ensure_ascii=False), encoding="utf-8")
    turns, rec = tmp_path / "turns.jsonl", tmp_path / "rec"
    s = await serve(
        fake_ari,
        numbers__300=str(private_map),
        recording__directory=str(rec),  # [recording] enabled stays false
        metrics_file=str(turns),
    )
    calls = [("200", None), ("200", "1"), ("300", "1"), ("200", "0")]
    try:
        for n, (exten, record) in enumerate(calls, 1):
            channelvars = None if record is None else {"VB_RECORD": record}
            channel_id = await fake_ari.place_call(exten=exten, channelvars=channelvars)
            await fake_ari.wait_for(lambda c=channel_id: fake_ari.leg_of(c) is not None, 20)  # type: ignore[misc]
            caller = fake_ari.leg_of(channel_id)
            assert caller is not None
            async with asyncio.timeout(20):
                await caller.wait_until(lambda c: c.voice_count > 0)  # the greeting: the call is served
            await fake_ari.hangup_caller(channel_id)
            await s.wait_for("ended: caller_hangup", count=n)  # one call at a time: records in order
        records = [json.loads(line) for line in turns.read_text(encoding="utf-8").splitlines()]
    finally:
        await stop(s)
    ends = [r for r in records if r.get("event") == "call_end"]
    assert [("recording" in r) for r in ends] == [False, True, False, False], ends
    assert [p.name for p in rec.iterdir()] == [Path(str(ends[1]["recording"])).name]
