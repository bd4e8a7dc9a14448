"""Call setup and teardown rate on the real Asterisk (`python -m bench.call_setup`; not in
`make bench`: it needs root, sipp and the Asterisk chroot, `make asterisk-up`).

sipp places calls into Asterisk at `--rates` calls/s for `--seconds` each; Asterisk hands them
to our `AriController` in this process, whose handler (`bench.setup_probe.SetupProbe`) plays a
0.5 s clip and holds the call `--hold` s; then the bot hangs up every other call and the caller
(sipp BYE) the rest. Per call: INVITE -> 200 OK (sipp's response time), StasisStart ->
AudioSocket connected, StasisStart -> first clip frame written, the teardown, and the media
lock's wait for creation and for teardown. Per run: sipp's failed calls, our warnings and
unserved calls, channels and bridges left in Asterisk. `--lock both` runs each rate with the
media lock and without it, interleaved (on, off, on, off, ...), `--pairs` times.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import percentile, table
from bench.hotpath import machine_info
from bench.setup_probe import OverlapCount, SetupProbe, TimedLock
from bridge.ari import AriController, AriSettings
from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.pacer import Pacer
from testkit.sip import UAC_MEDIA_PORT, UAC_SIP_PORT, render_scenario, run_sipp, tone_pcm, write_rtp_pcap

ARI = AriSettings()
# What a pass means at a rate: every call set up and ended cleanly, and the caller hears the
# greeting promptly. ms, p95 over the run's calls.
TARGETS = {"invite_200_p95": 300.0, "first_frame_p95": 300.0, "teardown_p95": 1000.0}


class _Warnings(logging.Handler):
    """Keeps our WARNING-and-up log messages of a run (`attach` it to the `bridge` logger)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def attach(self) -> None:
        """Listen on `bridge`, letting its WARNINGs through: `main` sets the root to ERROR (the
        console), which would drop them (a failed DELETE is a WARNING) before any handler."""
        logger = logging.getLogger("bridge")
        if logger.getEffectiveLevel() > logging.WARNING:
            logger.setLevel(logging.WARNING)
        logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "bridge.asterisk_names":  # the lab's default ARI password
            return
        self.messages.append(f"{record.name}: {record.getMessage()}"[:300])


async def _ari(session: aiohttp.ClientSession, method: str, path: str) -> Any:
    async with session.request(method, ARI.url.rstrip("/") + "/ari/" + path) as resp:
        return await resp.json() if method == "GET" else None


async def _leftovers(timeout_s: float = 3.0) -> tuple[list[str], list[str]]:
    """Channels and bridges still in Asterisk after the run (waits up to `timeout_s` for none:
    Asterisk destroys a hung-up channel a moment after the DELETE returned); deletes them."""
    token = base64.b64encode(f"{ARI.username}:{ARI.password}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=5)) as http:
        deadline = time.monotonic() + timeout_s
        while True:
            chans = [c["id"] for c in await _ari(http, "GET", "channels")]
            bridges = [b["id"] for b in await _ari(http, "GET", "bridges")]
            if not (chans or bridges) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)  # Asterisk's state has no event to wait on: poll ARI
        for kind, ids in (("channels", chans), ("bridges", bridges)):
            for i in ids:
                with contextlib.suppress(aiohttp.ClientError):
                    await _ari(http, "DELETE", f"{kind}/{i}")
    return chans, bridges


def _sipp_figures(work_dir: Path) -> tuple[list[float], dict[str, int]]:
    """INVITE -> 200 OK per call (ms, from sipp's `-trace_msg` log: its `-trace_rtt` has whole ms)
    and the final call counters (`-trace_stat`)."""
    invites: dict[str, float] = {}
    rtt: list[float] = []
    for path in work_dir.glob("*messages.log"):
        for block in ("\n" + path.read_text(errors="replace")).split("\n" + "-" * 47 + " ")[1:]:
            head, _, body = block.partition("\n")
            lines = body.splitlines()
            first = lines[2] if len(lines) > 2 else ""
            call_id = next((ln[9:].strip() for ln in lines if ln.startswith("Call-ID:")), "")
            with contextlib.suppress(ValueError):
                at = datetime.datetime.fromisoformat(head.strip()).timestamp()
                if first.startswith("INVITE ") and call_id not in invites:
                    invites[call_id] = at
                elif first.startswith("SIP/2.0 200") and "CSeq: 1 INVITE" in lines and call_id in invites:
                    rtt.append((at - invites.pop(call_id)) * 1000)
    counts: dict[str, int] = {}
    for path in work_dir.glob("sipp_stat.csv"):
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        if len(lines) >= 2:
            cols, last = lines[0].split(";"), lines[-1].split(";")
            for key in ("OutgoingCall(C)", "SuccessfulCall(C)", "FailedCall(C)"):
                if key in cols:
                    counts[key.removesuffix("(C)")] = int(last[cols.index(key)])
    return rtt, counts


def _stats(values: list[float]) -> dict[str, float | int]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values) if values else float("nan"),
    }


async def one_run(
    rate: float, seconds: float, hold_s: float, lock: bool, ends: str, work_dir: Path, pcap: Path, clip: bytes
) -> dict[str, Any]:
    """Place `rate * seconds` calls at `rate` calls/s, with or without the media lock."""
    load = os.getloadavg()
    pacer = Pacer()
    server = AudioSocketServer(AudioSocketSettings(bind_port=0), pacer=pacer)
    await server.start()
    probe = SetupProbe(pacer, clip, hold_s, ends=ends)
    unserved: Counter[str] = Counter()
    settings = AriSettings(audiosocket_host=f"127.0.0.1:{server.port}", timeout_s=5.0)
    controller = AriController(settings, server, probe, on_unserved=lambda _ch, why: unserved.update([why]))
    timed = TimedLock() if lock else None
    overlap = OverlapCount()
    # The bench's switch: the same CallLegs with its lock timed, or with no lock (overlaps counted).
    controller._legs.media_lock = timed if timed is not None else overlap
    warnings = _Warnings()
    warnings.attach()
    run_task = asyncio.create_task(controller.run(), name="bench-ari-controller")
    calls = max(1, round(rate * seconds))
    try:
        async with asyncio.timeout(15):
            await controller.connected.wait()
        scenario = render_scenario(
            "uac_hold",
            work_dir,
            exten="100",
            caller="79990001122",
            pcap=pcap,
            hold_ms=int((hold_s + 2) * 1000),
        )
        t0 = time.monotonic()
        sipp = await run_sipp(
            scenario,
            local_port=UAC_SIP_PORT,
            media_port=UAC_MEDIA_PORT,
            work_dir=work_dir,
            timeout_s=seconds + hold_s + 60,
            calls=calls,
            rate=rate,
            concurrent=max(10, int(rate * (hold_s + 10))),
            extra=["-trace_stat", "-stf", str(work_dir / "sipp_stat.csv"), "-fd", "1"],
        )
        wall_s = time.monotonic() - t0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await controller.idle.wait()
        active = controller.active_calls
    finally:
        await controller.close()
        async with asyncio.timeout(15):
            await run_task
        await server.close()
        logging.getLogger("bridge").removeHandler(warnings)
    chans, bridges = await _leftovers()
    if timed is not None:
        probe.attach_lock_waits(timed)
    rtt, counts = _sipp_figures(work_dir)
    recs = list(probe.records.values())

    def col(name: str) -> list[float]:
        return [v for r in recs if (v := getattr(r, name)) is not None]

    result: dict[str, Any] = {
        "rate": rate,
        "lock": lock,
        "seconds": seconds,
        "hold_s": hold_s,
        "calls": calls,
        "load_avg_start": load,
        "wall_s": wall_s,
        "sipp_exit": sipp.returncode,
        "sipp": counts,
        "served": len(recs),
        "ended_by": dict(Counter(r.ended_by for r in recs)),
        "unserved": dict(unserved),
        "active_after": active,
        "warnings": len(warnings.messages),
        "warning_samples": warnings.messages[:50],
        "leftover_channels": chans,
        "leftover_bridges": bridges,
        "invite_200_ms": _stats(rtt),
        "setup_ms": _stats(col("setup_ms")),
        "first_frame_ms": _stats(col("first_frame_ms")),
        "teardown_ms": _stats(col("teardown_ms")),
        "teardown_bot_ms": _stats([r.teardown_ms for r in recs if r.ended_by == "bot" and r.teardown_ms]),
        "teardown_caller_ms": _stats(
            [r.teardown_ms for r in recs if r.ended_by == "caller" and r.teardown_ms]
        ),
        "lock_wait_create_ms": _stats([r.lock_wait_ms["create"] for r in recs if "create" in r.lock_wait_ms]),
        "lock_wait_delete_ms": _stats([r.lock_wait_ms["delete"] for r in recs if "delete" in r.lock_wait_ms]),
        "lock_hold_create_ms": _stats([h * 1000 for h in timed.holds["create"]] if timed is not None else []),
        "lock_hold_delete_ms": _stats([h * 1000 for h in timed.holds["delete"]] if timed is not None else []),
        "unlocked": {
            "entries": dict(overlap.entries),
            "overlapped": dict(overlap.overlapped),
            "most": overlap.most,
        },
        "per_call": [
            {
                "setup": r.setup_ms,
                "first": r.first_frame_ms,
                "down": r.teardown_ms,
                "by": r.ended_by,
                **r.lock_wait_ms,
            }
            for r in recs
        ],
    }
    result["failures"] = _failures(result)
    result["pass"] = not result["failures"]
    return result


def _failures(r: dict[str, Any]) -> list[str]:
    """What missed the targets in one run (empty: it passed)."""
    out = []
    ok = r["sipp"].get("SuccessfulCall", -1)
    if r["sipp_exit"] != 0 or ok != r["calls"] or r["sipp"].get("FailedCall", 0):
        out.append(f"sipp: exit {r['sipp_exit']}, {ok} of {r['calls']} calls ok")
    if r["served"] != r["calls"] or r["unserved"] or r["active_after"]:
        out.append(
            f"served {r['served']} of {r['calls']}, unserved {r['unserved']}, active {r['active_after']}"
        )
    if r["warnings"]:
        out.append(f"{r['warnings']} warnings")
    if r["leftover_channels"] or r["leftover_bridges"]:
        out.append(f"left over: {len(r['leftover_channels'])} channels, {len(r['leftover_bridges'])} bridges")
    for key, limit in TARGETS.items():
        name, _, q = key.rpartition("_")
        if not r[f"{name}_ms"][q] <= limit:
            out.append(f"{name} {q} {r[f'{name}_ms'][q]:.0f} ms > {limit:.0f}")
    return out


def render(runs: list[dict[str, Any]]) -> str:
    """The runs as a table, with the targets in the title."""
    rows = []
    for i, r in enumerate(runs, 1):
        rows.append(
            [
                f"{i}",
                "on" if r["lock"] else "off",
                r["rate"],
                f"{r['sipp'].get('SuccessfulCall', '?')}/{r['calls']}",
                r["invite_200_ms"]["p50"],
                r["invite_200_ms"]["p95"],
                r["setup_ms"]["p50"],
                r["setup_ms"]["p95"],
                r["first_frame_ms"]["p95"],
                r["teardown_ms"]["p50"],
                r["teardown_ms"]["p95"],
                r["lock_wait_create_ms"]["p95"],
                r["lock_wait_delete_ms"]["p95"],
                None if r["lock"] else sum(r["unlocked"]["overlapped"].values()),
                r["warnings"],
                len(r["leftover_channels"]) + len(r["leftover_bridges"]),
                f"{r['load_avg_start'][0]:.1f}",
                "yes" if r["pass"] else "NO",
            ]
        )
    headers = [
        "run", "lock", "calls/s", "ok", "200 p50", "200 p95", "setup p50", "setup p95", "1st p95",
        "down p50", "down p95", "wait+ p95", "wait- p95", "overlaps", "warn", "left", "load", "pass",
    ]  # fmt: skip
    title = (
        "Call setup on the real Asterisk, ms (200: INVITE -> 200 OK; setup: StasisStart -> AudioSocket; "
        "1st: StasisStart -> first clip frame; down: teardown; wait+/-: media lock wait, create/delete; "
        "overlaps, no lock: creations and teardowns begun while another was in progress)\n"
        f"targets: every call ok, no warnings, nothing left; 200 p95 <= {TARGETS['invite_200_p95']:.0f}, "
        f"1st p95 <= {TARGETS['first_frame_p95']:.0f}, down p95 <= {TARGETS['teardown_p95']:.0f}"
    )
    return table(headers, rows, title=title)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    locks = {"on": [True], "off": [False], "both": [True, False]}[args.lock]
    hold_s: float = args.hold
    runs: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = args.work or stack.enter_context(tempfile.TemporaryDirectory(prefix="vb-call-setup-"))
        pcap = Path(tmp) / "caller.pcap"
        write_rtp_pcap(pcap, b"", lead_silence_s=0.0, total_s=hold_s + 4)  # a live, quiet line
        clip = tone_pcm(0.5)
        for rate in args.rates:
            for i in range(args.pairs):
                for lock in locks:
                    work = Path(tmp) / f"run-{len(runs) + 1}"
                    work.mkdir()
                    print(
                        f"run {len(runs) + 1}: {rate} calls/s, lock {'on' if lock else 'off'} ({i + 1}/{args.pairs})",
                        file=sys.stderr,
                    )
                    r = await one_run(rate, args.seconds, hold_s, lock, args.ends, work, pcap, clip)
                    print(
                        f"  {'pass' if r['pass'] else 'FAIL: ' + '; '.join(r['failures'])}", file=sys.stderr
                    )
                    runs.append(r)
    return runs


async def until_terminated(coro: Coroutine[Any, Any, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Await `coro`; SIGTERM cancels it as Ctrl-C does, so its cleanup runs (sipp killed, calls
    torn down). By default SIGTERM ends the process on the spot, and sipp, in its own session,
    went on calling into Asterisk for up to a minute, leaving a bridge per call behind."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await coro
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _rounded(value: Any) -> Any:
    """`value` with every float to 0.01 (ms: the files stay small)."""
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.call_setup", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--rates", type=lambda s: [float(x) for x in s.split(",")], default=[5.0, 10.0, 20.0, 40.0]
    )
    p.add_argument("--seconds", type=float, default=15.0, help="how long calls arrive at each rate")
    p.add_argument("--hold", type=float, default=3.0, help="how long each call is held, s")
    p.add_argument("--lock", choices=("on", "off", "both"), default="on", help="the media lock")
    p.add_argument("--pairs", type=int, default=1, help="runs per rate (and lock)")
    p.add_argument("--ends", choices=("mixed", "bot", "caller"), default="mixed", help="who hangs up")
    p.add_argument("--work", type=Path, help="keep sipp's files here (default: a temporary directory)")
    p.add_argument("--log", type=Path, help="the bridge's log, DEBUG and up, to this file")
    p.add_argument("--json", type=Path, help="write every run with the machine, Python, commit")
    args = p.parse_args(argv)
    console = logging.StreamHandler()
    console.setLevel(logging.ERROR)  # the bridge's WARNINGs are counted per run, not printed
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s", handlers=[console])
    if args.log is not None:
        handler = logging.FileHandler(args.log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("bridge").addHandler(handler)
        logging.getLogger("bridge").setLevel(logging.DEBUG)
    try:
        runs = asyncio.run(until_terminated(main_async(args)))
    except asyncio.CancelledError:
        sys.exit("python -m bench.call_setup: terminated (SIGTERM); no table, no JSON")
    print(render(runs))
    if args.json is not None:
        data = {"machine": machine_info(), "args": vars(args) | {"json": str(args.json)}, "runs": runs}
        args.json.write_text(json.dumps(_rounded(data), separators=(",", ":"), default=str) + "\n")


if __name__ == "__main__":
    main()
