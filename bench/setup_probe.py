"""The bridge side of the call setup bench (`bench.call_setup`): a trivial call handler that
times each call, and a media lock that times its waits.

Per call (all on the loop clock, `time.monotonic()`): StasisStart -> AudioSocket connected
(`AriCall.setup_s`, `CallLegs.set_up`), StasisStart -> the handler's first clip frame written,
and the teardown: from the handler's end (the bot hangs up) or the caller's hang-up to the
end of the controller's call task (`CallLegs.tear_down` done).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Literal

from bridge.ari import AriCall
from bridge.pacer import Pacer
from bridge.playout import Playout
from orchestrator.domain.models import AudioChunk

__all__ = ["CallRecord", "OverlapCount", "SetupProbe", "TimedLock"]


@dataclass
class CallRecord:
    """One call's figures, ms (None: not reached)."""

    ended_by: str = ""  # "bot" or "caller"
    setup_ms: float = 0.0  # StasisStart -> AudioSocket connected, handler called
    first_frame_ms: float | None = None  # StasisStart -> first clip frame handed to the socket
    teardown_ms: float | None = None  # handler end / caller gone -> call task done
    lock_wait_ms: dict[str, float] = field(default_factory=dict)  # "create"/"delete" -> wait


class _FirstFrame:
    """`FrameMonitor` that notes when the first audio frame left (bench only: per frame)."""

    def __init__(self) -> None:
        self.at: float | None = None

    def sent(self, frame: bytes | bytearray) -> None:
        if self.at is None:
            self.at = time.monotonic()

    def sent_silence(self) -> None:
        pass


class TimedLock(asyncio.Lock):
    """`CallLegs.media_lock` that records each acquisition's wait and hold, by call task.

    A call task takes the lock first for its externalMedia POST, then for its teardown; the
    order tells which is which."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: dict[str, list[float]] = defaultdict(list)  # task name -> waits, s
        self.holds: dict[str, list[float]] = defaultdict(list)  # "create"/"delete" -> holds, s
        self._since = 0.0
        self._kind = ""

    async def acquire(self) -> Literal[True]:
        t0 = time.monotonic()
        await super().acquire()
        self._since = time.monotonic()
        task = asyncio.current_task()
        waits = self.waits[task.get_name() if task else "?"]
        waits.append(self._since - t0)
        self._kind = "create" if len(waits) == 1 else "delete"
        return True

    def release(self) -> None:
        self.holds[self._kind].append(time.monotonic() - self._since)
        super().release()


class OverlapCount:
    """Stands in for `CallLegs.media_lock` without locking: counts how often an externalMedia
    creation or a media teardown began while another call's was still in progress."""

    def __init__(self) -> None:
        self._seen: set[str] = set()  # call tasks that took it once (their next entry: delete)
        self._active: Counter[str] = Counter()  # "create"/"delete" in progress
        self.entries: Counter[str] = Counter()
        self.overlapped: Counter[str] = Counter()  # "create|delete": a create began during a delete
        self.most = 0  # most in progress at once
        self._held: dict[str, str] = {}  # call task -> what it is in

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        name = task.get_name() if task else "?"
        kind = "delete" if name in self._seen else "create"
        self._seen.add(name)
        for other, n in self._active.items():
            if n:
                self.overlapped[f"{kind}|{other}"] += 1
        self._active[kind] += 1
        self.entries[kind] += 1
        self.most = max(self.most, sum(self._active.values()))
        self._held[name] = kind

    async def __aexit__(self, *exc: object) -> None:
        task = asyncio.current_task()
        self._active[self._held.pop(task.get_name() if task else "?", "create")] -= 1


class SetupProbe:
    """The call handler: plays `clip` (the greeting), holds the call `hold_s`, then every
    other call the bot hangs up; the rest wait for the caller's BYE (bounded)."""

    def __init__(self, pacer: Pacer, clip: bytes, hold_s: float, *, ends: str = "mixed") -> None:
        self._pacer = pacer
        self._clip = clip
        self._hold_s = hold_s
        self._ends = ends
        self._n = 0
        self.records: dict[str, CallRecord] = {}  # by caller channel id

    def _bot_ends(self) -> bool:
        self._n += 1
        return self._ends == "bot" or (self._ends == "mixed" and self._n % 2 == 0)

    async def __call__(self, call: AriCall) -> None:
        t_called = time.monotonic()
        started = t_called - call.setup_s
        rec = CallRecord(ended_by="bot" if self._bot_ends() else "caller", setup_ms=call.setup_s * 1000)
        self.records[call.channel_id] = rec
        task = next((t for t in asyncio.all_tasks() if t.get_name() == f"ari-call-{call.channel_id}"), None)
        first = _FirstFrame()
        playout = Playout(call.conn, monitor=first)
        self._pacer.add(playout)
        try:
            with contextlib.suppress(Exception):  # the caller may be gone already: still timed
                await playout.write(AudioChunk(self._clip))
            # Holding the call is the point here: wait for the caller's hang-up, at most hold_s
            # (the bot's calls) or hold_s + 15 s (the caller's: sipp hangs up at hold_s + 2 s).
            bound = self._hold_s if rec.ended_by == "bot" else self._hold_s + 15
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, t_called + bound - time.monotonic())):
                    await call.caller_gone.wait()
            if call.caller_gone.is_set():
                rec.ended_by = "caller"
        finally:
            self._pacer.remove(playout)
            playout.close()
            if first.at is not None:
                rec.first_frame_ms = (first.at - started) * 1000
            end = time.monotonic()
            if task is not None:
                task.add_done_callback(lambda _t: self._done(rec, end))

    @staticmethod
    def _done(rec: CallRecord, end: float) -> None:
        rec.teardown_ms = (time.monotonic() - end) * 1000

    def attach_lock_waits(self, lock: TimedLock) -> None:
        """Copy the lock's waits into the records (first wait: create, second: delete)."""
        for channel_id, rec in self.records.items():
            waits = lock.waits.get(f"ari-call-{channel_id}", [])
            for kind, wait in zip(("create", "delete"), waits, strict=False):
                rec.lock_wait_ms[kind] = wait * 1000
