"""`voicebridge campaign CONTACTS.csv --map MAP --results FILE` as a user runs it: a real process
against a fake ARI and a fake AMI on real sockets (testkit.fake_ari, testkit.fake_ami), its own
Stasis app name, admin port 0. Contacts are busy, never answer or fail (the fake AMI's
OriginateResponse Reason); the results file gets one line per contact. Stopped by SIGINT in the
middle and started again with the same results file, it dials only the contacts not done yet."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from testkit.fake_ami import FakeAmi
from testkit.fake_ari import FakeAri
from testkit.ports import free_port
from tests.test_serve_cli import ROOT

MAP = ROOT / "dialogue_maps" / "dental_appointment.ru.json"
REASONS = {"79990000001": "5", "79990000002": "3", "79990000003": "0", "79990000004": "5",
           "79990000005": "3", "79990000006": "5"}  # fmt: skip
OUTCOMES = {"5": "busy", "3": "no_answer", "0": "failed"}


def _env(ari: FakeAri, ami: FakeAmi) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBRIDGE_")}
    return {
        **base,
        "VOICEBRIDGE_ARI__URL": ari.url,
        "VOICEBRIDGE_ARI__APP": "vb-campaign-cli-test",
        "VOICEBRIDGE_AMI__PORT": str(ami.port),
        "VOICEBRIDGE_AUDIOSOCKET__BIND_PORT": str(free_port()),
        "VOICEBRIDGE_ADMIN__PORT": "0",
        # One contact at a time, two a second: the stop lands in the middle of the campaign.
        "VOICEBRIDGE_CAMPAIGN__CALLS_PER_S": "2",
        "VOICEBRIDGE_CAMPAIGN__MAX_CONCURRENT": "1",
        "VOICEBRIDGE_CAMPAIGN__MAX_ATTEMPTS": "1",
    }


async def _spawn(contacts: Path, results: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge.cli",
        "campaign",
        str(contacts),
        "--map",
        str(MAP),
        "--results",
        str(results),
        "--standins",
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


def _lines(results: Path) -> list[dict[str, object]]:
    if not results.exists():
        return []
    return [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines() if line]


async def _results_logged(proc: asyncio.subprocess.Process, count: int, timeout_s: float) -> list[str]:
    """Read the process's output until it has logged `count` contacts' final results (bounded)."""
    assert proc.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(timeout_s):
        while sum("attempt(s)" in line for line in seen) < count:
            line = await proc.stdout.readline()
            assert line, "the campaign ended before it was stopped:\n" + "".join(seen)
            seen.append(line.decode())
    return seen


async def _finish(proc: asyncio.subprocess.Process, timeout_s: float = 60) -> tuple[int, str]:
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    finally:
        if proc.returncode is None:  # never leave the process behind the test
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_campaign_cli_writes_results_and_resumes_after_a_stop(tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.csv"
    rows = "".join(f"{n},Клиент {i}\n" for i, n in enumerate(REASONS, 1))
    contacts.write_text("number,name\n" + rows, encoding="utf-8")
    results = tmp_path / "results.jsonl"
    ari, ami = FakeAri(), FakeAmi(reasons=REASONS)
    await ari.start()
    await ami.start()
    try:
        env = _env(ari, ami)
        proc = await _spawn(contacts, results, env)
        try:
            head = await _results_logged(proc, 2, 60)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
        rc, out = await _finish(proc)
        out = "".join(head) + out
        assert rc == 0, out
        assert "campaign stopped; run it again" in out, out
        first = _lines(results)
        assert 2 <= len(first) < len(REASONS), first
        done = {str(r["number"]) for r in first}
        dialled_before = len(ami.originates)

        rc, out = await _finish(await _spawn(contacts, results, env))
        assert rc == 0, out
        assert f"{len(done)} already done" in out, out
        records = _lines(results)
        assert sorted(str(r["number"]) for r in records) == sorted(REASONS)  # each once
        for r in records:
            assert r["outcome"] == OUTCOMES[REASONS[str(r["number"])]] and r["attempts"] == 1, r
        again = [o["Channel"] for o in ami.originates[dialled_before:]]
        assert not any(number in channel for number in done for channel in again), again
        assert all("VB_APP=vb-campaign-cli-test" in o["Variable"] for o in ami.originates), ami.originates
    finally:
        await ami.close()
        await ari.close()
