"""The cluster test's harness: `cluster/cluster.sh` (Kamailio + N nodes + Redis on 127.0.77.x), a
sipp load placed through the proxy, the proxy's per-call log, and the printed table.

Kamailio logs one `VBCLUSTER` line per routing step (cluster/kamailio.cfg): `try` (first node),
`retry` (after a 503/408/timeout, to the next node), `timeout` (no answer at all), `reply` (the
final answer of an INVITE with its code and node), `exhausted`/`nonode` (no node left), `byelost`
(the node never answered the caller's BYE: the proxy answered it). Times are
Unix epoch seconds (`$TV(Sn)`), the same clock as `time.time()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from bridge.registry import NodeStatus, read_nodes
from testkit.sip import write_rtp_pcap

__all__ = [
    "CALLER_IP",
    "PROXY",
    "CallRecord",
    "Cluster",
    "LoadResult",
    "node_ip",
    "parse_proxy_log",
    "place_calls",
    "running_cluster",
    "table",
]

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SH = REPO / "cluster" / "cluster.sh"
SCENARIO = REPO / "cluster" / "sipp" / "uac_call.xml"
NET = "127.0.77"
PROXY = (f"{NET}.10", 5060)
CALLER_IP = f"{NET}.2"
REDIS_URL = f"redis://{NET}.1:6379/0"
_LINE = re.compile(r"VBCLUSTER t=(?P<t>[\d.]+) (?P<kind>\w+) ci=(?P<ci>\S+)(?P<rest>.*)")
_KV = re.compile(r"(\w+)=(\S+)")


def node_ip(i: int) -> str:
    """Node `i`'s address (1-based), as cluster.sh assigns it."""
    return f"{NET}.{10 + i}"


def _node_of(value: str) -> str:
    """`sip:127.0.77.11:5060` or `127.0.77.11` as `node1`."""
    m = re.search(rf"{re.escape(NET)}\.(\d+)", value)
    return f"node{int(m.group(1)) - 10}" if m else value


@dataclass
class CallRecord:
    """What the proxy did with one call (INVITE): nodes tried, in order, and its final answer."""

    call_id: str
    first_try_at: float = 0.0
    tried: list[str] = field(default_factory=list)  # node names, in order
    retried_after: list[str] = field(default_factory=list)  # the code (or "timeout") of each retry
    final_code: int | None = None
    final_node: str | None = None
    answered_at: float | None = None
    bye_answered_by_proxy: bool = False  # the node was gone: the proxy answered the caller's BYE

    @property
    def retried(self) -> bool:
        return len(self.tried) > 1


def parse_proxy_log(text: str) -> dict[str, CallRecord]:
    """Kamailio's `VBCLUSTER` lines as one record per Call-ID, in order of first try."""
    calls: dict[str, CallRecord] = {}
    for m in _LINE.finditer(text):
        t, kind, ci = float(m["t"]), m["kind"], m["ci"]
        kv = dict(_KV.findall(m["rest"]))
        rec = calls.setdefault(ci, CallRecord(ci, first_try_at=t))
        if kind == "try":
            rec.tried.append(_node_of(kv["dst"]))
        elif kind == "retry":
            rec.tried.append(_node_of(kv["dst"]))
            rec.retried_after.append(kv.get("code", "?"))
        elif kind == "reply":
            code = int(kv["code"])
            if code == 200 or rec.final_code != 200:
                rec.final_code, rec.final_node = code, _node_of(kv["src"])
            if code == 200 and rec.answered_at is None:
                rec.answered_at = t
        elif kind == "byelost":
            rec.bye_answered_by_proxy = True
        elif kind in ("exhausted", "nonode"):
            rec.final_code = rec.final_code or 503
    return calls


@dataclass
class LoadResult:
    """One sipp run: its exit code, success/failure counters and error log."""

    placed: int
    successful: int
    failed: int
    returncode: int
    errors: str
    output: str

    def failure_reasons(self) -> dict[str, int]:
        """Why calls failed, from sipp's error log: one reason per failed call ("Dead call" lines,
        sipp's own clean-up after an abort, and its CPU watchdog's warnings are left out)."""
        reasons: dict[str, int] = {}
        for event in re.split(r"(?=\d{4}-\d\d-\d\d\t)", self.errors):
            msg = event.split(": ", 1)[-1]
            if not msg.startswith("Aborting"):
                continue
            got = re.search(r"received '(SIP/2.0 [^\r\n]*)", msg)
            cseq = re.search(r"CSeq: *(\d+ \w+)", msg)
            if got:
                reason = (
                    f"{got[1].removeprefix('SIP/2.0 ')} to the {cseq[1].split()[1] if cseq else 'request'}"
                )
            else:
                reason = re.sub(r"'?\d+-\d+@[\d.]+'?", "<call>", msg.splitlines()[0])[:90]
            reasons[reason] = reasons.get(reason, 0) + 1
        return reasons


@dataclass
class Cluster:
    """A running cluster (cluster.sh's state directory) and its commands."""

    state_dir: Path
    nodes: int
    env: dict[str, str]

    async def sh(self, *args: str, timeout_s: float = 120.0) -> str:
        """Run `cluster.sh ARGS` (bounded); raise with its output if it fails."""
        proc = await asyncio.create_subprocess_exec(
            "bash",
            str(CLUSTER_SH),
            *args,
            cwd=REPO,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(timeout_s):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"cluster.sh {' '.join(args)} exited {proc.returncode}:\n{text}")
        return text

    def proxy_log(self) -> dict[str, CallRecord]:
        return parse_proxy_log((self.state_dir / "kamailio.log").read_text(errors="replace"))

    def pid(self, what: str) -> int | None:
        """The pid of `what` (e.g. "node1/voicebridge", "node2/asterisk") if it runs."""
        try:
            pid = int((self.state_dir / f"{what}.pid").read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    async def registry(self) -> dict[str, NodeStatus]:
        """The node registry in the cluster's Redis, by node name."""
        client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        try:
            return {n.node: n for n in await read_nodes(client)}
        finally:
            await client.aclose()

    async def ds_table(self) -> dict[str, tuple[str, int]]:
        """The dispatcher's view per node: its flags (`AP` active, `IP` inactive, `DX` disabled,
        ...) and the calls in progress the proxy counts on it (call-load algorithm)."""
        out = await self.sh("ds-state", timeout_s=10)
        rows = (line.split() for line in out.splitlines() if line)
        return {_node_of(uri): (flags, int(load)) for uri, flags, load in rows}

    async def ds_state(self) -> dict[str, str]:
        """The dispatcher's flags per node (`AP` active, `IP` inactive, ...)."""
        return {node: flags for node, (flags, _) in (await self.ds_table()).items()}

    async def ds_loads(self) -> dict[str, int]:
        """The calls in progress the dispatcher counts per node."""
        return {node: load for node, (_, load) in (await self.ds_table()).items()}

    async def wait_ds(self, node: str, flags: str, timeout_s: float) -> float:
        """Poll the dispatcher until `node`'s flags start with `flags` ("I" inactive, "A" active),
        bounded; returns when that was seen (epoch s)."""
        try:
            async with asyncio.timeout(timeout_s):
                while not (await self.ds_state()).get(node, "").startswith(flags):  # noqa: ASYNC110 - Kamailio's state
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(f"dispatcher: {node} not {flags} within {timeout_s} s") from None
        return now()

    async def wait_for(
        self, what: str, check: Callable[[], bool], timeout_s: float, poll_s: float = 0.1
    ) -> None:
        """Poll `check` (files and pids another process writes) until true, bounded."""
        try:
            async with asyncio.timeout(timeout_s):
                while not check():  # noqa: ASYNC110 - other processes write what is checked
                    await asyncio.sleep(poll_s)
        except TimeoutError:
            raise AssertionError(f"{what}: not within {timeout_s} s") from None


@contextlib.asynccontextmanager
async def running_cluster(nodes: int = 2, *, drain_timeout_s: float = 30.0) -> AsyncIterator[Cluster]:
    """`cluster.sh up NODES` (this Python runs the nodes' voicebridge), `down` afterwards."""
    for tool in ("kamailio", "sipp", "redis-server"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (make system-deps)")
    state_dir = Path(os.environ.get("CLUSTER_DIR", "/tmp/voicebridge-cluster"))
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "CLUSTER_DIR": str(state_dir),
        "DRAIN_TIMEOUT_S": str(drain_timeout_s),
    }
    cluster = Cluster(state_dir, nodes, env)
    await cluster.sh("down", timeout_s=60)  # whatever an interrupted run left
    try:
        await cluster.sh("up", str(nodes), timeout_s=180)
        yield cluster
    finally:
        await cluster.sh("down", timeout_s=60)


async def place_calls(
    work_dir: Path,
    *,
    calls: int,
    rate_per_s: float,
    hold_ms: int,
    answer_timeout_ms: int = 15_000,
    sip_port: int = 5070,
    media_port: int = 16600,
) -> LoadResult:
    """`calls` sipp calls through the proxy at a steady rate, each held `hold_ms` then hung up by
    the caller (BYE); returns when every call has ended (bounded by their total length + 60 s).
    Two loads at once need their own `work_dir`, `sip_port` and `media_port`."""
    exe = shutil.which("sipp")
    if exe is None:
        raise RuntimeError("sipp is not installed (Debian package sip-tester; make system-deps)")
    pcap = work_dir / "silence.pcap"
    write_rtp_pcap(pcap, b"", lead_silence_s=0, total_s=hold_ms / 1000 + 1)
    text = SCENARIO.read_text()
    for key, value in {"PCAP": pcap, "HOLD_MS": hold_ms, "ANSWER_TIMEOUT_MS": answer_timeout_ms}.items():
        text = text.replace(f"@{key}@", str(value))
    scenario = work_dir / "uac_call.xml"
    scenario.write_text(text)
    total_s = calls / rate_per_s + (hold_ms + answer_timeout_ms) / 1000 + 60
    err_file, stat_file = work_dir / "sipp.errors.log", work_dir / "sipp.stat.csv"
    proc = await asyncio.create_subprocess_exec(
        exe, f"{PROXY[0]}:{PROXY[1]}", "-sf", str(scenario), "-s", "100",
        "-i", CALLER_IP, "-p", str(sip_port), "-mi", CALLER_IP, "-mp", str(media_port),
        "-m", str(calls), "-r", str(int(rate_per_s * 10)), "-rp", "10000", "-l", str(calls),
        "-nostdin", "-timeout", f"{int(total_s)}s", "-timeout_error",
        "-trace_err", "-error_file", str(err_file),
        "-trace_stat", "-stf", str(stat_file), "-fd", "1",
        cwd=work_dir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(total_s + 10):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    successful = failed = 0
    if stat_file.exists():
        rows = list(csv.DictReader(stat_file.read_text().splitlines(), delimiter=";"))
        if rows:
            successful, failed = int(rows[-1]["SuccessfulCall(C)"]), int(rows[-1]["FailedCall(C)"])
    errors = err_file.read_text(errors="replace") if err_file.exists() else ""
    assert proc.returncode is not None
    return LoadResult(calls, successful, failed, proc.returncode, errors, out.decode(errors="replace"))


def table(title: str, load: LoadResult, calls: dict[str, CallRecord], extra: list[tuple[str, str]]) -> str:
    """The printed summary: calls placed, answered, completed, retried on another node, failed with
    reasons, answers per node, then `extra` rows (measured times, ...)."""
    answered = [c for c in calls.values() if c.final_code == 200]
    retried = [c for c in calls.values() if c.retried]
    per_node: dict[str, int] = {}
    for c in answered:
        per_node[c.final_node or "?"] = per_node.get(c.final_node or "?", 0) + 1
    retry_codes: dict[str, int] = {}
    for c in retried:
        for code in c.retried_after:
            retry_codes[code] = retry_codes.get(code, 0) + 1
    rows = [
        ("calls placed (sipp)", str(load.placed)),
        ("answered (200 through the proxy)", str(len(answered))),
        ("completed (caller's BYE answered)", str(load.successful)),
        ("retried on another node", f"{len(retried)} (after: {retry_codes or '-'})"),
        ("failed (sipp)", str(load.failed)),
        *((f"  failed: {reason}", str(n)) for reason, n in load.failure_reasons().items()),
        *(
            (f"  proxy final {c.final_code}", c.call_id)
            for c in calls.values()
            if c.final_code not in (200, None)
        ),
        (
            "caller's BYE answered by the proxy (node gone)",
            str(sum(c.bye_answered_by_proxy for c in calls.values())),
        ),
        ("answered per node", ", ".join(f"{k} {v}" for k, v in sorted(per_node.items()))),
        *extra,
    ]
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * len(title), *(f"{k.ljust(width)}  {v}" for k, v in rows)]
    return "\n".join(lines)


def now() -> float:
    """Wall-clock epoch seconds: the proxy log's clock (for ordering events, not for speed asserts)."""
    return time.time()
