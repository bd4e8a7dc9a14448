"""FakeAsterisk (test infrastructure) checked against the real AudioSocket server."""

from __future__ import annotations

import asyncio
import struct
import sys
import uuid
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.audiosocket.server import AudioSocketConnection, AudioSocketServer, AudioSocketSettings
from bridge.pacer import Pacer
from testkit.fake_asterisk import FakeAsterisk, FakeCallerPool, read_wav_8k

T = 10.0
TONE = struct.pack("<160h", *([2000, -2000] * 80))


class Count:
    def __init__(self, target: int = 0) -> None:
        self.frames = 0
        self.bytes = b""
        self.hangup = asyncio.Event()
        self.target = target
        self.reached = asyncio.Event()

    def on_audio(self, pcm: bytes, sample_rate: int) -> None:
        self.frames += 1
        self.bytes += pcm
        if self.frames == self.target:
            self.reached.set()

    def on_dtmf(self, digit: str) -> None:
        pass

    def on_hangup(self) -> None:
        self.hangup.set()


@pytest.fixture
async def server() -> AsyncIterator[AudioSocketServer]:
    srv = AudioSocketServer(AudioSocketSettings(bind_port=0), pacer=Pacer())
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


def write_wav(path: Path, pcm: bytes, rate: int = 8000, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


def test_read_wav_checks_the_format(tmp_path: Path) -> None:
    ok, bad = tmp_path / "ok.wav", tmp_path / "bad.wav"
    write_wav(ok, TONE * 3)
    write_wav(bad, TONE * 3, rate=16000)
    assert read_wav_8k(str(ok)) == TONE * 3
    with pytest.raises(ValueError, match=r"bad\.wav: need 8000 Hz mono 16-bit, got 16000 Hz"):
        read_wav_8k(str(bad))


async def test_many_callers_share_one_timer(server: AudioSocketServer) -> None:
    pool = FakeCallerPool("127.0.0.1", server.port, pacer=Pacer(frame_s=0.005))
    n = 40
    uuids = [uuid.uuid4() for _ in range(n)]
    futs = [server.expect(u) for u in uuids]
    callers = [await pool.connect(u, audio=TONE * 10, send_silence=False) for u in uuids]
    assert len(pool.pacer) == n  # one timer drives them all
    async with asyncio.timeout(T):
        conns: list[AudioSocketConnection] = list(await asyncio.gather(*futs))
    counts = [Count(target=10) for _ in conns]
    for conn, count in zip(conns, counts, strict=True):
        conn.set_receiver(count)
    # 10 frames each, then nothing (send_silence=False); hang up and compare what arrived.
    async with asyncio.timeout(T):
        for count in counts:
            await count.reached.wait()
    assert all(c.frames_sent == 10 and not c.audio_queued for c in callers)
    await pool.close()
    async with asyncio.timeout(T):
        for count in counts:
            await count.hangup.wait()
    # Frames that arrived before set_receiver were buffered by the server, so nothing is lost.
    assert all(c.bytes == TONE * 10 for c in counts)


async def test_recording_helpers_classify_what_the_bridge_sent(server: AudioSocketServer) -> None:
    u = uuid.uuid4()
    fut = server.expect(u)
    fake = FakeAsterisk(u)
    await fake.connect("127.0.0.1", server.port)
    async with asyncio.timeout(T):
        conn = await fut
    conn.send_silence()
    conn.send_audio(bytearray(TONE))
    conn.send_audio(bytearray(TONE))
    conn.send_silence()
    conn.hangup()
    async with asyncio.timeout(T):
        await fake.wait_closed()
    assert fake.audio_count == 4
    assert len(fake.bot_audio_frames) == 2
    assert len(fake.silence_frames) == 2
    assert fake.bot_audio() == TONE * 2
    assert fake.hangup_received
    assert fake.first_voice_at is not None and fake.last_voice_at is not None
    assert fake.first_voice_at <= fake.last_voice_at
    stats = fake.inter_arrival()
    assert stats.count == 3
    assert stats.max >= stats.mean >= 0


async def test_wait_until_fails_when_the_connection_closes(server: AudioSocketServer) -> None:
    fake = FakeAsterisk(uuid.uuid4())  # not expected: the server rejects it
    await fake.connect("127.0.0.1", server.port)
    with pytest.raises(ConnectionError, match="connection closed"):
        async with asyncio.timeout(T):
            await fake.wait_until(lambda f: f.audio_count > 0)


async def test_cli_streams_a_wav(server: AudioSocketServer, tmp_path: Path) -> None:
    wav = tmp_path / "caller.wav"
    write_wav(wav, TONE * 5)
    u = uuid.uuid4()
    fut = server.expect(u)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "testkit.fake_asterisk",
        "--port",
        str(server.port),
        "--uuid",
        str(u),
        "--wav",
        str(wav),
        "--linger",
        "0.2",
        stdout=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(T):
        conn = await fut
        count = Count()
        conn.set_receiver(count)
        await count.hangup.wait()
        out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert count.bytes.startswith(TONE * 5)  # the WAV, then line silence until the hangup
    assert b"sent " in out
