"""The turn corpus's "same seed, same bytes" across processes (bench/turn_corpus.py).

In one process `synth` is cached, so a build repeated there reuses the first build's audio and
cannot show a synthesizer that differs from run to run: sox's tempo (festival's speed) dithered with
an unseeded generator, and the held-out 2 corpus changed its hash on every bench run. Here two
fresh interpreters (with different hash seeds, so no set or dict order can hide either) build the
same small corpus that has festival items at a speed sox changes, and the festival-plus-sox path is
run twice uncached.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.festival_voice import festival_pcm
from bench.turn_corpus import FESTIVAL, FESTIVAL_RU

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not shutil.which("espeak-ng")
    or not shutil.which("text2wave")
    or not shutil.which("sox")
    or not Path("/usr/share/festival/voices/russian/msu_ru_nsh_clunits").is_dir(),
    reason="espeak-ng, festival with festvox-ru and sox are needed (make system-deps)",
)

# Held out 2 at the bench's seed (12 + 2000), 2 items per category: item 0004 is festival at 169 wpm.
_BUILD = """
import hashlib
from bench.turn_corpus import build_corpus
h = hashlib.sha256()
items = build_corpus(2, seed=2012, heldout=2)
for item in items:
    for part in (item.name.encode(), item.bot, item.inbound, item.caller, repr(item.meta).encode()):
        h.update(part)
print(sum(str(i.meta.get("voice", "")).startswith("festival:") and i.meta["speed"] != 170 for i in items))
print(h.hexdigest())
"""


def _build_in_fresh_process(hash_seed: str) -> tuple[int, str]:
    """(festival items sox re-timed, sha256 hex of the corpus) from a new interpreter."""
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", _BUILD],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    count, digest = proc.stdout.split()
    return int(count), digest


def test_two_processes_build_the_same_bytes_from_the_same_seed() -> None:
    first_count, first = _build_in_fresh_process("1")
    _, second = _build_in_fresh_process("2")
    assert first_count >= 1  # else sox is not on the path under test
    assert first == second


def test_festival_at_another_speed_gives_the_same_bytes_twice() -> None:
    # festival_pcm is not cached: each call runs text2wave and sox again.
    voice = FESTIVAL_RU.removeprefix(FESTIVAL)
    assert festival_pcm("подождите", voice, 130) == festival_pcm("подождите", voice, 130)
