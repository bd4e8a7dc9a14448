"""The per-call figures' caller process (`bench.caller_process`) on its own: no calls, no espeak."""

from __future__ import annotations

from bench.caller_process import CallerProcess
from bridge.gc_policy import GcSettings


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
