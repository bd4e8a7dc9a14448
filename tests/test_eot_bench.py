"""The end-of-turn bench (bench/eot_bench.py) on a small split-utterance corpus."""

from __future__ import annotations

import shutil

import pytest

from bench.eot_bench import EOT_CONFIGS, render_eot, run_eot
from bench.split_corpus import build_split_corpus

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def test_split_number_answers_are_joined_and_ordinary_ones_not_held() -> None:
    items = build_split_corpus(24, 12, seed=3)
    assert build_split_corpus(24, 12, seed=3)[5].audio == items[5].audio  # reproducible
    results = run_eot(items, [EOT_CONFIGS[0], EOT_CONFIGS[3]])
    before, after = results[EOT_CONFIGS[0].name], results[EOT_CONFIGS[3].name]
    assert before["joined"] == 0.0  # every final a turn: each split answer is two turns
    assert after["joined_number"] is not None and after["joined_number"] >= 0.9
    assert after["right_number"] is not None and after["right_number"] >= 0.9
    assert after["added_other_p50_ms"] == 0.0  # ordinary answers are not held
    assert "joined_num" in render_eot(results)
