"""Paced playout on the virtual-time loop: frame timing, silence, clear, backpressure, drain."""

from __future__ import annotations

import asyncio
import random
import struct

import pytest

from bridge.pacer import Pacer
from bridge.playout import Playout, PlayoutClosed
from orchestrator.audio import FRAME_BYTES, resample
from orchestrator.domain.models import AudioChunk
from testkit.virtual_time import run_virtual


class RecordingSink:
    """A FrameSink that records (loop time, frame) for every frame; b"" marks silence."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, bytes]] = []

    def send_audio(self, frame: bytearray) -> None:
        assert len(frame) == FRAME_BYTES
        self.frames.append((asyncio.get_running_loop().time(), bytes(frame)))

    def send_silence(self) -> None:
        self.frames.append((asyncio.get_running_loop().time(), b""))

    def audio(self) -> list[bytes]:
        return [f for _, f in self.frames if f]

    def silence_after(self, t: float) -> bool:
        return all(not f for at, f in self.frames if at > t)


def frames(n: int, start: int = 1) -> bytes:
    return b"".join(struct.pack("<160h", *([i] * 160)) for i in range(start, start + n))


def setup() -> tuple[Pacer, RecordingSink, Playout]:
    pacer, sink = Pacer(), RecordingSink()
    playout = Playout(sink)
    pacer.add(playout)
    pacer.start()
    return pacer, sink, playout


def test_one_frame_every_20_ms_and_silence_when_idle() -> None:
    async def main() -> RecordingSink:
        pacer, sink, _ = setup()
        await asyncio.sleep(1.001)
        pacer.stop()
        return sink

    sink = run_virtual(main)
    assert len(sink.frames) == 50
    assert sink.audio() == []
    times = [t for t, _ in sink.frames]
    assert times == pytest.approx([0.02 * (k + 1) for k in range(50)])


def test_audio_goes_out_in_order_then_silence() -> None:
    async def main() -> tuple[RecordingSink, Playout]:
        pacer, sink, playout = setup()
        await playout.write(AudioChunk(frames(5)))
        await playout.drain()
        await asyncio.sleep(0.1)
        pacer.stop()
        return sink, playout

    sink, playout = run_virtual(main)
    assert sink.audio() == [frames(1, i) for i in range(1, 6)]
    assert playout.frames_sent == 5
    assert sink.frames[-1][1] == b""  # back to silence
    times = [t for t, f in sink.frames if f]
    assert [round(b - a, 6) for a, b in zip(times, times[1:], strict=False)] == [0.02] * 4


def test_write_returns_at_the_high_water_mark() -> None:
    async def main() -> tuple[float, int]:
        pacer, _, playout = setup()
        await playout.write(AudioChunk(frames(50)))  # 1 s of audio
        returned_at, queued = asyncio.get_running_loop().time(), playout.queued_ms
        playout.clear()
        pacer.stop()
        return returned_at, queued

    returned_at, queued = run_virtual(main)
    assert queued <= 60
    assert returned_at == pytest.approx(0.94 + 0.02 * 0, abs=0.021)  # 1 s minus 60 ms queued


def test_clear_leaves_no_stale_frame_after_that_instant() -> None:
    async def main() -> tuple[RecordingSink, float]:
        pacer, sink, playout = setup()
        loop = asyncio.get_running_loop()
        cut = 0.31  # between two ticks
        loop.call_at(cut, playout.clear)
        await playout.write(AudioChunk(frames(50)))  # cleared mid-write: returns early
        assert loop.time() == pytest.approx(cut)
        assert not playout.speaking
        await asyncio.sleep(0.2)
        pacer.stop()
        return sink, cut

    sink, cut = run_virtual(main)
    assert len(sink.audio()) == 15  # 0.02 .. 0.30
    assert sink.silence_after(cut)


def test_pause_sends_silence_and_resume_goes_on_with_the_next_frame() -> None:
    async def main() -> tuple[RecordingSink, Playout]:
        pacer, sink, playout = setup()
        loop = asyncio.get_running_loop()
        loop.call_at(0.21, playout.pause)  # after 10 frames (0.02 .. 0.20)
        loop.call_at(0.41, playout.resume)  # 10 silent frames later
        await playout.write(AudioChunk(frames(30)))
        assert playout.paused is False
        await playout.drain()
        loop.call_at(loop.time() + 0.001, playout.pause)
        loop.call_at(loop.time() + 0.05, playout.clear)  # a cut ends a pause
        await asyncio.sleep(0.1)
        pacer.stop()
        return sink, playout

    sink, playout = run_virtual(main)
    assert sink.audio() == [frames(1, i) for i in range(1, 31)]  # all, in order: none repeated or lost
    labels = [f[:2] for _, f in sink.frames[:40]]
    assert labels[10:20] == [b""] * 10  # paused: silence
    assert sink.frames[20][1] == frames(1, 11)  # resumed with the frame after the last one sent
    assert playout.underflows == 0  # a pause is not a gap in the audio
    assert not playout.paused


def test_drain_pads_the_tail_and_waits_for_the_last_frame() -> None:
    async def main() -> tuple[RecordingSink, float]:
        pacer, sink, playout = setup()
        await playout.write(AudioChunk(frames(1) + b"\x01\x00" * 5))  # 1 frame + 10 bytes
        await playout.drain()
        done_at = asyncio.get_running_loop().time()
        pacer.stop()
        return sink, done_at

    sink, done_at = run_virtual(main)
    assert sink.audio() == [frames(1), b"\x01\x00" * 5 + bytes(FRAME_BYTES - 10)]
    assert done_at == pytest.approx(0.04)


def test_close_fails_pending_and_later_writes() -> None:
    async def main() -> None:
        pacer, _, playout = setup()
        writer = asyncio.create_task(playout.write(AudioChunk(frames(50))), name="writer")
        await asyncio.sleep(0.1)
        playout.close()
        with pytest.raises(PlayoutClosed):
            await writer
        with pytest.raises(PlayoutClosed):
            await playout.write(AudioChunk(frames(1)))
        with pytest.raises(PlayoutClosed):
            await playout.drain()
        pacer.stop()

    run_virtual(main)


def test_odd_length_audio_is_refused() -> None:
    async def main() -> None:
        _, _, playout = setup()
        with pytest.raises(ValueError, match="odd number of bytes"):
            await playout.write(AudioChunk(b"\x00" * 321))

    run_virtual(main)


def test_resampling_16k_chunked_equals_whole() -> None:
    rnd = random.Random(7)
    pcm16 = struct.pack("<16000h", *(rnd.randint(-20000, 20000) for _ in range(16000)))  # 1 s

    def play(chunks: list[bytes]) -> list[bytes]:
        async def main() -> list[bytes]:
            pacer, sink, playout = setup()
            for c in chunks:
                await playout.write(AudioChunk(c, sample_rate=16000))
            await playout.drain()
            pacer.stop()
            return sink.audio()

        return run_virtual(main)

    whole = play([pcm16])
    cuts = sorted(rnd.randrange(0, len(pcm16) // 2) * 2 for _ in range(30))
    chunked = play([pcm16[a:b] for a, b in zip([0, *cuts], [*cuts, len(pcm16)], strict=True)])
    assert len(whole) == len(chunked) == 50
    # The streaming filter may round a sample differently where a chunk boundary falls: 2 LSB.
    assert _max_diff(b"".join(chunked), b"".join(whole)) <= 2
    # And it is really 8 kHz: the same as converting the whole buffer at once.
    direct = resample(pcm16, 16000, 8000)
    assert len(direct) == 50 * FRAME_BYTES
    assert _max_diff(b"".join(whole), direct) <= 2


def _max_diff(a: bytes, b: bytes) -> int:
    assert len(a) == len(b)
    n = len(a) // 2
    return max(
        abs(x - y) for x, y in zip(struct.unpack(f"<{n}h", a), struct.unpack(f"<{n}h", b), strict=True)
    )


class _Log:
    """A FrameSink and a FrameMonitor writing to one log, to see who is told first."""

    def __init__(self, name: str, log: list[tuple[str, str, bytes]]) -> None:
        self.name, self.log = name, log

    def send_audio(self, frame: bytearray) -> None:
        self.log.append((self.name, "audio", bytes(frame)))

    def send_silence(self) -> None:
        self.log.append((self.name, "silence", b""))

    def sent(self, frame: bytes | bytearray) -> None:
        self.send_audio(bytearray(frame))

    def sent_silence(self) -> None:
        self.send_silence()


def test_the_monitor_hears_every_frame_before_the_sink_and_is_optional() -> None:
    async def main() -> None:
        log: list[tuple[str, str, bytes]] = []
        watched = Playout(_Log("sink", log), monitor=_Log("monitor", log))
        plain_log: list[tuple[str, str, bytes]] = []
        plain = Playout(_Log("sink", plain_log))  # no monitor: the sink alone
        ring = (bytearray(frames(1, start=7)),)
        for p in (watched, plain):
            p.tick()  # silence
            await p.write(AudioChunk(pcm=frames(1), sample_rate=8000))
            p.tick()  # audio
            p.pause()
            p.tick()  # paused: silence
            p.resume()
            p.end_segment()
            p.ring(ring)
            p.tick()  # ringback
        sent = [("silence", b""), ("audio", frames(1)), ("silence", b""), ("audio", frames(1, start=7))]
        assert log == [(who, *s) for s in sent for who in ("monitor", "sink")]
        assert plain_log == [("sink", *s) for s in sent]

    run_virtual(main)
