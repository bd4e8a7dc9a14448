"""Outbound campaigns: contacts from CSV, pacing, the concurrency cap, retries of busy and
unanswered contacts, results as JSON lines and resuming from them; the AMI dial against a fake
AMI on real sockets (originate's Reason code read into the outcome, contact variables handed to
the call)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.ami import AmiSettings
from bridge.campaign import (
    AmiDial,
    Attempt,
    Campaign,
    CampaignSettings,
    Contact,
    Outcome,
    outcome_of_reason,
    read_contacts,
)
from orchestrator.domain.errors import ConfigError
from testkit.fake_ami import FakeAmi
from testkit.virtual_time import run_virtual

T = 10.0
CALL_S = 30.0  # how long each scripted attempt of the virtual-time test takes


def test_contacts_come_from_csv_with_the_other_columns_as_variables(tmp_path: Path) -> None:
    f = tmp_path / "c.csv"
    f.write_text("number,name,amount\n+7 999 000-01-01,Анна,1500\n79990000002,Борис,\n", encoding="utf-8")
    assert read_contacts(f) == [
        Contact("+79990000101", {"name": "Анна", "amount": "1500"}),
        Contact("79990000002", {"name": "Борис"}),
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("phone,name\n1,a\n", "no 'number' column"),
        ("number,first name\n1,a\n", "column 'first name' cannot be a session variable"),
        ("number\n12;rm\n", "line 2: '12;rm' is not a phone number"),
    ],
)
def test_a_bad_contacts_file_is_named_with_the_line(tmp_path: Path, text: str, error: str) -> None:
    f = tmp_path / "c.csv"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=error):
        read_contacts(f)


class ScriptedDial:
    """Each number's outcomes in turn (the last one repeats); records when each attempt began
    and how many were in flight."""

    def __init__(self, script: dict[str, list[Outcome]], call_s: float = 0.01) -> None:
        self.call_s = call_s
        self.script = {k: list(v) for k, v in script.items()}
        self.starts: list[tuple[str, float]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, contact: Contact) -> Attempt:
        self.starts.append((contact.number, asyncio.get_running_loop().time()))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.call_s)  # the call itself
        finally:
            self.in_flight -= 1
        outcomes = self.script[contact.number]
        outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        return Attempt(outcome, call_id=f"call-{contact.number}" if outcome == "answered" else None)


def test_paced_capped_retried_and_resumed(tmp_path: Path) -> None:
    # On virtual time (the loop's clock jumps to the next timer): real settings, exact timeline.
    run_virtual(lambda: paced_capped_retried_and_resumed(tmp_path))


async def paced_capped_retried_and_resumed(tmp_path: Path) -> None:
    settings = CampaignSettings(calls_per_s=0.5, max_concurrent=2, max_attempts=3, retry_delay_s=300)
    script: dict[str, list[Outcome]] = {
        "1": ["answered"],
        "2": ["busy", "no_answer", "answered"],
        "3": ["no_answer"],
        "4": ["failed"],
        "5": ["busy", "answered"],
    }
    contacts = [Contact(n) for n in script]
    results = tmp_path / "out" / "results.jsonl"
    dial = ScriptedDial(script, CALL_S)
    campaign = Campaign(contacts, settings, dial, results)
    await campaign.run()

    by_number = {r["number"]: r for r in campaign.results}
    assert {n: (r["outcome"], r["attempts"]) for n, r in by_number.items()} == {
        "1": ("answered", 1),
        "2": ("answered", 3),
        "3": ("no_answer", 3),  # tried max_attempts times
        "4": ("failed", 1),  # a failure is not retried
        "5": ("answered", 2),
    }
    assert by_number["1"]["call_id"] == "call-1"
    # The file holds the same, one line per contact.
    lines = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["number"] for r in lines) == sorted(script)
    # Never more than max_concurrent at once; no more than calls_per_s attempts in any window
    # (attempt k+n at least n/calls_per_s after attempt k).
    assert dial.max_in_flight == campaign.max_in_flight == 2  # calls outlast the slots: the cap binds
    times = sorted(t for _, t in dial.starts)
    assert len(times) == 1 + 3 + 3 + 1 + 2
    for k, early in enumerate(times):
        for n, late in enumerate(times[k + 1 :], start=1):
            assert late - early >= n / 0.5 - 1e-6, (k, n, late - early)
    # A retry waits retry_delay_s after its attempt ended.
    tries_of_2 = [t for n, t in dial.starts if n == "2"]
    assert all(b - a >= 300 + CALL_S - 1e-6 for a, b in zip(tries_of_2, tries_of_2[1:], strict=False))

    # Started again with the same results file: nothing is dialled again.
    again = ScriptedDial(script)
    second = Campaign(contacts, settings, again, results)
    await second.run()
    assert again.starts == [] and second.skipped == 5


async def test_a_stopped_campaign_resumes_with_the_contacts_left(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    results.write_text(
        json.dumps({"number": "1", "outcome": "answered"}) + "\n" + '{"number": "2", "outc', encoding="utf-8"
    )  # the second line was cut by a crash: that contact is called again
    dial = ScriptedDial({"1": ["answered"], "2": ["answered"], "3": ["busy"]})
    settings = CampaignSettings(calls_per_s=100, max_attempts=1)
    campaign = Campaign([Contact("1"), Contact("2"), Contact("3")], settings, dial, results)
    async with asyncio.timeout(T):
        await campaign.run()
    assert sorted(n for n, _ in dial.starts) == ["2", "3"]
    assert {r["number"]: r["outcome"] for r in campaign.results} == {"2": "answered", "3": "busy"}


class Waiter:
    """The service side: answered calls 'end' at once with a known reason."""

    def __init__(self, end_reason: str = "end_call", *, served: bool = True) -> None:
        self.end_reason = end_reason
        self.served = served  # False: the service never served the call (no call id)
        self.expected: dict[str, dict[str, str]] = {}
        self.forgotten: list[str] = []

    def expect_call(
        self, channel_id: str, variables: dict[str, str]
    ) -> asyncio.Future[tuple[str, str, float]]:
        self.expected[channel_id] = variables
        future: asyncio.Future[tuple[str, str, float]] = asyncio.get_running_loop().create_future()
        call_id = f"call-of-{channel_id}" if self.served else ""
        future.set_result((call_id, self.end_reason, 12.34 if self.served else 0.0))
        return future

    def forget_call(self, channel_id: str) -> None:
        self.forgotten.append(channel_id)


@pytest.fixture
async def fake_ami() -> AsyncIterator[FakeAmi]:
    ami = FakeAmi(reasons={"79990000005": "5", "79990000003": "3", "79990000008": "8"})
    await ami.start()
    try:
        yield ami
    finally:
        await ami.close()


async def test_the_ami_dial_reads_the_originate_outcome(fake_ami: FakeAmi, tmp_path: Path) -> None:
    ami = AmiSettings(port=fake_ami.port, login_timeout_s=2)
    settings = CampaignSettings(calls_per_s=50, max_attempts=2, retry_delay_s=0.01, answer_timeout_s=2)
    waiter = Waiter()
    dial = AmiDial(ami, settings, waiter, app="vb-campaign", call_bound_s=5)
    contacts = [
        Contact("79990000004", {"name": "Анна"}),
        Contact("79990000005"),
        Contact("79990000003"),
        Contact("79990000008"),
    ]
    campaign = Campaign(contacts, settings, dial, tmp_path / "r.jsonl")
    async with asyncio.timeout(T):
        await campaign.run()
    got = {r["number"]: (r["outcome"], r["attempts"]) for r in campaign.results}
    assert got == {
        "79990000004": ("answered", 1),
        "79990000005": ("busy", 2),
        "79990000003": ("no_answer", 2),
        "79990000008": ("failed", 1),  # congestion: not retried
    }
    answered = next(r for r in campaign.results if r["number"] == "79990000004")
    assert answered["end_reason"] == "end_call" and answered["duration_s"] == 12.3
    # The originate put the call into our app with the channel id the service expects it on,
    # and the contact's columns were handed over for that call only.
    first = next(o for o in fake_ami.originates if "79990000004" in o["Channel"])
    assert first["Channel"] == "PJSIP/79990000004@trunk" and "VB_APP=vb-campaign" in first["Variable"]
    assert waiter.expected[first["ChannelId"]] == {"name": "Анна"}
    assert answered["call_id"] == f"call-of-{first['ChannelId']}"
    assert len(waiter.forgotten) == 2 + 2 + 1  # every unanswered attempt


async def test_a_call_a_machine_answered_is_the_outcome_machine(fake_ami: FakeAmi, tmp_path: Path) -> None:
    settings = CampaignSettings(calls_per_s=50, max_attempts=3, answer_timeout_s=2, amd="bot")
    waiter = Waiter(end_reason="machine")  # the dialogue ended it: `orchestrator.machine_check`
    dial = AmiDial(
        AmiSettings(port=fake_ami.port, login_timeout_s=2), settings, waiter, app="vb", call_bound_s=5
    )
    campaign = Campaign([Contact("79990000004")], settings, dial, tmp_path / "r.jsonl")
    async with asyncio.timeout(T):
        (record,) = await campaign.run()
    assert (record["outcome"], record["attempts"], record["end_reason"]) == ("machine", 1, "machine")
    check = settings.machine_check()
    assert check is not None and (check.greeting_s, check.pause_s) == (3.5, 0.8)
    assert CampaignSettings().machine_check() is None  # off by default


async def test_an_answered_call_the_service_never_served_is_failed_not_answered(
    fake_ami: FakeAmi, tmp_path: Path
) -> None:
    settings = CampaignSettings(calls_per_s=50, max_attempts=3, answer_timeout_s=2)
    waiter = Waiter(end_reason="setup_failed", served=False)  # e.g. externalMedia failed
    dial = AmiDial(
        AmiSettings(port=fake_ami.port, login_timeout_s=2), settings, waiter, app="vb", call_bound_s=5
    )
    campaign = Campaign([Contact("79990000004")], settings, dial, tmp_path / "r.jsonl")
    async with asyncio.timeout(T):
        (record,) = await campaign.run()
    assert (record["outcome"], record["attempts"], record["end_reason"]) == ("failed", 1, "setup_failed")
    assert record["call_id"] is None


@pytest.mark.parametrize(
    ("reason", "cause", "outcome"),
    [
        ("5", None, "busy"),
        ("0", "17", "busy"),  # Asterisk 22: a PJSIP callee's 486 Busy Here (tests/e2e/test_campaign.py)
        ("3", "19", "no_answer"),
        ("1", None, "no_answer"),
        ("8", "34", "failed"),
        ("0", None, "failed"),
        (None, None, "failed"),
    ],
)
def test_the_outcome_comes_from_the_reason_and_the_hangup_cause(
    reason: str | None, cause: str | None, outcome: Outcome
) -> None:
    assert outcome_of_reason(reason, cause) == outcome
