"""Per-call outbound playout: a small PCM buffer drained one 20 ms frame per pacer tick.

Asterisk neither buffers nor retimes AudioSocket audio (asterisk-observed.md), so the bridge must
send exactly one 320-byte frame every 20 ms, and silence when the bot has nothing to say. The
`Pacer` (bridge/pacer.py) calls `tick()` on every call's `Playout` from one shared deadline timer;
writers only append to the buffer and wait for room, so nothing here runs per frame except `tick`.

Barge-in and filler cuts call `clear()`, which drops queued audio synchronously: the next tick
sends silence or newer audio, so no stale frame reaches the caller after that instant.
"""

from __future__ import annotations

import asyncio
from collections import deque
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


class PlayoutClosed(AudioClosed):
    """The call's outbound leg is gone (hangup); nothing more can be played."""


@pydantic.dataclasses.dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class PlayoutSettings:
    """Each call's outbound buffer (section `[playout]`)."""

    # Audio left queued when `write()` returns, ms (rounded down to whole 20 ms frames, at least one):
    # enough to ride over a late writer, small enough that a barge-in cannot leave much behind.
    high_water_ms: Annotated[int, Field(ge=20)] = 60


class Playout:
    """The `OutboundAudio` of one call (see orchestrator.contracts)."""

    __slots__ = (
        "_buf",
        "_closed",
        "_drain_waiters",
        "_frames_sent",
        "_high_water",
        "_resampler",
        "_sink",
        "_space_waiters",
        "silence_sent",
    )

    def __init__(self, sink: FrameSink, settings: PlayoutSettings | None = None) -> None:
        self._sink = sink
        s = settings or PlayoutSettings()
        self._high_water = max(1, s.high_water_ms // FRAME_MS) * FRAME_BYTES
        self._buf = bytearray()
        self._space_waiters: deque[asyncio.Future[None]] = deque()
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._resampler = Resampler()
        self._frames_sent = 0
        self.silence_sent = 0
        self._closed = False

    # --- writer side (the Orchestrator) ---
    async def write(self, chunk: AudioChunk) -> None:
        """Queue `chunk`; return once no more than the high-water mark is left to send."""
        if self._closed:
            raise PlayoutClosed("call audio is closed")
        self._buf += self._resampler.convert(chunk.pcm, chunk.sample_rate)
        while len(self._buf) > self._high_water:
            fut = asyncio.get_running_loop().create_future()
            self._space_waiters.append(fut)
            await fut

    def end_segment(self) -> None:
        """Take the resampler's held-back tail, pad the last partial frame with silence."""
        self._buf += self._resampler.flush()
        tail = len(self._buf) % FRAME_BYTES
        if tail:
            self._buf += bytes(FRAME_BYTES - tail)

    async def drain(self) -> None:
        """Wait until all queued audio has been sent (pads the tail first)."""
        self.end_segment()
        if self._closed:
            raise PlayoutClosed("call audio is closed")
        if self._buf:
            fut = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(fut)
            await fut

    def clear(self) -> None:
        """Drop everything queued, now."""
        self._buf.clear()
        self._resampler.reset()
        self._wake(self._space_waiters)
        self._wake(self._drain_waiters)

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
        buf = self._buf
        if len(buf) >= FRAME_BYTES:
            frame = buf[:FRAME_BYTES]
            del buf[:FRAME_BYTES]
            self._frames_sent += 1
            self._sink.send_audio(frame)
            if self._space_waiters and len(buf) <= self._high_water:
                self._wake(self._space_waiters)
            if self._drain_waiters and not buf:
                self._wake(self._drain_waiters)
        else:
            self.silence_sent += 1
            self._sink.send_silence()

    def close(self) -> None:
        """The call is gone: fail pending and future writes with `PlayoutClosed`."""
        self._closed = True
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
