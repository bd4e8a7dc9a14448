"""One `voicebridge serve` process, two numbers, two maps; calls recorded. A real process
(`serve --standins`), calls through the fake ARI and fake AudioSocket callers on real sockets:
- a call to 200 is served by the dental map (`[numbers] 200`), a call to any other number by the
  default map, each map loaded and warmed at start;
- with `[recording] enabled`, each call leaves a 0600 stereo WAV, named by its `call_end` record,
  with the caller's audio on the left channel and the bot's greeting on the right.
"""

from __future__ import annotations

import json
import stat
import wave
from pathlib import Path

import numpy as np

from testkit.fake_ari import FakeAri
from testkit.sip import espeak_pcm
from tests.test_drain import ROOT, bot_finished, serve, stop

DENTAL = "dialogue_maps/dental_appointment.ru.json"


def channels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return data[0::2], data[1::2]


async def test_two_numbers_two_maps_and_each_call_recorded(fake_ari: FakeAri, tmp_path: Path) -> None:
    turns = tmp_path / "turns.jsonl"
    rec = tmp_path / "rec"
    s = await serve(
        fake_ari,
        numbers__200=str(ROOT / DENTAL),
        recording__enabled="true",
        recording__directory=str(rec),
        metrics_file=str(turns),
    )
    try:
        await s.wait_for(f"audio cache ready for {ROOT / DENTAL}")  # warmed at start, before calls
        calls = {}
        for exten in ("200", "555"):
            channel_id = await fake_ari.place_call(exten=exten)
            await fake_ari.wait_for(lambda c=channel_id: fake_ari.leg_of(c) is not None, 20)  # type: ignore[misc]
            caller = fake_ari.leg_of(channel_id)
            assert caller is not None
            await bot_finished(caller, 0)  # the greeting
            caller.play(espeak_pcm("алло"))
            calls[exten] = channel_id
        await s.wait_for("call to 200: map Стоматология")
        await s.wait_for("call to 555: map Клининг")
        for channel_id in calls.values():
            await fake_ari.hangup_caller(channel_id)
        await s.wait_for("ended: caller_hangup", count=2)  # logged once the recording is closed
        records = [json.loads(line) for line in turns.read_text(encoding="utf-8").splitlines()]
        ends = [r for r in records if r.get("event") == "call_end"]
    finally:
        await stop(s)

    assert len(ends) == 2
    for end in ends:
        check_recording(Path(str(end["recording"])), rec)


def check_recording(path: Path, directory: Path) -> None:
    assert path.parent == directory and path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    left, right = channels(path)
    assert len(left) == len(right) > 8000  # over a second
    assert np.abs(right).max() > 1000  # the bot's greeting
    assert np.abs(left).max() > 1000  # the caller's "алло"
