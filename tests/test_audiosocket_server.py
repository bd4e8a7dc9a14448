"""AudioSocket server over real sockets on 127.0.0.1, with FakeAsterisk as the peer."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import uuid
from collections.abc import AsyncIterator

import pytest

from bridge.audiosocket.protocol import Kind, encode_audio, encode_uuid
from bridge.audiosocket.server import (
    PENDING_LIMIT,
    AudioSocketConnection,
    AudioSocketServer,
    AudioSocketSettings,
)
from bridge.pacer import Pacer
from testkit.fake_asterisk import FakeAsterisk

T = 5.0  # generous upper bound for any single wait; tests finish far sooner
TONE = struct.pack("<160h", *([1000, -1000] * 80))  # 320 bytes, non-silent


class Recorder:
    """An AudioReceiver that records what it gets."""

    def __init__(self) -> None:
        self.audio: list[tuple[bytes, int]] = []
        self.dtmf: list[str] = []
        self.hangups = 0
        self.changed = asyncio.Event()

    def on_audio(self, pcm: bytes, sample_rate: int) -> None:
        self.audio.append((pcm, sample_rate))
        self.changed.set()

    def on_dtmf(self, digit: str) -> None:
        self.dtmf.append(digit)
        self.changed.set()

    def on_hangup(self) -> None:
        self.hangups += 1
        self.changed.set()

    async def wait(self, cond: object) -> None:
        assert callable(cond)
        async with asyncio.timeout(T):
            while not cond():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def server() -> AsyncIterator[AudioSocketServer]:
    srv = AudioSocketServer(AudioSocketSettings(bind_port=0, uuid_timeout_s=0.3), pacer=Pacer())
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


async def connect(server: AudioSocketServer, u: uuid.UUID | None = None) -> FakeAsterisk:
    fake = FakeAsterisk(u or uuid.uuid4())
    await fake.connect("127.0.0.1", server.port)
    return fake


async def accepted(server: AudioSocketServer) -> tuple[FakeAsterisk, AudioSocketConnection]:
    u = uuid.uuid4()
    fut = server.expect(u)
    fake = await connect(server, u)
    async with asyncio.timeout(T):
        conn = await fut
    return fake, conn


async def test_frames_pass_both_ways(server: AudioSocketServer) -> None:
    fake, conn = await accepted(server)
    rec = Recorder()
    conn.set_receiver(rec)
    for _ in range(3):
        fake.play(TONE)
        fake.tick()
    fake.send_dtmf("7")
    await rec.wait(lambda: len(rec.audio) == 3 and rec.dtmf)
    assert rec.audio == [(TONE, 8000)] * 3
    assert rec.dtmf == ["7"]

    conn.send_audio(bytearray(TONE))
    conn.send_silence()
    conn.send_audio(bytearray(TONE))
    async with asyncio.timeout(T):
        await fake.wait_until(lambda f: f.audio_count == 3)
    assert [r.message for r in fake.received] == [
        fake.audio_frames[0].message,
        fake.audio_frames[1].message,
        fake.audio_frames[2].message,
    ]
    assert fake.bot_audio() == TONE * 2
    assert len(fake.silence_frames) == 1
    assert conn.uuid == fake.uuid
    sock = conn._transport.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    fake.hangup()


async def test_wideband_audio_reports_its_rate(server: AudioSocketServer) -> None:
    fake, conn = await accepted(server)
    rec = Recorder()
    conn.set_receiver(rec)
    fake.send_raw(encode_audio(bytes(640), Kind.SLIN16))
    await rec.wait(lambda: rec.audio)
    assert rec.audio == [(bytes(640), 16000)]
    fake.hangup()


async def test_eof_is_hangup_exactly_once(server: AudioSocketServer) -> None:
    fake, conn = await accepted(server)
    rec = Recorder()
    conn.set_receiver(rec)
    fake.hangup()
    async with asyncio.timeout(T):
        await conn.wait_closed()
    assert rec.hangups == 1
    assert conn.closed
    conn.hangup()  # already over: no second on_hangup, no error
    conn.send_silence()
    assert rec.hangups == 1
    assert conn.frames_dropped == 1


async def test_local_hangup_sends_0x00_then_closes(server: AudioSocketServer) -> None:
    fake, conn = await accepted(server)
    rec = Recorder()
    conn.set_receiver(rec)
    conn.send_silence()
    conn.hangup()
    async with asyncio.timeout(T):
        await fake.wait_closed()
        await conn.wait_closed()
    assert fake.hangup_received
    assert fake.audio_count == 1  # what was queued before the hangup still went out
    assert rec.hangups == 1


async def test_unknown_uuid_is_rejected(server: AudioSocketServer, caplog: pytest.LogCaptureFixture) -> None:
    expected = uuid.uuid4()
    fut = server.expect(expected)
    with caplog.at_level(logging.WARNING):
        fake = await connect(server)  # some other UUID
        async with asyncio.timeout(T):
            await fake.wait_closed()
    assert not fut.done()
    assert f"UUID {fake.uuid} was not expected" in caplog.text
    assert "127.0.0.1:" in caplog.text  # the peer is named


async def test_a_uuid_is_accepted_once(server: AudioSocketServer) -> None:
    fake, _conn = await accepted(server)
    again = await connect(server, fake.uuid)
    async with asyncio.timeout(T):
        await again.wait_closed()
    assert fake.connected
    fake.hangup()


async def test_no_uuid_within_timeout_is_closed(
    server: AudioSocketServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        async with asyncio.timeout(T):
            assert await reader.read() == b""  # the server closed on us
    writer.close()
    await writer.wait_closed()
    assert "no UUID within 0.3 s" in caplog.text


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        (encode_audio(bytes(320)), "not a UUID"),
        (b"\x42\x00\x00", "first message is Unknown, not a UUID"),
    ],
)
async def test_bad_first_message_is_rejected(
    server: AudioSocketServer, caplog: pytest.LogCaptureFixture, first: bytes, reason: str
) -> None:
    with caplog.at_level(logging.WARNING):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(first)
        async with asyncio.timeout(T):
            assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
    assert reason in caplog.text


async def test_protocol_error_after_uuid_delivers_good_audio_then_hangs_up(
    server: AudioSocketServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake, conn = await accepted(server)
    rec = Recorder()
    conn.set_receiver(rec)
    with caplog.at_level(logging.WARNING):
        fake.send_raw(encode_audio(TONE) + b"\x10\x00\x03abc")
        async with asyncio.timeout(T):
            await conn.wait_closed()
    assert rec.audio == [(TONE, 8000)]
    assert rec.hangups == 1
    assert "SLIN audio payload of 3 bytes" in caplog.text


async def test_messages_before_set_receiver_are_buffered_in_order(
    server: AudioSocketServer,
) -> None:
    # Expect, then connect: the connection and its first frames can beat whoever awaits the
    # future (the ARI POST may not even have returned yet).
    u = uuid.uuid4()
    fut = server.expect(u)
    fake = FakeAsterisk(u)
    await fake.connect("127.0.0.1", server.port)
    frames = [struct.pack("<160h", *([i] * 160)) for i in range(1, PENDING_LIMIT + 6)]
    fake.send_raw(b"".join(encode_audio(f) for f in frames))
    fake.send_dtmf("#")
    fake.hangup()
    async with asyncio.timeout(T):
        conn = await fut
        await conn.wait_closed()
    rec = Recorder()
    conn.set_receiver(rec)
    # Bounded: the oldest were dropped and counted; the newest and the digit survive, then hangup.
    assert conn.dropped_before_receiver == len(frames) + 1 - PENDING_LIMIT
    assert [pcm for pcm, _ in rec.audio] == frames[-(PENDING_LIMIT - 1) :]
    assert rec.dtmf == ["#"]
    assert rec.hangups == 1


async def test_forget_cancels_and_rejects(server: AudioSocketServer) -> None:
    u = uuid.uuid4()
    fut = server.expect(u)
    with pytest.raises(ValueError, match="already expected"):
        server.expect(u)
    server.forget(u)
    assert fut.cancelled()
    fake = await connect(server, u)
    async with asyncio.timeout(T):
        await fake.wait_closed()


async def test_close_drops_every_connection() -> None:
    srv = AudioSocketServer(AudioSocketSettings(bind_port=0), pacer=Pacer())
    await srv.start()
    assert srv.pacer.running
    fake, conn = await accepted(srv)
    rec = Recorder()
    conn.set_receiver(rec)
    pending = srv.expect(uuid.uuid4())
    waiting = await connect(srv, uuid.uuid4())  # not yet identified as expected or not
    await srv.close()
    async with asyncio.timeout(T):
        await fake.wait_closed()
        await waiting.wait_closed()
    assert rec.hangups == 1
    assert pending.cancelled()
    assert not srv.pacer.running
    await srv.close()  # idempotent


async def test_a_stalled_peer_drops_frames_instead_of_buffering(
    server: AudioSocketServer,
) -> None:
    # Raw client that never reads: the kernel buffers fill, then the transport pauses writing.
    u = uuid.uuid4()
    fut = server.expect(u)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(encode_uuid(u))
    async with asyncio.timeout(T):
        conn = await fut
    for _ in range(20000):  # ~6 MB: far more than socket buffers plus the transport high water
        conn.send_audio(bytearray(TONE))
    assert conn.frames_dropped > 0
    writer.close()
    await writer.wait_closed()


class WriteLog(asyncio.Transport):
    """Records each transport.write call (to check message framing per write)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(data)  # type: ignore[arg-type]

    def close(self) -> None:
        pass


async def test_each_frame_is_one_whole_message_in_one_write() -> None:
    transport = WriteLog()
    conn = AudioSocketConnection(uuid.uuid4(), transport, "test")
    frame = bytearray(TONE)
    conn.send_audio(frame)
    frame[:2] = b"\x00\x00"  # the playout reuses nothing, but the sink must not depend on it
    conn.send_silence()
    conn.send_silence()
    assert [len(w) for w in transport.writes] == [323, 323, 323]
    assert transport.writes[0] == encode_audio(TONE)
    assert transport.writes[1] is transport.writes[2]  # preframed constant: no allocation
    conn.hangup()
    assert transport.writes[-1] == b"\x00\x00\x00"


def test_frames_pass_both_ways_and_eof_hangs_up_on_uvloop() -> None:
    """`[service] event_loop = "uvloop"`: the server on libuv's transports (not asyncio.Transport
    subclasses) accepts, frames, sets its socket options and sees the caller's EOF."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        srv = AudioSocketServer(AudioSocketSettings(bind_port=0), pacer=Pacer())
        await srv.start()
        try:
            fake, conn = await accepted(srv)
            rec = Recorder()
            conn.set_receiver(rec)
            fake.play(TONE)
            fake.tick()
            await rec.wait(lambda: rec.audio == [(TONE, 8000)])
            conn.send_audio(bytearray(TONE))
            conn.send_silence()
            async with asyncio.timeout(T):
                await fake.wait_until(lambda f: f.audio_count == 2)
            assert fake.bot_audio() == TONE
            sock = conn._transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            fake.hangup()
            await rec.wait(lambda: rec.hangups == 1)
        finally:
            await srv.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
