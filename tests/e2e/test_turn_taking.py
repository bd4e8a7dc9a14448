"""Turn-taking on the real Asterisk 22 over RTP, on a live line (testkit/rtp_line.py).

The caller's end answers Asterisk's RTP as it comes, so it can talk over the bot and carry the
bot's own voice back as line echo. Checked from what the caller heard (the RTP that reached the
line) and from the bridge's events: a backchannel over the greeting does not stop it (at most a
pause, resumed with nothing repeated); the echo of the greeting (60 ms, -18 dB) does not stop
it; a true interruption does, and the dialogue goes on from what the caller said.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit.line_call import LineCallResult, run_line_call

pytestmark = pytest.mark.asterisk

BYE = "нет спасибо"  # the caller ends the call (greeting -> goodbye_refusal, END_CALL)


def _greeting_heard(result: LineCallResult) -> int:
    """Voiced packets the caller heard of the greeting (before it said goodbye)."""
    start = result.line.voice_start
    assert start is not None, "the caller heard nothing"
    return len(result.line.voiced_between(start, start + result.greeting_s + 1.0))


def _report(name: str, result: LineCallResult) -> None:
    kinds = result.kinds()
    print(
        f"{name}: greeting {_greeting_heard(result)}/{result.greeting_voiced} voiced frames heard,"
        f" barge_in {kinds.count('barge_in')}, states {result.states()}, outcomes {result.outcomes}"
    )


async def test_a_backchannel_over_the_greeting_does_not_stop_it(asterisk: str, tmp_path: Path) -> None:
    result = await run_line_call(tmp_path, [(2.0, "угу"), ("after+1.5", BYE)], stt_lines=["угу", BYE])
    _report("backchannel", result)
    assert result.sipp.ok, result.sipp.describe()
    assert "barge_in" not in result.kinds()
    # Played to the end, nothing repeated: as many voiced frames as the clip has (u-law on the
    # wire may tip a frame or two across the threshold).
    assert abs(_greeting_heard(result) - result.greeting_voiced) <= 3
    assert [e.data["text"] for e in result.events if e.kind == "user_said"] == [BYE]  # "угу" dropped
    assert result.states() == [("greeting", "goodbye_refusal")]
    assert result.outcomes and result.outcomes[0][1] == "end_call"
    assert result.orchestrators_left == 0


async def test_a_sound_with_no_words_over_the_greeting_does_not_stop_it(
    asterisk: str, tmp_path: Path
) -> None:
    # Laughter (0.85 s voiced) 1.5 s into the greeting, in which the STT finds no words (its
    # final is empty). No words on the call yet, but the STT's service answered the stream
    # (WORKING): it is known to work, so no words means nothing was said; before, 900 ms of
    # confirmed sound with no words cut the greeting in case the STT was down.
    # The greeting pauses over it (its run, the VAD's hangover, the wait for a final: about
    # 1.5 s), so the caller's goodbye comes later than in the tests above.
    laugh = "ха ха ха ха"
    result = await run_line_call(tmp_path, [(1.5, laugh), ("after+3.5", BYE)], stt_lines=["", BYE])
    assert result.sipp.ok, result.sipp.describe()
    start = result.line.voice_start
    assert start is not None
    heard = len(result.line.voiced_between(start, start + result.greeting_s + 3.0))
    print(f"laughter: greeting {heard}/{result.greeting_voiced} voiced frames heard, {result.kinds()}")
    assert "barge_in" not in result.kinds()
    assert abs(heard - result.greeting_voiced) <= 3  # all of it, nothing repeated
    assert [e.data["text"] for e in result.events if e.kind == "user_said"] == [BYE]
    assert result.states() == [("greeting", "goodbye_refusal")]


async def test_the_greetings_own_echo_does_not_stop_it(asterisk: str, tmp_path: Path) -> None:
    # Every voiced stretch of echo is "recognised" by the STT stand-in too: all lines say BYE.
    result = await run_line_call(
        tmp_path, [("after+1.5", BYE)], stt_lines=[BYE] * 40, echo_db=-18.0, echo_delay_ms=60
    )
    _report("echo -18 dB", result)
    assert result.sipp.ok, result.sipp.describe()
    assert "barge_in" not in result.kinds()
    assert abs(_greeting_heard(result) - result.greeting_voiced) <= 3
    assert result.states() == [("greeting", "goodbye_refusal")]
    assert result.outcomes and result.outcomes[0][1] == "end_call"


async def test_a_true_interruption_with_echo_on_the_line_stops_the_bot(asterisk: str, tmp_path: Path) -> None:
    # The STT stand-in "recognises" the echo's voiced stretches too (dropped: heard while the bot
    # spoke uninterrupted), so every line is the area; the caller hangs up after the answer.
    area = "у нас квартира шестьдесят метров"
    result = await run_line_call(
        tmp_path, [(2.0, area)], stt_lines=[area] * 40, echo_db=-18.0, echo_delay_ms=60, hangup_after_s=14.0
    )
    _report("interruption + echo", result)
    assert result.sipp.ok, result.sipp.describe()
    assert "barge_in" in result.kinds()
    assert result.line.voice_start is not None
    onset = result.line.caller_onset(result.line.voice_start + 2.0)
    assert onset is not None
    stop = max((h.t for h in result.line.voiced_between(onset - 0.5, onset + 2.0)), default=onset)
    print(f"interruption: last greeting packet {1000 * (stop - onset):.0f} ms after the caller's onset")
    # A frame count, not a time: at most 20 voiced bot packets (400 ms of audio) after the onset.
    talked_on = len(result.line.voiced_between(onset, onset + 2.0))
    assert talked_on <= 20, f"the bot talked on over the caller for {talked_on} packets"
    assert _greeting_heard(result) < result.greeting_voiced  # cut
    assert result.states()[0] == ("greeting", "quote")
    assert [e.data["text"] for e in result.events if e.kind == "user_said"][0] == area
    assert result.outcomes and result.outcomes[0][1] == "caller_hangup"
