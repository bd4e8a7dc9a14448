"""The garbage-collector policy: full collections once per `[gc] full_every` middle ones."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from bridge.gc_policy import GcSettings, apply_gc_settings


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
