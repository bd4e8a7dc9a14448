"""Per-call outbound playout: a small PCM buffer drained one 20 ms frame per pacer tick.

Asterisk neither buffers nor retimes AudioSocket audio (asterisk-observed.md), so the bridge must
send exactly one 320-byte frame every 20 ms, and silence when the bot has nothing to say. The
`Pacer` (bridge/pacer.py) calls `tick()` on every call's `Playout` from one shared deadline timer;
writers only append to the buffer and wait for room, so nothing here runs per frame except `tick`.

Barge-in and filler cuts call `clear()`, which drops queued audio synchronously: the next tick
sends silence or newer audio, so no stale frame reaches the caller after that instant. At a
possible barge-in (speech onset) `pause()` sends silence while keeping the queue; `resume()` goes
on from the next unsent frame (a false alarm: nothing repeated or lost); `clear()` ends a pause.

`ring(frames)` loops prepared frames (a transfer's ringback, bridge/ringback.py) in place of the
silence of an empty buffer until `stop_ring()`: queued bot audio still goes first, and the frame
after `stop_ring()` is silence (or bot audio); the loop's frames are built once, not per tick.

Counters for metrics (plain integers, read at scrape time; nothing is reported per frame):
`frames_sent`, `silence_sent`, `ring_sent` (frames of the `ring()` loop; the three add up to the
ticks), and `underflows`, silent frames sent in the middle of a segment
(bot audio was written and the segment not ended, but no whole frame was ready: the caller
hears a gap). `watch_cut(at, report)` measures a barge-in: the first silent (or ringback) frame
after it calls `report(seconds since at)` once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Annotated, Protocol

import pydantic.dataclasses
from pydantic import ConfigDict, Field

from orchestrator.audio import FRAME_BYTES, FRAME_MS, Resampler
from orchestrator.domain.errors import AudioClosed
from orchestrator.domain.models import AudioChunk


class FrameSink(Protocol):
    """Where frames go: an AudioSocket connection, or a recorder in tests and benchmarks."""

    def send_audio(self, frame: bytearray) -> None:
        """Send one 320-byte slin frame; the sink must copy it if it keeps it."""
        ...

    def send_silence(self) -> None:
        """Send one frame of silence."""
        ...


class FrameMonitor(Protocol):
    """Told of every frame the playout sends, before its sink sends it (the call's echo gate)."""

    def sent(self, frame: bytes | bytearray) -> None:
        """A frame of audio (bot or ringback) goes out."""
        ...

    def sent_silence(self) -> None:
        """A frame of silence goes out."""
        ...


class PlayoutClosed(AudioClosed):
    """The call's outbound leg is gone (hangup); nothing more can be played."""


@pydantic.dataclasses.dataclass(
    frozen=True, slots=True, config=ConfigDict(extra="forbid", allow_inf_nan=False)
)
class PlayoutSettings:
    """Each call's outbound buffer (section `[playout]`)."""

    # Audio left queued when `write()` returns, ms (rounded down to whole 20 ms frames, at least one):
    # enough to ride over a late writer, small enough that a barge-in cannot leave much behind.
    high_water_ms: Annotated[int, Field(ge=20)] = 60
    # While a transfer rings the operator, the caller hears a ringback tone (425 Hz, 1 s on, 4 s
    # off: the Russian one) from the bot's leg instead of silence, until the operator answers.
    ringback: bool = True


class Playout:
    """The `OutboundAudio` of one call (see orchestrator.contracts)."""

    __slots__ = (
        "_buf",
        "_closed",
        "_cut_at",
        "_cut_report",
        "_drain_waiters",
        "_frames_sent",
        "_high_water",
        "_in_segment",
        "_monitor",
        "_paused",
        "_resampler",
        "_ring",
        "_ring_at",
        "_sink",
        "_space_waiters",
        "ring_sent",
        "silence_sent",
        "underflows",
    )

    def __init__(
        self, sink: FrameSink, settings: PlayoutSettings | None = None, *, monitor: FrameMonitor | None = None
    ) -> None:
        self._sink = sink
        # Called in `tick` itself: a sink wrapped to tell it would cost a call per frame per call.
        self._monitor = monitor
        s = settings or PlayoutSettings()
        self._high_water = max(1, s.high_water_ms // FRAME_MS) * FRAME_BYTES
        self._buf = bytearray()
        self._space_waiters: deque[asyncio.Future[None]] = deque()
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._resampler = Resampler()
        self._frames_sent = 0
        self.silence_sent = 0
        self.ring_sent = 0
        self.underflows = 0
        self._in_segment = False  # bot audio written, segment not ended yet
        self._paused = False  # silence is sent, the queue kept (two-stage barge-in)
        self._cut_at: float | None = None
        self._cut_report: Callable[[float], None] | None = None
        self._ring: tuple[bytearray, ...] = ()  # frames looped instead of silence (`ring`)
        self._ring_at = 0
        self._closed = False

    # --- writer side (the Orchestrator) ---
    async def write(self, chunk: AudioChunk) -> None:
        """Queue `chunk`; return once no more than the high-water mark is left to send."""
        if self._closed:
            raise PlayoutClosed("call audio is closed")
        self._buf += self._resampler.convert(chunk.pcm, chunk.sample_rate)
        self._in_segment = True
        while len(self._buf) > self._high_water:
            fut = asyncio.get_running_loop().create_future()
            self._space_waiters.append(fut)
            try:
                await fut
            finally:
                del fut  # its PlayoutClosed's traceback holds this frame: no cycle through it

    def end_segment(self) -> None:
        """Take the resampler's held-back tail, pad the last partial frame with silence."""
        self._buf += self._resampler.flush()
        tail = len(self._buf) % FRAME_BYTES
        if tail:
            self._buf += bytes(FRAME_BYTES - tail)
        self._in_segment = False

    async def drain(self) -> None:
        """Wait until all queued audio has been sent (pads the tail first)."""
        self.end_segment()
        if self._closed:
            raise PlayoutClosed("call audio is closed")
        if self._buf:
            fut = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(fut)
            try:
                await fut
            finally:
                del fut  # its PlayoutClosed's traceback holds this frame: no cycle through it

    def clear(self) -> None:
        """Drop everything queued, now."""
        self._buf.clear()
        self._resampler.reset()
        self._in_segment = False
        self._paused = False
        self._wake(self._space_waiters)
        self._wake(self._drain_waiters)

    def pause(self) -> None:
        """Send silence from the next frame on, keeping what is queued (writers wait as usual)."""
        self._paused = True

    def resume(self) -> None:
        """Go on from the frame after the last one sent: nothing repeated, nothing skipped."""
        self._paused = False

    def ring(self, frames: tuple[bytearray, ...]) -> None:
        """Loop `frames` (320-byte slin each) whenever no bot audio is queued, from the next tick."""
        self._ring, self._ring_at = frames, 0

    def stop_ring(self) -> None:
        """Stop the loop of `ring()`: the next frame is bot audio or silence; idempotent."""
        self._ring = ()

    @property
    def ringing(self) -> bool:
        """Whether `ring()` is in force."""
        return bool(self._ring)

    @property
    def paused(self) -> bool:
        """Whether `pause()` is in force."""
        return self._paused

    def watch_cut(self, at: float, report: Callable[[float], None]) -> None:
        """Call `report(s)` at the first silent or ringback frame sent from now on, with `s` the seconds since
        `at` (a `time.monotonic()` instant, the loop clock's): how long the caller still heard the
        bot after a barge-in decided at `at`."""
        self._cut_at, self._cut_report = at, report

    @property
    def frames_sent(self) -> int:
        """Bot audio frames sent so far (silence not counted)."""
        return self._frames_sent

    @property
    def speaking(self) -> bool:
        """Whether bot audio is queued right now."""
        return bool(self._buf)

    @property
    def queued_ms(self) -> int:
        """Milliseconds of audio waiting to be sent."""
        return len(self._buf) * FRAME_MS // FRAME_BYTES

    # --- pacer side ---
    def tick(self) -> None:
        """Send exactly one frame: queued audio if a whole frame is ready, else silence."""
        buf, monitor = self._buf, self._monitor
        if self._paused:
            self.silence_sent += 1
            if monitor is not None:
                monitor.sent_silence()
            self._sink.send_silence()
            return
        if len(buf) >= FRAME_BYTES:
            frame = buf[:FRAME_BYTES]
            del buf[:FRAME_BYTES]
            self._frames_sent += 1
            if monitor is not None:
                monitor.sent(frame)
            self._sink.send_audio(frame)
            if self._space_waiters and len(buf) <= self._high_water:
                self._wake(self._space_waiters)
            if self._drain_waiters and not buf:
                self._wake(self._drain_waiters)
        elif self._ring and not self._in_segment:
            ring = self._ring
            self.ring_sent += 1
            frame = ring[self._ring_at]
            if monitor is not None:
                monitor.sent(frame)
            self._sink.send_audio(frame)
            self._ring_at = (self._ring_at + 1) % len(ring)
            if self._cut_report is not None:  # the bot's audio ended here too
                self._report_cut()
        else:
            self.silence_sent += 1
            if self._in_segment:
                self.underflows += 1
            if monitor is not None:
                monitor.sent_silence()
            self._sink.send_silence()
            if self._cut_report is not None:
                self._report_cut()

    def _report_cut(self) -> None:
        report, at = self._cut_report, self._cut_at
        self._cut_report = self._cut_at = None
        if report is not None and at is not None:
            report(time.monotonic() - at)

    def close(self) -> None:
        """The call is gone: fail pending and future writes with `PlayoutClosed`."""
        self._closed = True
        self._ring = ()
        self._buf.clear()
        for waiters in (self._space_waiters, self._drain_waiters):
            while waiters:
                fut = waiters.pop()
                if not fut.done():
                    fut.set_exception(PlayoutClosed("call audio is closed"))

    @staticmethod
    def _wake(waiters: deque[asyncio.Future[None]] | list[asyncio.Future[None]]) -> None:
        while waiters:
            fut = waiters.pop()
            if not fut.done():
                fut.set_result(None)
