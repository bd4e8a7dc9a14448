"""The garbage-collector policy: full collections once per `[gc] full_every` middle ones."""

from __future__ import annotations

import dataclasses
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from bridge.gc_policy import GcSettings, apply_gc_settings, freeze_call_objects


@pytest.fixture
def restored_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


@pytest.mark.usefixtures("restored_thresholds")
def test_only_the_oldest_generations_threshold_changes() -> None:
    gc.set_threshold(700, 10, 10)
    assert apply_gc_settings(GcSettings(full_every=250)) == (700, 10, 250)
    assert apply_gc_settings(GcSettings()) == (700, 10, 100)


@pytest.mark.usefixtures("restored_thresholds")
def test_full_collections_are_rarer() -> None:
    """Counted by the collector's own statistics, not timed."""

    def full_collections(full_every: int, objects: int) -> int:
        gc.collect()
        gc.set_threshold(100, 10, 10)
        apply_gc_settings(GcSettings(full_every=full_every))
        before = gc.get_stats()[2]["collections"]
        kept: list[list[object]] = []  # objects that survive into the oldest generation, as calls'
        for _ in range(objects):
            kept.append([])
        return int(gc.get_stats()[2]["collections"] - before)

    default = full_collections(10, 200_000)
    rare = full_collections(100, 200_000)
    assert default > 0
    assert rare < default


def test_a_bad_value_names_the_setting() -> None:
    with pytest.raises(ValidationError, match="full_every"):
        GcSettings(full_every=0)


class _Node:
    """A node of a reference cycle."""

    other: object = None


def test_freezing_a_call_freezes_what_lives_and_not_the_young_garbage() -> None:
    gc.collect()
    try:
        before = gc.get_freeze_count()  # not 0: the suite's services froze their start-up
        assert not freeze_call_objects(GcSettings())  # off by default
        assert gc.get_freeze_count() == before
        live = _Node()
        dead = _Node()
        dead.other = dead  # young cyclic garbage: the young collection frees it before the freeze
        gone = weakref.ref(dead)
        del dead
        assert freeze_call_objects(GcSettings(freeze_calls=True))
        assert gone() is None
        assert gc.get_freeze_count() > before
        assert not any(o is live for o in gc.get_objects())  # frozen: no generation holds it
    finally:
        gc.unfreeze()


def test_every_gc_setting_is_in_the_readme_settings_table() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    (row,) = [line for line in readme.splitlines() if line.startswith("| `[gc]` |")]
    assert [f.name for f in dataclasses.fields(GcSettings) if f"`{f.name}`" not in row] == []
