"""RFC 4733 digits driving a digit-string entity on the real Asterisk 22.

The dental map, started at its `ask_phone` state (a copy written by the test: reaching it by voice
takes three turns), collects the phone number as digits; the caller keys "89161234567#" as RFC 4733
telephone-events in its RTP (sipp plays them from the pcap). The bot must take the string as the
`phone` entity, move to `confirm_phone` and read the number back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testkit.phone_call import run_phone_call

pytestmark = pytest.mark.asterisk

DENTAL = Path(__file__).resolve().parents[2] / "dialogue_maps" / "dental_appointment.ru.json"
NUMBER = "89161234567"
FIRST_KEY_S = 10.0  # after the ask_phone prompt (about 7 s) has been played
KEY_GAP_S = 0.3  # between key presses (well under the entity's 5 s inter-digit timeout)


def _phone_first_map(path: Path) -> str:
    """The dental map starting at ask_phone; confirm_phone reads the number back and ends the call."""
    data = json.loads(DENTAL.read_text(encoding="utf-8"))
    data["initial_state"] = "ask_phone"
    data["states"]["confirm_phone"] = {
        "system_response": data["states"]["confirm_phone"]["system_response"],
        "action": "END_CALL",
    }
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return str(path)


async def test_keyed_digits_fill_the_phone_entity(asterisk: str, tmp_path: Path) -> None:
    keys = [(FIRST_KEY_S + i * KEY_GAP_S, d) for i, d in enumerate(NUMBER + "#")]
    result = await run_phone_call(
        tmp_path, [], dtmf=keys, dialogue_map=_phone_first_map(tmp_path / "dental.json"), call_timeout_s=40.0
    )
    assert result.sipp.ok, result.sipp.describe()
    # Every key reached the dialogue, in order, as its own event (none lost, none doubled).
    assert "".join(str(e.data["digit"]) for e in result.events if e.kind == "dtmf") == NUMBER + "#"
    # The string became the phone entity: the map moved on and read the number back, then ended.
    assert result.states() == [("ask_phone", "confirm_phone")]
    spoken = [
        str(e.data.get("text")) for e in result.events if e.kind == "play" and e.data.get("kind") == "tts"
    ]
    # The read-back groups the digits for speech ("8 916 123 45 67"): the digits, in order.
    assert ["".join(c for c in text if c.isdigit()) for text in spoken] == [NUMBER], spoken
    assert [e.kind for e in result.events if e.kind == "user_said"] == []  # digits, not speech
    assert result.outcomes and result.outcomes[0][1] == "end_call"
    assert result.analysis.bye_seen, f"no BYE from Asterisk; SIP seen: {result.analysis.sip_methods}"
    assert result.orchestrators_left == 0
