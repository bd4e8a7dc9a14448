"""The cluster on one machine (issue 14): Kamailio's dispatcher in front of two nodes (each one
Asterisk + one `voicebridge serve --standins`, cluster/cluster.sh), Redis shared; sipp places
calls through the proxy at a steady rate.

- call load (in `make test`): node 2 disabled at the proxy, long calls land on node 1; node 2
  enabled again, the next calls all go to node 2 (the proxy counts calls in progress per node:
  Kamailio's dispatcher algorithm 10; round-robin would send every other one to node 1), and the
  counts go back to 0 as the calls end.
- both: the nodes' entries in the node registry (Redis), node 1 marked draining, then gone.
- short (in `make test`): node 1 is drained (SIGTERM to its voicebridge) mid-run. Its calls in
  progress complete; the proxy's probe of node 1 fails (its voicebridge is not ready) and takes it
  out; calls that reached it before that are refused with 503 and retried on node 2: every call
  placed completes.
- long (`make cluster-test-long`, CLUSTER_LONG=1): the drain, node 1 back, then node 2's
  Asterisk SIGKILLed and restarted; measured: time until the dispatcher marks it inactive and
  until new calls stop going to it, time until it takes calls again.

Both print a table (pytest -s shows it; it is also written to the test's tmp dir).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.registry import NodeStatus
from testkit.cluster import CallRecord, Cluster, now, place_calls, running_cluster, table

pytestmark = [pytest.mark.asterisk, pytest.mark.cluster]

HOLD_MS = 6000  # each call: answered, 6 s of (silent) talk, the caller's BYE


def _answered_by(calls: dict[str, CallRecord], node: str, before: float | None = None) -> list[CallRecord]:
    return [
        c
        for c in calls.values()
        if c.final_code == 200
        and c.final_node == node
        and (before is None or (c.answered_at is not None and c.answered_at < before))
    ]


async def _until_registry(cluster: Cluster, check: Callable[[dict[str, NodeStatus]], bool]) -> None:
    try:
        async with asyncio.timeout(10):
            while not check(await cluster.registry()):  # noqa: ASYNC110 - other processes write it
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"registry: {await cluster.registry()}") from None


def _report(tmp_path: Path, text: str) -> None:
    print("\n" + text)
    (tmp_path / "cluster-table.txt").write_text(text + "\n")


async def _drain_node1(cluster: Cluster) -> float:
    """Once node 1 has a call in progress, SIGTERM its voicebridge; returns when (epoch s)."""
    await cluster.wait_for(
        "a call answered by node 1", lambda: bool(_answered_by(cluster.proxy_log(), "node1")), 30
    )
    at = now()
    await cluster.sh("drain", "1", timeout_s=10)
    return at


async def test_drain_sends_new_calls_to_the_other_node_and_lets_calls_finish(
    asterisk: str, tmp_path: Path
) -> None:
    calls_n = 10
    async with running_cluster(2, drain_timeout_s=30) as cluster:
        load_task = asyncio.create_task(
            place_calls(tmp_path, calls=calls_n, rate_per_s=1.0, hold_ms=HOLD_MS), name="test-cluster-load"
        )
        try:
            # Both nodes in the registry (Redis), taking calls.
            nodes = await cluster.registry()
            assert {k: v.draining for k, v in nodes.items()} == {"node1": False, "node2": False}, nodes
            drained_at = await _drain_node1(cluster)
            # The drain shows in the registry within its interval (2 s), while node 1's call goes on.
            await _until_registry(cluster, lambda r: r.get("node1") is not None and r["node1"].draining)
            # Its voicebridge is not ready any more: the proxy's probe fails and takes node 1 out.
            await cluster.wait_ds("node1", "I", 10)
            load = await load_task
        finally:
            if not load_task.done():
                load_task.cancel()
                await asyncio.gather(load_task, return_exceptions=True)
        # The drained voicebridge exits by itself once its last call has ended.
        await cluster.wait_for(
            "node 1's voicebridge exiting after its drain",
            lambda: cluster.pid("node1/voicebridge") is None,
            40,
        )
        calls = cluster.proxy_log()
        left = await cluster.registry()
        assert set(left) == {"node2"}, left  # node 1 removed its entry when it stopped

    in_progress = _answered_by(calls, "node1", before=drained_at)
    after_drain_on_node1 = [
        c
        for c in calls.values()
        if c.final_node == "node1" and c.answered_at is not None and c.answered_at > drained_at + 0.5
    ]
    retried = [c for c in calls.values() if c.retried]
    _report(
        tmp_path,
        table(
            f"cluster: 2 nodes, {calls_n} calls at 1/s, {HOLD_MS / 1000:.0f} s each, node 1 drained mid-run",
            load,
            calls,
            [
                ("in progress on node 1 at the drain", str(len(in_progress))),
                ("answered by node 1 after the drain", str(len(after_drain_on_node1))),
            ],
        ),
    )
    assert len(calls) == calls_n, f"the proxy saw {len(calls)} calls, sipp placed {calls_n}"
    assert load.failed == 0 and load.successful == calls_n, load.errors[-2000:] + load.output[-1500:]
    assert in_progress, "no call was in progress on node 1 when it was drained"
    assert not after_drain_on_node1, [c.call_id for c in after_drain_on_node1]
    # Calls that reached node 1 before its failed probe got 503 and were retried on node 2.
    assert all(c.retried_after == ["503"] and c.tried[0] == "node1" for c in retried), retried


async def _until_loads(cluster: Cluster, want: dict[str, int], timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while await cluster.ds_loads() != want:  # noqa: ASYNC110 - Kamailio's state
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"dispatcher loads {await cluster.ds_loads()}, want {want}") from None


async def test_new_calls_go_to_the_node_with_fewer_calls_in_progress(asterisk: str, tmp_path: Path) -> None:
    long_n, short_n = 4, 3
    (tmp_path / "long").mkdir()
    (tmp_path / "short").mkdir()
    async with running_cluster(2) as cluster:
        await cluster.sh("disable", "2", timeout_s=10)
        long_task = asyncio.create_task(
            place_calls(tmp_path / "long", calls=long_n, rate_per_s=2.0, hold_ms=25_000),
            name="test-cluster-long-calls",
        )
        try:
            # Node 2 out: the long calls all land on node 1, and the proxy counts them there.
            await _until_loads(cluster, {"node1": long_n, "node2": 0}, 20)
            await cluster.sh("enable", "2", timeout_s=10)
            short = await place_calls(
                tmp_path / "short",
                calls=short_n,
                rate_per_s=1.0,
                hold_ms=2000,
                sip_port=5072,
                media_port=16700,
            )
            # The short calls ended (their BYE went through the proxy): node 2 counts 0 again.
            loads_after_short = await cluster.ds_loads()
            long = await long_task
        finally:
            if not long_task.done():
                long_task.cancel()
                await asyncio.gather(long_task, return_exceptions=True)
        loads_after_long = await cluster.ds_loads()
        calls = cluster.proxy_log()

    by_node = {c.call_id: c.final_node for c in calls.values()}
    on_node1 = _answered_by(calls, "node1")
    on_node2 = _answered_by(calls, "node2")
    _report(
        tmp_path,
        table(
            f"cluster call load: {long_n} long calls on node 1 (node 2 disabled), then node 2 enabled"
            f" and {short_n} short calls",
            long,
            calls,
            [
                ("short calls placed / completed", f"{short.placed} / {short.successful}"),
                ("dispatcher load after the short calls", str(loads_after_short)),
                ("dispatcher load after the long calls", str(loads_after_long)),
            ],
        ),
    )
    assert long.successful == long_n and short.successful == short_n, (
        long.errors[-1500:],
        short.errors[-1500:],
    )
    assert len(on_node1) == long_n and len(on_node2) == short_n, by_node
    assert loads_after_short == {"node1": long_n, "node2": 0}
    assert loads_after_long == {"node1": 0, "node2": 0}


@pytest.mark.skipif(
    os.environ.get("CLUSTER_LONG") != "1", reason="the long cluster run: make cluster-test-long"
)
async def test_long_drain_then_asterisk_killed_and_restarted(asterisk: str, tmp_path: Path) -> None:
    calls_n, rate = 60, 1.0
    async with running_cluster(2, drain_timeout_s=30) as cluster:
        load_task = asyncio.create_task(
            place_calls(tmp_path, calls=calls_n, rate_per_s=rate, hold_ms=HOLD_MS), name="test-cluster-load"
        )
        try:
            drained_at = await _drain_node1(cluster)
            drain_out_at = await cluster.wait_ds("node1", "I", 10)  # its probe follows /readyz
            await cluster.wait_for(
                "node 1's voicebridge exiting", lambda: cluster.pid("node1/voicebridge") is None, 40
            )
            await cluster.sh("start-voicebridge", "1", timeout_s=60)  # returns when /readyz is 200
            back_at = now()
            node1_in_at = await cluster.wait_ds("node1", "A", 10)
            # Node 1 takes calls again, then node 2's Asterisk dies.
            await cluster.wait_for(
                "node 1 answering again",
                lambda: any(
                    (c.answered_at or 0) > back_at for c in _answered_by(cluster.proxy_log(), "node1")
                ),
                30,
            )
            killed_at = now()
            await cluster.sh("kill-asterisk", "2", timeout_s=10)
            marked_at = await cluster.wait_ds("node2", "I", 30)
            # New calls keep coming while node 2 is down: they must all be answered (by node 1).
            await cluster.wait_for(
                "4 calls answered while node 2 is down",
                lambda: sum(1 for c in cluster.proxy_log().values() if (c.answered_at or 0) > marked_at) >= 4,
                30,
            )
            restart_at = now()
            await cluster.sh("start-asterisk", "2", timeout_s=60)  # returns when its ARI answers
            ari_back_at = now()
            active_again_at = await cluster.wait_ds("node2", "A", 30)
            load = await load_task
        finally:
            if not load_task.done():
                load_task.cancel()
                await asyncio.gather(load_task, return_exceptions=True)
        calls = cluster.proxy_log()

    in_progress_drained = _answered_by(calls, "node1", before=drained_at)
    lost_with_node2 = [
        c
        for c in _answered_by(calls, "node2", before=killed_at)
        if c.answered_at is not None and c.answered_at > killed_at - HOLD_MS / 1000
    ]
    tried_node2_after_kill = [c for c in calls.values() if c.first_try_at > killed_at and "node2" in c.tried]
    last_try_node2 = max(
        (c.first_try_at for c in tried_node2_after_kill if c.first_try_at < restart_at), default=killed_at
    )
    answered_node2_again = min(
        (c.answered_at for c in _answered_by(calls, "node2") if c.answered_at and c.answered_at > restart_at),
        default=None,
    )
    _report(
        tmp_path,
        table(
            f"cluster long: 2 nodes, {calls_n} calls at {rate:g}/s, {HOLD_MS / 1000:.0f} s each; node 1 drained"
            " and restarted; node 2's Asterisk SIGKILLed and restarted",
            load,
            calls,
            [
                ("in progress on node 1 at the drain", str(len(in_progress_drained))),
                ("drain -> proxy marks node 1 inactive", f"{drain_out_at - drained_at:.1f} s"),
                ("node 1 ready again -> active at the proxy", f"{node1_in_at - back_at:.1f} s"),
                ("in progress on node 2 at the kill (lost, about)", str(len(lost_with_node2))),
                ("kill -> dispatcher marks node 2 inactive", f"{marked_at - killed_at:.1f} s"),
                ("kill -> last new call tried on node 2", f"{last_try_node2 - killed_at:.1f} s"),
                (
                    "calls tried on dead node 2, then retried",
                    str(sum(1 for c in tried_node2_after_kill if c.first_try_at < restart_at)),
                ),
                ("restart -> node 2's Asterisk answers ARI", f"{ari_back_at - restart_at:.1f} s"),
                ("restart -> node 2 active again", f"{active_again_at - restart_at:.1f} s"),
                (
                    "restart -> node 2 answers a call",
                    f"{answered_node2_again - restart_at:.1f} s" if answered_node2_again else "-",
                ),
            ],
        ),
    )
    # No call fails, not even those in progress on the killed Asterisk (their media died with
    # it, but the proxy answers their BYE).
    assert load.failed == 0, load.errors[-2000:]
    # New calls avoid the killed node within two probe intervals (DS_PING_S, 2 s).
    assert last_try_node2 - killed_at <= 4.0, last_try_node2 - killed_at
    assert sum(c.bye_answered_by_proxy for c in calls.values()) <= len(lost_with_node2)
    assert all(c.final_code == 200 for c in calls.values()), [
        c for c in calls.values() if c.final_code != 200
    ]
