"""Outbound campaigns: call every contact of a CSV file into the bot, paced, capped, retried.

`read_contacts(path)` reads the contacts: a `number` column (digits, optional leading `+`) and any
other columns, which become the call's session variables (`{{ session.variables.name }}` in the
map's templates). `Campaign.run()` dials them:
- at most `calls_per_s` new attempts per second, and at most `max_concurrent` calls at once
  (ringing or in the dialogue);
- a busy or unanswered contact is tried again after `retry_delay_s`, up to `max_attempts` in all;
- each contact's final result is appended to the results file (JSON lines) as soon as it is
  known: `number`, `attempts`, `outcome` (`answered`, `busy`, `no_answer`, `failed`, `machine`:
  an answering machine took it, see `amd`), `call_id`,
  `end_reason` (how the dialogue ended), `duration_s`, `detail`. A campaign started again with the
  same results file skips the contacts already there: it resumes where it stopped.

Dialling itself is a `Dial` (one attempt, returning when the call is over); `AmiDial` is the real
one: AMI Originate into the service's Stasis app (`bridge.app.VoicebridgeApp` serving the map in
the same process), then waiting for that call to end.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Protocol

import pydantic.dataclasses
from pydantic import ConfigDict, Field

from bridge.ami import AmiError, AmiSettings, OriginateError, originate
from orchestrator.domain.errors import ConfigError
from orchestrator.machine_check import MachineCheckSettings
from orchestrator.tasks import TaskOwner

__all__ = [
    "AmiDial",
    "Attempt",
    "Campaign",
    "CampaignSettings",
    "Contact",
    "Outcome",
    "finished_numbers",
    "outcome_of_reason",
    "read_contacts",
]

log = logging.getLogger(__name__)

Outcome = Literal["answered", "busy", "no_answer", "failed", "machine"]
_RETRIED: frozenset[Outcome] = frozenset({"busy", "no_answer"})
_NUMBER = re.compile(r"\+?[0-9]{1,32}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@pydantic.dataclasses.dataclass(
    frozen=True, slots=True, config=ConfigDict(extra="forbid", allow_inf_nan=False)
)
class CampaignSettings:
    """How `voicebridge campaign` dials (section `[campaign]`)."""

    # New call attempts per second at most (retries included).
    calls_per_s: Annotated[float, Field(gt=0, le=100)] = 1.0
    # Calls at once at most: ringing or in the dialogue.
    max_concurrent: Annotated[int, Field(ge=1, le=1000)] = 5
    # Attempts per contact in all, the first included (busy and no answer are retried).
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    # Pause before trying a busy or unanswered contact again, s.
    retry_delay_s: Annotated[float, Field(ge=0)] = 300.0
    # How long a contact's phone may ring, s.
    answer_timeout_s: Annotated[float, Field(gt=0, le=300)] = 30.0
    # Caller id presented to the contacts (none: the trunk's).
    caller_id: str | None = None
    # An answered call not over after this is given up on (the contact counts as answered), s.
    call_bound_s: Annotated[float, Field(gt=0)] = 3600.0
    # Answering-machine check of answered calls: "bot" listens before the greeting
    # (`orchestrator.machine_check`): speech longer than `amd_greeting_s` with no pause of
    # `amd_pause_s` is a machine, which hears the map's `voicemail_playlist` (if any) and is hung
    # up; the contact's outcome is `machine`. "off": every answered call is greeted at once.
    amd: Literal["off", "bot"] = "off"
    amd_greeting_s: Annotated[float, Field(gt=0, le=30)] = 3.5
    amd_pause_s: Annotated[float, Field(gt=0, le=5)] = 0.8
    # No speech at all for this long: a person waiting for the bot; the greeting plays, s.
    amd_silence_s: Annotated[float, Field(gt=0, le=30)] = 5.0

    def machine_check(self) -> MachineCheckSettings | None:
        """The answering-machine check's settings, None when `amd` is off."""
        if self.amd == "off":
            return None
        return MachineCheckSettings(
            greeting_s=self.amd_greeting_s, pause_s=self.amd_pause_s, silence_s=self.amd_silence_s
        )


@dataclass(frozen=True, slots=True)
class Contact:
    """One line of the contacts file: the number and the other columns as session variables."""

    number: str
    variables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one attempt went: the outcome, and for an answered call its id, how the dialogue
    ended and how long it lasted (s)."""

    outcome: Outcome
    call_id: str | None = None
    end_reason: str | None = None
    duration_s: float | None = None
    detail: str | None = None


Dial = Callable[[Contact], Awaitable[Attempt]]


def read_contacts(path: str | Path) -> list[Contact]:
    """The contacts of a CSV file (UTF-8, header line first). Raises `ConfigError` naming the file
    and line for a missing `number` column, a bad number, or a column name that cannot be a
    session variable."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            if "number" not in columns:
                raise ConfigError(f"{path}: no 'number' column (columns: {', '.join(columns) or 'none'})")
            for name in columns:
                if not _VARIABLE.fullmatch(name):
                    raise ConfigError(
                        f"{path}: column {name!r} cannot be a session variable "
                        "(letters, digits and _, not starting with a digit)"
                    )
            contacts: list[Contact] = []
            for row in reader:
                number = (row.get("number") or "").strip().replace(" ", "").replace("-", "")
                if not _NUMBER.fullmatch(number):
                    raise ConfigError(f"{path}: line {reader.line_num}: {number!r} is not a phone number")
                variables = {k: v for k, v in row.items() if k != "number" and k is not None and v}
                contacts.append(Contact(number, variables))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read contacts: {exc.strerror}") from exc
    return contacts


def finished_numbers(results: Path) -> set[str]:
    """Numbers that already have a final result in `results` (a missing file: none)."""
    try:
        text = results.read_text(encoding="utf-8")
    except FileNotFoundError:
        return set()
    done = set()
    for line in text.splitlines():
        try:
            done.add(str(json.loads(line)["number"]))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash: that contact is called again
    return done


def outcome_of_reason(reason: str | None, cause: str | None = None) -> Outcome:
    """The outcome of an unanswered originate from Asterisk's Reason code and the channel's
    Q.850 hangup cause (Asterisk 22 reports a PJSIP 486 as Reason 0, cause 17)."""
    if reason == "5" or cause == "17":  # 17: user busy
        return "busy"
    if reason in ("3", "1") or cause in ("18", "19"):  # rang out; 18/19: no user responding / no answer
        return "no_answer"
    return "failed"


class Campaign:
    """Dials `contacts` with `dial` under `settings`; results appended to `results` (JSON lines)."""

    def __init__(
        self, contacts: list[Contact], settings: CampaignSettings, dial: Dial, results: Path
    ) -> None:
        self.settings = settings
        self._dial = dial
        self._results = results
        done = finished_numbers(results)
        self.skipped = sum(1 for c in contacts if c.number in done)
        self._todo = [c for c in contacts if c.number not in done]
        self._owner = TaskOwner("campaign")
        self._left = 0
        self._finished = asyncio.Event()
        self._next_start = 0.0
        self._pace = asyncio.Lock()
        self.results: list[dict[str, object]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def run(self) -> list[dict[str, object]]:
        """Dial every contact to its final result; returns those results (also in the file).

        `max_concurrent` workers take contacts from one queue; a contact to retry goes back into
        it after `retry_delay_s`."""
        if self.skipped:
            log.info("campaign: %d contact(s) already done in %s; resuming", self.skipped, self._results)
        self._results.parent.mkdir(parents=True, exist_ok=True)
        queue: asyncio.Queue[tuple[Contact, int]] = asyncio.Queue()
        for contact in self._todo:
            queue.put_nowait((contact, 1))
        self._left = len(self._todo)
        if self._left == 0:
            return self.results
        try:
            for n in range(min(self.settings.max_concurrent, self._left)):
                self._owner.spawn(self._worker(queue), f"worker-{n}")
            await self._finished.wait()
        finally:
            await self._owner.aclose()
        return self.results

    async def _worker(self, queue: asyncio.Queue[tuple[Contact, int]]) -> None:
        s = self.settings
        while True:
            contact, attempts = await queue.get()
            await self._paced()
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                attempt = await self._dial(contact)
            except Exception as exc:  # a bug or an unexpected failure: that contact fails, not all
                log.exception("campaign: calling %s failed", contact.number)
                attempt = Attempt("failed", detail=repr(exc))
            finally:
                self.in_flight -= 1
            if attempt.outcome in _RETRIED and attempts < s.max_attempts:
                log.info("campaign: %s %s; again in %.0f s", contact.number, attempt.outcome, s.retry_delay_s)
                self._owner.spawn(self._later(queue, contact, attempts + 1), f"retry-{contact.number}")
                continue
            await asyncio.to_thread(self._write, contact, attempts, attempt)
            self._left -= 1
            if self._left == 0:
                self._finished.set()

    async def _later(
        self, queue: asyncio.Queue[tuple[Contact, int]], contact: Contact, attempts: int
    ) -> None:
        await asyncio.sleep(self.settings.retry_delay_s)
        queue.put_nowait((contact, attempts))

    async def _paced(self) -> None:
        """Wait for this attempt's start time: one every 1/calls_per_s s."""
        async with self._pace:
            loop = asyncio.get_running_loop()
            now = loop.time()
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self.settings.calls_per_s
            if start > now:
                await asyncio.sleep(start - now)

    def _write(self, contact: Contact, attempts: int, attempt: Attempt) -> None:
        record: dict[str, object] = {
            "number": contact.number,
            "attempts": attempts,
            "outcome": attempt.outcome,
            "call_id": attempt.call_id,
            "end_reason": attempt.end_reason,
            "duration_s": attempt.duration_s,
            "detail": attempt.detail,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with self._results.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.results.append(record)
        log.info("campaign: %s %s after %d attempt(s)", contact.number, attempt.outcome, attempts)


class CallWaiter(Protocol):
    """The service side of outbound calls (`bridge.app.VoicebridgeApp`)."""

    def expect_call(
        self, channel_id: str, variables: dict[str, str]
    ) -> asyncio.Future[tuple[str, str, float]]:
        """The future of the call about to come in on `channel_id`: (call id, end reason, s)."""
        ...

    def forget_call(self, channel_id: str) -> None:
        """It will not come."""
        ...


class AmiDial:
    """One attempt: AMI Originate to the contact into Stasis app `app`; when answered, the call
    is served in this process (`waiter`) and the attempt returns when it is over."""

    def __init__(
        self,
        ami: AmiSettings,
        settings: CampaignSettings,
        waiter: CallWaiter,
        *,
        app: str,
        call_bound_s: float,
    ) -> None:
        self._ami = ami
        self._settings = settings
        self._waiter = waiter
        self._app = app
        self._call_bound_s = call_bound_s  # the longest an answered call may take to be reported

    async def __call__(self, contact: Contact) -> Attempt:
        channel_id = str(uuid.uuid4())
        ended = self._waiter.expect_call(channel_id, contact.variables)
        try:
            await originate(
                self._ami,
                contact.number,
                app=self._app,
                timeout_s=self._settings.answer_timeout_s,
                caller_id=self._settings.caller_id,
                channel_id=channel_id,
            )
        except OriginateError as exc:
            self._waiter.forget_call(channel_id)
            return Attempt(outcome_of_reason(exc.reason, exc.cause), detail=str(exc))
        except AmiError as exc:
            self._waiter.forget_call(channel_id)
            return Attempt("failed", detail=str(exc))
        try:
            async with asyncio.timeout(self._call_bound_s):
                call_id, reason, duration = await ended
        except TimeoutError:
            self._waiter.forget_call(channel_id)
            return Attempt("answered", detail=f"the call did not end within {self._call_bound_s:.0f} s")
        if not call_id:  # answered, but the service never served it (refused, setup failed)
            return Attempt("failed", end_reason=reason, detail=f"answered but not served: {reason}")
        outcome: Outcome = "machine" if reason == "machine" else "answered"
        return Attempt(outcome, call_id=call_id, end_reason=reason, duration_s=round(duration, 1))
