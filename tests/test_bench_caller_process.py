"""The per-call figures' caller process (`bench.caller_process`) on its own: no calls, no espeak."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from typing import cast

from bench.caller_process import CallerProcess, _Side
from bridge.gc_policy import GcSettings
from testkit.fake_asterisk import FakeAsterisk


def test_the_caller_process_collects_as_the_bridge_process_does() -> None:
    # Inline, the callers ran under the bridge's collector policy (start-up objects frozen, full
    # collections rarer). The child must too, or its CPU figure counts collector work the callers
    # never did inline: a quarter of the child's perf samples at 200 calls before it did.
    with CallerProcess(realtime=False) as proc:
        thresholds, frozen = proc.collector
        child = proc.proc
        assert child is not None and child.is_alive()
    assert thresholds[2] == GcSettings().full_every
    assert frozen > 1000  # everything imported at start-up
    assert child.exitcode == 0  # and it left when told to


class _Closed:
    """A caller whose connection has closed, with its counters."""

    frames_sent = audio_count = voice_count = 0
    hangup_received = False
    protocol_error = None

    async def wait_closed(self) -> None:
        return None


def test_a_caller_closing_after_the_bench_was_killed_is_not_an_error() -> None:
    # Bench killed mid-level: the bridge's end of every call closes, and each caller's watcher
    # reports it on a pipe with no one at the other end. That must not raise (it was one
    # "Task exception was never retrieved" traceback per caller); the pipe's EOF ends the child.
    here, there = mp.Pipe()
    there.close()
    asyncio.run(_Side(here)._watch("call-1", cast(FakeAsterisk, _Closed())))
