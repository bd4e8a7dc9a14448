"""The campaign's answering-machine check (`[campaign] amd = "bot"`) on the real Asterisk: the
`voicebridge campaign` CLI (stand-in providers) originates to a sipp callee that plays a long
recorded greeting (espeak-ng, no pause) -> outcome `machine` (the map's voicemail message left,
then the bot hangs up); a callee that says a short "Алло?" and waits -> the bot greets it, the
call goes on to its dialogue end -> outcome `answered`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from testkit.ports import free_port
from testkit.sip import UAS_MEDIA_PORT, UAS_SIP_PORT, espeak_pcm, render_scenario, run_sipp, write_rtp_pcap
from tests.e2e.conftest import udp_port_bound
from tests.test_serve_cli import ROOT

pytestmark = pytest.mark.asterisk

MACHINE = (
    "Здравствуйте, вы позвонили в компанию Ромашка. Сейчас никто не может ответить на ваш звонок, "
    "оставьте, пожалуйста, сообщение после звукового сигнала"
)


def _map(tmp_path: Path) -> Path:
    """The dental map with a voicemail message and a short no-input wait (a person who says
    nothing more ends the call soon)."""
    data = json.loads((ROOT / "dialogue_maps" / "dental_appointment.ru.json").read_text(encoding="utf-8"))
    data.pop("$schema", None)
    data["settings"].update(
        no_input_timeout_s=2.0,
        no_input_max_reprompts=0,
        voicemail_playlist=[{"type": "tts", "text_template": "Перезвоните нам, пожалуйста."}],
    )
    path = tmp_path / "map.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


async def _campaign(tmp_path: Path, name: str, pcm: bytes) -> dict[str, object]:
    """One contact called by the CLI into a sipp callee playing `pcm`; its results line."""
    pcap = tmp_path / f"{name}.pcap"
    write_rtp_pcap(pcap, pcm, total_s=25)
    scenario = render_scenario("uas", tmp_path, pcap=pcap, bye_timeout_ms=40000)
    contacts = tmp_path / f"{name}.csv"
    contacts.write_text("number\n79990000001\n", encoding="utf-8")
    results = tmp_path / f"{name}.jsonl"
    base = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBRIDGE_")}
    port = free_port()
    env = {
        **base,
        "VOICEBRIDGE_ARI__APP": "vb-campaign-amd-test",
        "VOICEBRIDGE_AUDIOSOCKET__BIND_PORT": str(port),
        "VOICEBRIDGE_ARI__AUDIOSOCKET_HOST": f"127.0.0.1:{port}",
        "VOICEBRIDGE_ADMIN__PORT": "0",
        "VOICEBRIDGE_CAMPAIGN__AMD": "bot",
        "VOICEBRIDGE_CAMPAIGN__MAX_ATTEMPTS": "1",
        "VOICEBRIDGE_CAMPAIGN__ANSWER_TIMEOUT_S": "10",
        "VOICEBRIDGE_CAMPAIGN__CALL_BOUND_S": "40",
    }
    sipp = asyncio.create_task(
        run_sipp(scenario, local_port=UAS_SIP_PORT, media_port=UAS_MEDIA_PORT, work_dir=tmp_path, remote=None,
                 timeout_s=60),
        name=f"sipp-{name}",
    )  # fmt: skip
    proc: asyncio.subprocess.Process | None = None
    out = b""
    try:
        await udp_port_bound(UAS_SIP_PORT)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge.cli", "campaign", str(contacts), "--map", str(_map(tmp_path)),
            "--results", str(results), "--standins",
            cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode == 0, out.decode()
        async with asyncio.timeout(60):
            sipp_result = await sipp
    finally:
        if proc is not None and proc.returncode is None:  # never leave the campaign running
            proc.kill()
            await proc.wait()
        if not sipp.done():
            sipp.cancel()
        await asyncio.gather(sipp, return_exceptions=True)
    (record,) = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    (tmp_path / f"{name}.out").write_bytes(out)  # the campaign's log, for a failing assertion
    assert sipp_result.ok, f"{record}\n{sipp_result.describe()}\n{out.decode()}"
    return record


async def test_a_long_greeting_is_a_machine_and_a_short_hello_a_person(asterisk: str, tmp_path: Path) -> None:
    record = await _campaign(tmp_path, "machine", espeak_pcm(MACHINE))
    assert (record["outcome"], record["end_reason"]) == ("machine", "machine"), (
        f"{record}\n{(tmp_path / 'machine.out').read_text()}"
    )

    record = await _campaign(tmp_path, "human", espeak_pcm("Алло?"))
    assert record["outcome"] == "answered" and record["end_reason"] == "no_input", (
        f"{record}\n{(tmp_path / 'human.out').read_text()}"
    )
