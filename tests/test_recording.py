"""Call recording: a call through the gateway on real sockets gives one stereo WAV whose left
channel holds exactly the caller's frames and whose right channel holds exactly the bot's, in
step; alignment on the pacer tick; retention."""

from __future__ import annotations

import asyncio
import os
import stat
import time
import uuid
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.gateway import TelephonyGateway
from bridge.pacer import Pacer
from bridge.recording import CallRecorder, RecordingSettings, delete_old_recordings, recording_path
from orchestrator.audio import FRAME_BYTES, SILENCE_FRAME
from orchestrator.clock import LoopClock
from orchestrator.domain.models import AudioChunk
from testkit.fake_asterisk import FakeCallerPool

T = 10.0  # upper bound for any single wait, never expected to be reached


def noise(frames: int, seed: int) -> bytes:
    """Random 16-bit audio with no silent frame: every frame is unique in a recording."""
    rng = np.random.default_rng(seed)
    return rng.integers(1000, 20000, size=frames * FRAME_BYTES // 2, dtype=np.int16).tobytes()


def read_stereo(path: Path) -> tuple[bytes, bytes]:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return data[0::2].tobytes(), data[1::2].tobytes()


class Frames:
    """A FrameSink that keeps what the playout sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_audio(self, frame: bytearray) -> None:
        self.sent.append(bytes(frame))

    def send_silence(self) -> None:
        self.sent.append(SILENCE_FRAME)


class Counter:
    """An AudioSink that sets `reached` at the `n`th caller frame."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.reached = asyncio.Event()

    def push_audio(self, frame: bytes) -> None:
        self.n -= 1
        if self.n <= 0:
            self.reached.set()


@pytest.fixture
async def server() -> AsyncIterator[AudioSocketServer]:
    srv = AudioSocketServer(AudioSocketSettings(bind_port=0), pacer=Pacer())
    await srv.start()
    srv.pacer.start()
    try:
        yield srv
    finally:
        srv.pacer.stop()
        await srv.close()


async def test_a_call_through_the_gateway_is_recorded_both_sides_in_step(
    server: AudioSocketServer, tmp_path: Path
) -> None:
    caller_audio, bot_audio = noise(50, 1), noise(40, 2)
    # Real-time callers (20 ms): the caller's frames arrive on the same clock the bot's are sent.
    pool = FakeCallerPool("127.0.0.1", server.port, pacer=Pacer())
    settings = RecordingSettings(enabled=True, directory=str(tmp_path / "rec"), flush_interval_s=0.3)
    u = uuid.uuid4()
    try:
        fut = server.expect(u)
        caller = await pool.connect(u)  # silence until both sides start together below
        async with asyncio.timeout(T):
            conn = await fut
        recorder = CallRecorder(conn, recording_path(settings, str(u)), settings)
        await recorder.open()
        gateway = TelephonyGateway(conn, server.pacer, clock=LoopClock(), recorder=recorder)
        counter = Counter(60)
        gateway.attach(None, counter)
        # Both sides start in the same instant (not the caller at connect: the setup above can
        # take longer than the few frames' tolerance below on a loaded machine).
        caller.play(caller_audio)
        async with asyncio.timeout(T):
            await gateway.outbound.write(AudioChunk(bot_audio, 8000))
            await gateway.outbound.drain()
            await counter.reached.wait()  # the caller's audio and some silence after it
        written_during_call = recorder.frames
        pool.hangup(caller)
        async with asyncio.timeout(T):
            await gateway.wait_hangup()
        await gateway.close(hang_up=False)
        await recorder.close()
        await recorder.close()  # idempotent
    finally:
        await pool.close()

    assert recorder.path is not None
    assert stat.S_IMODE(recorder.path.stat().st_mode) == 0o600
    left, right = read_stereo(recorder.path)
    assert len(left) == len(right) >= 60 * FRAME_BYTES
    assert recorder.frames == len(left) // FRAME_BYTES
    # Every frame of each side, intact and in order, on its own channel (the caller's may have
    # silence between its frames where one came a tick late: each lands at the tick it arrived
    # in, as on a jittery line; the bot's are one per tick by construction) ...
    caller_frames = [left[i : i + FRAME_BYTES] for i in range(0, len(left), FRAME_BYTES)]
    voiced = [i for i, f in enumerate(caller_frames) if any(f)]
    assert b"".join(caller_frames[i] for i in voiced) == caller_audio
    at_caller, at_bot = voiced[0] * FRAME_BYTES, right.find(bot_audio)
    assert at_bot >= 0 and at_bot % FRAME_BYTES == 0
    assert right.find(caller_audio[:FRAME_BYTES]) < 0 and left.find(bot_audio[:FRAME_BYTES]) < 0
    # ... starting at the same moment, give or take the network's few frames: both began at once.
    assert abs(at_caller - at_bot) // FRAME_BYTES <= 5, (at_caller // FRAME_BYTES, at_bot // FRAME_BYTES)
    # Silence where a side had nothing: the bot after its audio.
    assert right[at_bot + len(bot_audio) :].count(0) == len(right) - at_bot - len(bot_audio)
    # Written in chunks during the call (flush_interval_s 0.3 s of a call > 1 s), not only at its end.
    assert 0 < written_during_call <= recorder.frames


async def test_a_caller_frame_lands_at_the_tick_it_arrived_in(tmp_path: Path) -> None:
    settings = RecordingSettings(enabled=True, directory=str(tmp_path))
    sink = Frames()
    recorder = CallRecorder(sink, tmp_path / "x.wav", settings)
    await recorder.open()
    first, later = noise(1, 3), noise(2, 4)
    recorder.caller_frame(first)  # arrives before the first tick: slot 0
    for _ in range(10):
        recorder.send_silence()  # ten ticks, nothing from the caller after the first frame
    recorder.caller_frame(later[:FRAME_BYTES])  # in the tenth tick's interval: slot 9
    recorder.caller_frame(later[FRAME_BYTES:])  # a burst: kept contiguous, slot 10
    recorder.send_audio(bytearray(noise(1, 5)))
    await recorder.close()
    assert len(sink.sent) == 11  # every frame still went out
    left, right = read_stereo(tmp_path / "x.wav")
    frames = [left[i : i + FRAME_BYTES] for i in range(0, len(left), FRAME_BYTES)]
    assert len(frames) == 11
    assert frames[0] == first and frames[9] + frames[10] == later
    assert all(f == SILENCE_FRAME for f in frames[1:9])
    assert right[-FRAME_BYTES:] == noise(1, 5) and right[:-FRAME_BYTES].count(0) == 10 * FRAME_BYTES


async def test_an_unwritable_directory_leaves_the_call_unrecorded(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    settings = RecordingSettings(enabled=True, directory=str(blocker))
    recorder = CallRecorder(Frames(), recording_path(settings, "c/1"), settings)
    await recorder.open()
    assert recorder.path is None
    recorder.caller_frame(SILENCE_FRAME)
    recorder.send_silence()
    await recorder.close()


def test_the_file_name_is_safe_and_dated() -> None:
    path = recording_path(RecordingSettings(directory="/r"), "../a b", now=0)
    assert path == Path("/r/19700101T000000Z_.._a_b.wav")


def test_retention_deletes_old_recordings_only_up_to_the_limit(tmp_path: Path) -> None:
    now = time.time()
    old = [tmp_path / f"old{i}.wav" for i in range(3)]
    for p in old:
        p.write_bytes(b"x")
        os.utime(p, (now - 8 * 86400, now - 8 * 86400))
    fresh = tmp_path / "fresh.wav"
    fresh.write_bytes(b"x")
    other = tmp_path / "notes.txt"
    other.write_bytes(b"x")
    os.utime(other, (now - 8 * 86400, now - 8 * 86400))
    assert delete_old_recordings(tmp_path, older_than_s=7 * 86400, limit=2, now=now) == 2
    assert delete_old_recordings(tmp_path, older_than_s=7 * 86400, limit=2, now=now) == 1
    assert not any(p.exists() for p in old)
    assert fresh.exists() and other.exists()
    assert delete_old_recordings(tmp_path / "missing", older_than_s=1, limit=1, now=now) == 0


class _Quiet(asyncio.Transport):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        return None

    def close(self) -> None:
        return None


class _Frames:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def push_audio(self, frame: bytes) -> None:
        self.frames.append(bytes(frame))


async def test_the_recorder_gets_every_caller_frame_whole_split_or_resampled(tmp_path: Path) -> None:
    """The gateway's whole-frame path is inline and the rest goes through its reframing: the
    recorder's caller side must still hold every frame the recognition gets, in order."""
    from bridge.audiosocket.connection import AudioSocketConnection

    conn = AudioSocketConnection(uuid.uuid4(), _Quiet(), "test")
    settings = RecordingSettings(enabled=True, directory=str(tmp_path))
    recorder = CallRecorder(conn, tmp_path / "call.wav", settings)
    gateway = TelephonyGateway(conn, Pacer(), clock=LoopClock(), recorder=recorder)
    sink = _Frames()
    gateway.attach(None, sink)
    audio = noise(12, 3)
    gateway.on_audio(audio[:FRAME_BYTES], 8000)  # whole
    gateway.on_audio(audio[FRAME_BYTES : FRAME_BYTES + 100], 8000)  # split ...
    gateway.on_audio(audio[FRAME_BYTES + 100 : 3 * FRAME_BYTES], 8000)  # ... and whole after it
    gateway.on_audio(audio[3 * FRAME_BYTES : 4 * FRAME_BYTES], 8000)  # whole, after the split
    for _ in range(8):
        gateway.on_audio(noise(1, 4) * 2, 16000)  # 20 ms at 16 kHz
    assert sink.frames[:4] == [audio[i * FRAME_BYTES : (i + 1) * FRAME_BYTES] for i in range(4)]
    assert len(sink.frames) == gateway.frames_in > 4
    assert recorder._caller == b"".join(sink.frames)
