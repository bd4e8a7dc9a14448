"""The 20 ms audio hot path allocates nothing that outlives a frame, and little within one.

tracemalloc over 2,000 frames of the inbound path (AudioSocket decode -> gateway -> the
recognizer's buffer -> VAD) and the outbound path (`Playout.tick` -> `AudioSocketConnection`):
bytes still held at the end (anything kept per frame, e.g. a task, a log record, a list entry,
would be 2,000 of them) and the peak above the start (what one frame's work holds at once). The
transports are null (the kernel's send is not our allocation); the parts are the real ones.
"""

from __future__ import annotations

import asyncio
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from bridge.audiosocket.protocol import Audio, Decoder, encode_audio
from bridge.audiosocket.server import AudioSocketConnection
from bridge.gateway import TelephonyGateway
from bridge.pacer import Pacer
from bridge.playout import Playout, PlayoutSettings
from orchestrator.audio import FRAME_BYTES
from orchestrator.clock import LoopClock
from orchestrator.domain.models import AudioChunk
from testkit.fakes import BenchRecognizer

FRAMES = 2000
WARMUP = 500
# A voiced frame: not all zeros, loud enough to pass the VAD's energy gate.
FRAME = (bytes(range(0, 256, 2)) * 3)[:FRAME_BYTES]


class _CountingTransport(asyncio.Transport):
    """Accepts writes, counts them, keeps nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1

    def close(self) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class Traced:
    """Bytes held at the end of the traced block, and the peak above its start."""

    retained = 0
    peak = 0


@contextmanager
def traced() -> Iterator[Traced]:
    result = Traced()
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        yield result
        end, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    result.retained, result.peak = end - start, peak - start


def _run(step: Callable[[], None], n: int) -> None:
    for _ in range(n):
        step()


async def test_inbound_frames_leave_nothing_behind_but_the_recognizers_bounded_buffer() -> None:
    conn = AudioSocketConnection(uuid.uuid4(), _CountingTransport(), "test")
    gateway = TelephonyGateway(conn, Pacer(), clock=LoopClock())
    buffered = 5  # the recognizer's buffer: full after the warm-up, drop-oldest from then on
    recognizer = BenchRecognizer(buffered)
    gateway.attach(None, recognizer)
    decoder = Decoder()
    message = encode_audio(FRAME)

    def frame() -> None:
        for msg in decoder.feed(message):
            assert type(msg) is Audio
            gateway.on_audio(msg.pcm, msg.sample_rate)

    _run(frame, WARMUP)
    with traced() as t:
        _run(frame, FRAMES)
    gateway.on_hangup()

    assert gateway.frames_in == WARMUP + FRAMES
    assert recognizer.buffer.dropped == WARMUP + FRAMES - buffered
    # The buffer's frames are replaced by new ones (up to `buffered` x ~360 B); anything kept per
    # frame would add at least 2,000 x 16 B.
    assert t.retained < buffered * 400 + 1000, t.retained
    assert t.peak < buffered * 400 + 2000, t.peak


async def test_outbound_frames_leave_nothing_behind() -> None:
    transport = _CountingTransport()
    conn = AudioSocketConnection(uuid.uuid4(), transport, "test")
    playout = Playout(conn, PlayoutSettings(high_water_ms=1000))  # write() never waits here
    chunk = AudioChunk(FRAME * 10)  # 200 ms, as the TTS adapters hand it out

    async def speak(n: int) -> None:
        for i in range(n):
            if i % 10 == 0:
                await playout.write(chunk)
            playout.tick()

    await speak(WARMUP)
    with traced() as t:
        await speak(FRAMES)
    assert playout.frames_sent == WARMUP + FRAMES and playout.silence_sent == 0
    assert transport.writes == WARMUP + FRAMES
    assert t.retained < 1000, t.retained
    # At most one 200 ms chunk (3,200 B), the playout's buffer and one message in flight.
    assert t.peak < 3 * len(chunk.pcm), t.peak

    quiet = Playout(conn)
    _run(quiet.tick, WARMUP)
    with traced() as t:
        _run(quiet.tick, FRAMES)
    assert quiet.silence_sent == WARMUP + FRAMES
    assert t.retained < 500, t.retained
    assert t.peak < 500, t.peak  # silence is a preframed constant: nothing per frame


@pytest.mark.parametrize("kept", [True, False])
async def test_the_check_would_see_an_object_kept_per_frame(kept: bool) -> None:
    """The measure can fail: a list entry per frame shows as retained bytes."""
    sink: list[bytearray] = []

    def frame() -> None:
        data = bytearray(FRAME)
        if kept:
            sink.append(data)

    with traced() as t:
        _run(frame, FRAMES)
    assert (t.retained > FRAMES * 16) is kept
