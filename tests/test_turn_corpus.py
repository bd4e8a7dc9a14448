"""The labelled turn-taking corpus (bench/turn_corpus.py) and its bench (bench/turn_bench.py).

The corpus must be reproducible and its labels consistent; on a small slice of it, the echo gate
must keep the bot's own echo from stopping it without losing true interruptions, while the plain
VAD (the configuration before the gate) is stopped by that echo: the comparison can fail. With
words from the modelled STT partials (and the STT known to work), the default (Silero VAD) and
TEN VAD keep the false cancel rates under bounds on a seeded subset (rates, not timing); every
resume plays the next unsent frame at the next tick; the bot's recognised echo does not cut it
when its text is known; the held-out corpus shares no phrase, and no voice but the one festival
voice, with the tuning one; that festival voice speaks Russian at 8 kHz.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.turn_bench import CONFIGS, TurnConfig, evaluate, render_turns, run_turns, write_json
from bench.turn_corpus import (
    BACKCHANNELS,
    BOT_PHRASES,
    CATEGORIES,
    FESTIVAL_RU,
    HELDOUT2_BACKCHANNELS,
    HELDOUT2_INTERRUPTIONS,
    HELDOUT2_VOICES,
    HELDOUT3_BACKCHANNELS,
    HELDOUT3_INTERRUPTIONS,
    HELDOUT3_VOICES,
    HELDOUT4_VOICES,
    HELDOUT_BACKCHANNELS,
    HELDOUT_INTERRUPTIONS,
    HELDOUT_VOICES,
    INTERRUPTIONS,
    VOICES,
    TurnItem,
    build_corpus,
    synth,
)
from bench.turn_partials import echo_partials, partials
from bridge.echo_gate import EchoSettings
from bridge.vad import VadSettings
from orchestrator.audio import FRAME_BYTES, SAMPLE_RATE

pytestmark = pytest.mark.skipif(
    not shutil.which("espeak-ng"), reason="espeak-ng is needed (make system-deps)"
)


@pytest.fixture(scope="module")
def corpus() -> list[TurnItem]:
    return build_corpus(12, seed=12)


def test_same_seed_same_bytes_other_seed_other_bytes(corpus: list[TurnItem]) -> None:
    again = build_corpus(12, seed=12)
    assert [(i.name, i.inbound, i.bot, i.onset_s) for i in again] == [
        (i.name, i.inbound, i.bot, i.onset_s) for i in corpus
    ]
    other = build_corpus(2, seed=13)
    assert [i.inbound for i in other] != [i.inbound for i in corpus[:8]]


def test_labels_are_consistent(corpus: list[TurnItem]) -> None:
    assert {i.category for i in corpus} == set(CATEGORIES)
    assert len(corpus) == 12 * len(CATEGORIES)
    for item in corpus:
        assert len(item.bot) == len(item.inbound) and len(item.bot) % FRAME_BYTES == 0
        assert item.interrupts == (item.category == "interruption")
        if item.category == "echo":
            assert item.onset_s is None and item.text == ""
        elif item.category == "noise":
            assert item.onset_s is None and item.meta["snr_db"] in (20, 10, 5)
        else:
            # The caller's sound starts while the bot is still speaking.
            assert item.onset_s is not None and 0.3 <= item.onset_s < item.bot_end_s
            assert item.text
        assert -35 <= item.echo_db <= -6 and 20 <= item.echo_delay_ms <= 250


def _config(part: str) -> TurnConfig:
    return next(c for c in CONFIGS if part in c.name)


def test_echo_gate_stops_echo_false_stops_and_keeps_interruptions(
    corpus: list[TurnItem], tmp_path: Path
) -> None:
    ten = _config("ten +words (opt-in)")
    results = run_turns(corpus, (*CONFIGS[:2], ten))
    before, staged, default = (results[c.name] for c in (*CONFIGS[:2], ten))
    # Before: the bot's own echo at -12..-24 dB stops it (the measurement).
    assert before["false_echo_15"] is not None and before["false_echo_15"] > 0.3
    # After: no echo at -12 dB or quieter stops the bot ...
    for level in (12, 15, 18, 21, 24, 30, 35):
        assert staged[f"false_echo_{level}db"] in (None, 0.0), level
        assert default[f"false_echo_{level}db"] in (None, 0.0), level
    # ... and true interruptions still do, never before the caller spoke.
    assert default["recall"] is not None and default["recall"] >= 0.9
    assert default["stopped_before_onset"] == 0
    # Two stages: the bot goes quiet at the onset, long before the cancel, and no earlier.
    assert staged["recall"] is not None and staged["recall"] >= 0.9
    assert staged["stopped_before_onset"] == 0
    p50, c50 = staged["pause_p50_ms"], staged["cancel_p50_ms"]
    assert p50 is not None and c50 is not None and p50 < 120 < c50
    assert staged["false_echo_15"] in (None, 0.0)
    # False alarms paused the bot and it went on: some resume gap was measured.
    assert staged["resume_gap_p95_ms"] is not None
    rendered = render_turns(results)
    assert (
        "recall" in rendered.splitlines()[1]
        and "-15dB" in rendered
        and "silence95" in rendered
        and "resume_max" in rendered
    )
    out = tmp_path / "turns.json"
    write_json(out, results, seed=12, per_category=12)
    doc = json.loads(out.read_text())
    assert doc["configs"][CONFIGS[1].name]["items"] == len(corpus)
    assert 0 < doc["configs"][ten.name]["cpu_pct"] < 100


def test_partials_follow_the_words_in_time(corpus: list[TurnItem]) -> None:
    item = next(i for i in corpus if i.category == "interruption" and " " in i.text)
    heard = partials(item, latency_s=0.3)
    assert [text for _, text in heard][-1] == " ".join(
        item.text.replace("-", " ").replace(",", "").split()
    ).rstrip("?")
    times = [t for t, _ in heard]
    assert times == sorted(times)
    assert item.onset_s is not None and times[0] > item.onset_s + 0.3
    assert times[-1] == pytest.approx(item.onset_s + float(item.meta["speech_s"]) + 0.3)
    assert partials(next(i for i in corpus if i.category == "nonspeech")) == []


def test_decision_with_words_keeps_false_cancels_under_bounds(corpus: list[TurnItem]) -> None:
    # 12 items per category (seed 12): recall and false cancels as rates; the bounds leave room
    # for one unlucky item beyond the bench's targets, and fail if backchannels or noise cut the
    # bot as they did with the VAD alone (77 % and 60 % on the full corpus). Measured on TEN VAD:
    # Silero (the default) cancels on 17 % of these non-speech items and on echo.
    default = _config("ten +words (opt-in)")
    r = evaluate(corpus, default)
    assert r["recall"] is not None and r["recall"] >= 11 / 12
    for key in ("false_backchannel", "false_nonspeech", "false_noise", "false_echo_15"):
        assert r[key] is not None and r[key] <= 1 / 12, (key, r[key])
    # The same items with the STT stalled: the VAD's confirmation and the window decide.
    mute = evaluate(
        corpus,
        TurnConfig("stalled", default.vad, default.echo, default.decision, stt_words=False, stt_lost=True),
    )
    assert mute["recall"] is not None and mute["recall"] >= 11 / 12
    assert mute["false_nonspeech"] is not None and mute["false_nonspeech"] <= 1 / 12


def test_licence_clean_default_keeps_recall_and_settles_backchannels(corpus: list[TurnItem]) -> None:
    # The service's default (Silero VAD + words): every interruption cancels, and words keep
    # backchannels from cutting the bot (3 % on the full corpus; 12 % at threshold 0.5).
    default = _config("(default)")
    assert default.vad == VadSettings() and default.vad.engine == "silero"
    r = evaluate(corpus, default)
    assert r["recall"] is not None and r["recall"] >= 11 / 12
    assert r["stopped_before_onset"] == 0
    assert r["false_backchannel"] is not None and r["false_backchannel"] <= 1 / 12


def test_heldout_corpus_has_other_phrases_voices_and_seed() -> None:
    held = build_corpus(3, seed=1012, heldout=True)
    spoken = [i for i in held if i.category in ("interruption", "backchannel")]
    assert spoken and all(i.text in HELDOUT_INTERRUPTIONS + HELDOUT_BACKCHANNELS for i in spoken)
    assert not {i.text for i in spoken} & set(INTERRUPTIONS + BACKCHANNELS) - {"да"}
    # Debian has one Russian festival voice, so every set has it: the one voice they share.
    assert set(HELDOUT_VOICES) & set(VOICES) == {FESTIVAL_RU}
    assert all(i.meta["voice"] in HELDOUT_VOICES for i in spoken)
    assert all(i.meta["bot_text"] in BOT_PHRASES for i in held)


def test_second_heldout_corpus_shares_no_phrase_or_voice_with_the_others() -> None:
    held = build_corpus(3, seed=2012, heldout=2)
    spoken = [i for i in held if i.category in ("interruption", "backchannel")]
    assert spoken and all(i.text in HELDOUT2_INTERRUPTIONS + HELDOUT2_BACKCHANNELS for i in spoken)
    earlier = set(INTERRUPTIONS + BACKCHANNELS + HELDOUT_INTERRUPTIONS + HELDOUT_BACKCHANNELS)
    assert not set(HELDOUT2_INTERRUPTIONS + HELDOUT2_BACKCHANNELS) & earlier
    assert set(HELDOUT2_VOICES) & set(VOICES + HELDOUT_VOICES) == {FESTIVAL_RU}  # the one festival voice
    assert all(i.meta["voice"] in HELDOUT2_VOICES for i in spoken)
    with pytest.raises(ValueError, match="heldout=5"):
        build_corpus(1, heldout=5)


def test_default_decision_keeps_the_bot_going_through_noise_and_resumes_at_the_next_frame(
    corpus: list[TurnItem],
) -> None:
    # Silero + words with the STT known to work (it gave words earlier in the call): no-words
    # windows resume, so coughs, noise and echo do not cut the bot; every resume plays the next
    # unsent bot frame at the next tick. With a stalled STT, sustained speech cuts.
    r = evaluate(corpus, _config("(default)"))
    assert r["recall"] is not None and r["recall"] >= 11 / 12
    for key in ("false_backchannel", "false_nonspeech", "false_noise", "false_echo_15"):
        assert r[key] is not None and r[key] <= 1 / 12, (key, r[key])
    assert r["resume_lag_max_ms"] is not None and r["resume_lag_max_ms"] <= 20.0 + 1e-6
    assert r["frames_repeated"] == 0
    mute = evaluate(corpus, _config("silero +words, STT stalled"))
    assert mute["recall"] is not None and mute["recall"] >= 11 / 12


def test_the_bots_recognised_echo_is_not_the_caller(corpus: list[TurnItem]) -> None:
    loud = [i for i in corpus if echo_partials(i)]
    assert loud and all(i.echo_db >= -12 for i in loud)
    # Loud echo (-6..-12 dB) passes the VAD and the STT turns it into the bot's words: known as
    # the bot's, they do not cut it; taken for the caller's, they cut 3 of these 4 items with the
    # level gate alone, fewer once the echo is subtracted (the VAD hears it only before the echo
    # path is found).
    known = evaluate(loud, _config("silero +words (default)"))
    unknown = evaluate(loud, _config("bot text unknown"))
    level_gate = evaluate(
        loud, dataclasses.replace(_config("bot text unknown"), echo=EchoSettings(cancel=False))
    )
    assert known["false_echo"] == 0.0
    assert level_gate["false_echo"] is not None and level_gate["false_echo"] >= 0.5
    assert unknown["false_echo"] is not None and unknown["false_echo"] <= level_gate["false_echo"]


def test_third_heldout_corpus_has_its_own_voices() -> None:
    held = build_corpus(2, seed=3012, heldout=3)
    spoken = [i for i in held if i.category in ("interruption", "backchannel")]
    assert spoken and all(i.text in HELDOUT3_INTERRUPTIONS + HELDOUT3_BACKCHANNELS for i in spoken)
    assert not set(HELDOUT3_VOICES) & set(VOICES + HELDOUT_VOICES + HELDOUT2_VOICES)
    assert not set(HELDOUT4_VOICES) & set(VOICES + HELDOUT_VOICES + HELDOUT2_VOICES + HELDOUT3_VOICES)
    assert all(i.meta["voice"] in HELDOUT3_VOICES for i in spoken)


@pytest.mark.skipif(
    not shutil.which("text2wave")
    or not Path("/usr/share/festival/voices/russian/msu_ru_nsh_clunits").is_dir(),
    reason="festival with festvox-ru is needed (make system-deps installs festival festvox-ru)",
)
def test_festival_voice_speaks_russian_at_8khz() -> None:
    # Speech, not silence and not spelled letters (9 letters would take several seconds): a word's
    # length and a speaking level. Festival's clunits voice ignores its Duration_Stretch, so the
    # speed (sox tempo) must still change the length.
    pcm = synth("подождите", FESTIVAL_RU)
    x = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    assert 0.3 <= len(x) / SAMPLE_RATE <= 2.5
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(x**2)) / 32768)
    assert -35 <= rms_dbfs <= -6, rms_dbfs
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)
    voiced = np.sqrt(np.mean(frames**2, axis=1)) > 10 ** (-40 / 20) * 32768
    assert voiced.mean() >= 0.5  # mostly voiced, not a click and silence
    assert len(synth("подождите", FESTIVAL_RU, 120)) > len(pcm) * 1.2
    with pytest.raises(FileNotFoundError, match="not installed"):
        synth("да", "festival:no_such_voice")
