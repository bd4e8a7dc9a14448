"""`bench.call_setup` without Asterisk: sipp's logs read back, a run judged, the media lock's
stand-ins (the run itself needs the real Asterisk: bench/README.md section 7)."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.call_setup import _failures, _sipp_figures, _Warnings, render
from bench.setup_probe import OverlapCount, TimedLock

_SEP = "-" * 47


def _block(at: str, direction: str, first: str, call_id: str, cseq: str) -> str:
    return f"{_SEP} 2026-12-03 {at}\n{direction}\n\n{first}\nCall-ID: {call_id}\nCSeq: {cseq}\n\n"


def test_invite_to_200_from_the_message_log(tmp_path: Path) -> None:
    log = (
        _block(
            "20:08:57.851316",
            "UDP message sent (604 bytes):",
            "INVITE sip:100@x SIP/2.0",
            "1-9@h",
            "1 INVITE",
        )
        + _block(
            "20:08:57.852669", "UDP message received [303] bytes :", "SIP/2.0 100 Trying", "1-9@h", "1 INVITE"
        )
        # A retransmitted INVITE does not restart the clock.
        + _block(
            "20:08:58.351316",
            "UDP message sent (604 bytes):",
            "INVITE sip:100@x SIP/2.0",
            "1-9@h",
            "1 INVITE",
        )
        + _block(
            "20:08:58.354522", "UDP message received [799] bytes :", "SIP/2.0 200 OK", "1-9@h", "1 INVITE"
        )
        + _block(
            "20:08:58.400000",
            "UDP message sent (604 bytes):",
            "INVITE sip:100@x SIP/2.0",
            "2-9@h",
            "1 INVITE",
        )
        + _block(
            "20:08:58.402500", "UDP message received [799] bytes :", "SIP/2.0 200 OK", "2-9@h", "1 INVITE"
        )
        # The 200 to our BYE is not an answer.
        + _block("20:09:03.000000", "UDP message received [337] bytes :", "SIP/2.0 200 OK", "2-9@h", "2 BYE")
    )
    (tmp_path / "uac_hold.messages.log").write_text(log)
    (tmp_path / "sipp_stat.csv").write_text(
        "StartTime;OutgoingCall(C);SuccessfulCall(C);FailedCall(C);\na;1;0;0;\nb;2;2;0;\n"
    )
    rtt, counts = _sipp_figures(tmp_path)
    assert [round(v, 3) for v in rtt] == [503.206, 2.5]
    assert counts == {"OutgoingCall": 2, "SuccessfulCall": 2, "FailedCall": 0}


def _run(**over: Any) -> dict[str, Any]:
    fine = {"n": 2, "p50": 5.0, "p95": 9.0, "max": 9.0}
    run: dict[str, Any] = {
        "rate": 5.0,
        "lock": False,
        "calls": 2,
        "sipp_exit": 0,
        "sipp": {"SuccessfulCall": 2, "FailedCall": 0},
        "served": 2,
        "unserved": {},
        "active_after": 0,
        "warnings": 0,
        "leftover_channels": [],
        "leftover_bridges": [],
        "invite_200_ms": fine,
        "setup_ms": fine,
        "first_frame_ms": fine,
        "teardown_ms": fine,
        "lock_wait_create_ms": fine,
        "lock_wait_delete_ms": fine,
        "unlocked": {"overlapped": {"create|delete": 1}},
        "load_avg_start": (0.5, 0.5, 0.5),
    }
    run.update(over)
    run["failures"] = _failures(run)
    run["pass"] = not run["failures"]
    return run


def test_a_run_passes_only_clean_and_within_the_targets() -> None:
    assert _run()["failures"] == []
    slow = {"n": 2, "p50": 5.0, "p95": 400.0, "max": 400.0}
    failed = _run(leftover_channels=["vb-em-x"], first_frame_ms=slow, unserved={"setup_failed": 1})
    assert failed["failures"] == [
        "served 2 of 2, unserved {'setup_failed': 1}, active 0",
        "left over: 1 channels, 0 bridges",
        "first_frame p95 400 ms > 300",
    ]
    lines = render([_run(), failed]).splitlines()
    assert lines[2].split()[:3] == ["run", "lock", "calls/s"]
    assert lines[4].split()[-1] == "yes" and lines[5].split()[-1] == "NO"


async def test_lock_stand_ins_tell_creation_from_teardown() -> None:
    timed, count = TimedLock(), OverlapCount()
    both = asyncio.Event()

    async def call(create_waits: bool) -> None:
        async with timed:
            pass
        async with count:  # creation
            if create_waits:
                await both.wait()
        async with timed:
            pass
        async with count:  # teardown
            both.set()

    await asyncio.wait_for(asyncio.gather(call(True), call(False)), 1.0)
    assert {len(w) for w in timed.waits.values()} == {2}
    assert len(timed.holds["create"]) == len(timed.holds["delete"]) == 2
    assert count.entries == {"create": 2, "delete": 2}
    # The second call created and tore down while the first was still creating.
    assert count.overlapped == {"create|create": 1, "delete|create": 1}
    assert count.most == 2


def test_run_warnings_are_counted_under_the_consoles_error_level() -> None:
    """`main` sets the root logger to ERROR; a run must still count the bridge's WARNINGs (a
    failed DELETE of a leg is one)."""
    bridge, root = logging.getLogger("bridge"), logging.getLogger()
    saved = bridge.level, root.level
    root.setLevel(logging.ERROR)
    bridge.setLevel(logging.NOTSET)
    warnings = _Warnings()
    try:
        warnings.attach()
        logging.getLogger("bridge.ari.legs").warning("call x: deleting bridge failed")
    finally:
        bridge.removeHandler(warnings)
        bridge.setLevel(saved[0])
        root.setLevel(saved[1])
    assert warnings.messages == ["bridge.ari.legs: call x: deleting bridge failed"]


def test_sigterm_lets_the_runs_clean_up(tmp_path: Path) -> None:
    """A SIGTERM (`timeout`, a CI job's end) cancels the bench so its `finally` blocks run: sipp
    killed, calls torn down. Without it the process died on the spot and sipp kept calling."""
    marker = tmp_path / "cleaned"
    script = (
        "import asyncio, sys\n"
        "from bench.call_setup import until_terminated\n"
        "async def runs():\n"
        "    try:\n"
        "        print('ready', flush=True)\n"
        "        await asyncio.sleep(30)\n"
        "    finally:\n"
        f"        open({str(marker)!r}, 'w').write('done')\n"
        "    return []\n"
        "asyncio.run(until_terminated(runs()))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1]
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert marker.read_text() == "done"
