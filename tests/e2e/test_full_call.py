"""The product end to end on a real Asterisk 22: sipp dials the trunk and talks to the example map.

What is checked comes from the wire (RTP and SIP captured on loopback) and from the bridge's own
records: the greeting arrives paced at real time and is not silence; each caller phrase moves the
dialogue as the map says; speech over the bot stops the bot's audio; END_CALL ends the call with
a BYE from Asterisk; and afterwards no call, task or socket of the call is left.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from testkit.phone_call import run_phone_call

pytestmark = pytest.mark.asterisk

CONNECTING_MAX_S = 5.0  # "Соединяю вас с менеджером, оставайтесь, пожалуйста, на линии." and the ringing
LINES = ["у нас квартира шестьдесят метров", "а вы работаете по воскресеньям", "нет спасибо"]


def _bridge_tasks() -> list[asyncio.Task[object]]:
    me = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not me and not t.done()]


async def test_whole_call_through_asterisk(asterisk: str, tmp_path: Path) -> None:
    before = set(_bridge_tasks())
    result = await run_phone_call(tmp_path, LINES)
    assert result.sipp.ok, result.sipp.describe()
    a = result.analysis

    # The dialogue moved as the map says, and the bot hung up (END_CALL) with a BYE.
    assert result.states() == [("greeting", "quote"), ("quote", "goodbye_refusal")]
    assert [e.data["text"] for e in result.events if e.kind == "user_said"] == LINES
    assert any(e.kind == "llm_said" for e in result.events)
    assert result.outcomes and result.outcomes[0][1] == "end_call"
    assert a.bye_seen, f"no BYE from Asterisk; SIP seen: {a.sip_methods}"

    # The greeting: voiced, paced at 50 packets/s, not a burst.
    start = result.caller_start()
    first_reply = start + result.caller_speech_at[0]
    greeting = [p for p in a.voiced if p.t < first_reply]
    assert len(greeting) > 100, "the caller did not hear the greeting"
    span = [p for p in a.audio if greeting[0].t <= p.t <= greeting[-1].t]
    gaps = [b.t - a_.t for a_, b in zip(span, span[1:], strict=False)]
    rate = (len(span) - 1) / (greeting[-1].t - greeting[0].t)
    assert 45 <= rate <= 55, f"greeting at {rate:.1f} packets/s"
    assert sum(1 for g in gaps if g < 0.005) < len(gaps) // 2, "greeting arrived as a burst"

    # Every turn has its latency record.
    turns = result.turns()
    assert [t["route"] for t in turns] == ["greeting", "scripted", "llm", "scripted"]
    for t in turns[1:]:
        assert t["t1_first_user_audio"] <= t["t2_stt_final"] <= t["t3_logic_start"] <= t["t6_first_bot_audio"]

    # Nothing of the call is left in this process: no task, no socket, no Orchestrator.
    assert set(_bridge_tasks()) <= before
    assert result.orchestrators_left == 0


async def test_caller_speech_stops_the_bot(asterisk: str, tmp_path: Path) -> None:
    # The caller talks over the greeting 2 s in; the bot must go quiet, then answer the phrase.
    result = await run_phone_call(tmp_path, LINES[:1] + LINES[2:], barge_in_at=2.0)
    assert result.sipp.ok, result.sipp.describe()
    assert any(e.kind == "barge_in" for e in result.events)
    start = result.caller_start()
    speech = [p for p in result.caller_rtp if p.t >= start + 2.0 and p.rms >= 200]
    onset = speech[0].t
    end_of_phrase = max(p.t for p in speech if p.t < onset + 4.0)
    bot = result.analysis.voiced
    assert any(p.t < onset for p in bot), "the greeting had started"
    # After the VAD's 200 ms minimum speech (plus the network), no bot audio until the caller
    # has finished and the answer starts: the greeting was cut, not played on.
    talking_over = [p for p in bot if onset + 0.4 < p.t < end_of_phrase]
    assert talking_over == [], f"bot audio {len(talking_over)} packets while the caller spoke"
    stop = max(p.t for p in bot if p.t <= onset + 0.4)
    print(
        f"barge-in: last bot packet {(stop - onset) * 1000:.0f} ms after the caller's speech onset on the wire"
    )
    assert result.states()[0] == ("greeting", "quote")
    assert result.outcomes[0][1] == "end_call"


async def test_key_zero_transfers_the_caller_to_the_operator(asterisk: str, tmp_path: Path) -> None:
    # The caller presses 0 during the greeting: the key cuts the greeting (barge-in), the map's
    # global_dtmf routes it as "operator", the bot says it is connecting and transfers to the
    # stand-in operator of extensions.conf, which answers only with VB_INTENT set, plays a tone
    # for 8 s and hangs up (then the bridge hangs the caller up: BYE).
    result = await run_phone_call(tmp_path, [], dtmf=[(2.0, "0")], call_timeout_s=40.0)
    assert result.sipp.ok, result.sipp.describe()
    kinds = [e.kind for e in result.events]
    assert "dtmf" in kinds and "barge_in" in kinds
    assert result.states() == [("greeting", "transfer_operator")]
    transfers = [dict(e.data) for e in result.events if e.kind == "transfer"]
    assert transfers == [{"target": "Local/operator@voicebridge-operators", "outcome": "answered"}]
    assert result.outcomes and result.outcomes[0][1] == "transferred"
    a = result.analysis
    assert a.bye_seen, f"no BYE from Asterisk; SIP seen: {a.sip_methods}"
    # The operator's tone reached the caller after the bot's last words: the bot spoke at most
    # 2 s of greeting and its connecting phrase (voiced packets before the tone), the tone 8 s.
    tone = [p for p in a.voiced if p.t >= a.voiced[0].t + 2.0 + CONNECTING_MAX_S]
    assert len(tone) > 300, (len(tone), len(a.voiced))
    assert 'voicebridge_transfers_total{outcome="answered"} 1.0' in result.prometheus
    assert result.orchestrators_left == 0
