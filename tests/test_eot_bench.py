"""The end-of-turn bench (bench/eot_bench.py) on a small split-utterance corpus."""

from __future__ import annotations

import shutil

import pytest

from bench.eot_bench import EOT_CONFIGS, render_eot, run_eot
from bench.split_corpus import build_split_corpus

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")

DEFAULT = next(c for c in EOT_CONFIGS if "(default)" in c.name)


def test_split_answers_are_joined_and_ordinary_ones_not_held() -> None:
    items = build_split_corpus(40, 16, seed=3)
    assert build_split_corpus(40, 16, seed=3)[5].audio == items[5].audio  # reproducible
    assert {i.kind for i in items if i.split} == {"number", "other"}
    assert any(i.lead_complete for i in items)
    results = run_eot(items, [EOT_CONFIGS[0], EOT_CONFIGS[1], DEFAULT])
    before, number_only, after = (results[c.name] for c in (EOT_CONFIGS[0], EOT_CONFIGS[1], DEFAULT))
    assert before["joined"] == 0.0  # every final a turn: each split answer is two turns
    assert (before["wrong_number"] or 0) > 0  # "100" of "100" ... "20" taken alone
    assert after["joined_number"] is not None and after["joined_number"] >= 0.9
    assert after["right_number"] is not None and after["right_number"] >= 0.9
    assert after["wrong_number"] == 0
    # Words that cannot end a sentence hold the final: other-state splits join.
    assert number_only["joined_other"] is not None and after["joined_other"] is not None
    assert after["joined_other"] >= 0.85 > number_only["joined_other"]
    assert after["added_other_p50_ms"] == 0.0  # ordinary answers are not held
    assert after["held_other"] == 0.0
    assert "joined_other" in render_eot(results, "seed 3")


def test_the_held_out_corpus_has_its_own_phrases() -> None:
    tuning = {p[2] for i in build_split_corpus(30, 10, seed=3) if i.kind == "other" for p in i.parts}
    heldout = {
        p[2] for i in build_split_corpus(30, 10, seed=3, heldout=True) if i.kind == "other" for p in i.parts
    }
    shared = tuning & heldout
    assert tuning and heldout and shared <= {"да", "нет"}  # only the bare yes/no leads
