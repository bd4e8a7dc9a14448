"""The AudioSocket server under hostile or broken peers, on real sockets (issue 10, failures 2, 7-9).

Protocol faults: unknown kinds skipped, lower-case DTMF accepted, a malformed message ends the leg
as a protocol error. Limits: connection caps, accept rate, inbound rate cap, media watchdog,
keepalive. Logs: bounded per byte a peer sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import uuid
from collections.abc import AsyncIterator

import pytest

from bridge.audiosocket.protocol import encode_audio, encode_uuid
from bridge.audiosocket.server import SWEEP_S, AudioSocketServer, AudioSocketSettings, LegEnd
from bridge.gateway import TelephonyGateway
from bridge.logs import TRACE_ID
from bridge.pacer import Pacer
from orchestrator.clock import LoopClock
from tests.test_audiosocket_server import TONE, Recorder, accepted

T = 5.0


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[AudioSocketServer]:
    overrides = {"bind_port": 0, "uuid_timeout_s": 1.0, **getattr(request, "param", {})}
    srv = AudioSocketServer(AudioSocketSettings(**overrides), pacer=Pacer())
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


def _frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BH", kind, len(payload)) + payload


# --- protocol faults (failure 7) ---


async def test_a_well_framed_unknown_kind_is_skipped_and_the_call_goes_on(
    server: AudioSocketServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake, conn = await accepted(server)
    rec = Recorder()
    conn.set_receiver(rec)
    with caplog.at_level(logging.WARNING):
        # Two kinds Asterisk might add one day, one with a payload, then ordinary audio.
        fake.send_raw(_frame(0x04, b"") + _frame(0x20, bytes(1000)) + encode_audio(TONE))
        await rec.wait(lambda: rec.audio)
    assert rec.audio == [(TONE, 8000)]
    assert not conn.closed and rec.hangups == 0
    assert conn.unknown_skipped == 2
    assert caplog.text.count("unknown kind") == 1  # rate-limited: one line for the two


async def test_lower_case_dtmf_reaches_the_call_as_upper_case(server: AudioSocketServer) -> None:
    fake, conn = await accepted(server)
    rec = Recorder()
    conn.set_receiver(rec)
    fake.send_raw(b"".join(_frame(0x03, c.encode()) for c in "abcd5#"))
    await rec.wait(lambda: len(rec.dtmf) == 6)
    assert rec.dtmf == ["A", "B", "C", "D", "5", "#"]
    assert not conn.closed


async def test_a_malformed_message_ends_the_leg_as_a_protocol_error_not_a_hangup(
    server: AudioSocketServer,
) -> None:
    fake, conn = await accepted(server)
    gateway = TelephonyGateway(conn, server.pacer, clock=LoopClock())
    fake.send_raw(_frame(0x10, b"abc"))  # odd-length audio: every later sample would be shifted
    async with asyncio.timeout(T):
        await gateway.wait_hangup()
    assert conn.end_cause is LegEnd.PROTOCOL_ERROR
    assert gateway.hangup_reason == "protocol_error"
    await gateway.close()


async def test_eof_is_still_the_caller_hanging_up(server: AudioSocketServer) -> None:
    fake, conn = await accepted(server)
    gateway = TelephonyGateway(conn, server.pacer, clock=LoopClock())
    fake.hangup()
    async with asyncio.timeout(T):
        await gateway.wait_hangup()
    assert gateway.hangup_reason == "caller_hangup"
    await gateway.close()


# --- media watchdog and keepalive (failure 9) ---


@pytest.mark.parametrize("server", [{"media_timeout_s": 0.5}], indirect=True)
async def test_a_leg_silent_after_its_uuid_is_ended_by_the_media_timeout(
    server: AudioSocketServer, caplog: pytest.LogCaptureFixture
) -> None:
    live_fake, live = await accepted(server)
    silent_fake, silent = await accepted(server)
    silent_gateway = TelephonyGateway(silent, server.pacer, clock=LoopClock())
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def talk() -> None:  # the live leg sends a frame every 20 ms, as Asterisk does
        while True:
            live_fake.send_raw(encode_audio(TONE))
            await asyncio.sleep(0.02)

    talker = asyncio.create_task(talk(), name="test-live-leg")
    try:
        with caplog.at_level(logging.WARNING):
            async with asyncio.timeout(T):
                await silent_gateway.wait_hangup()
        ended_after = loop.time() - started
    finally:
        talker.cancel()
    print(f"MEDIATIMEOUT ended after {ended_after:.3f} s")
    assert silent.end_cause is LegEnd.MEDIA_TIMEOUT
    assert silent_gateway.hangup_reason == "media_timeout"
    assert ended_after >= 0.5  # not before the timeout (an upper bound is the test's timeout)
    assert not live.closed  # the leg that kept sending lives on
    assert server.media_timeouts == 1
    assert "nothing received" in caplog.text
    await silent_gateway.close()


async def test_accepted_sockets_have_tcp_keepalive(server: AudioSocketServer) -> None:
    await accepted(server)
    (proto,) = server._protocols
    assert proto._transport is not None
    sock = proto._transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == server.settings.keepalive_idle_s
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == server.settings.keepalive_count


# --- inbound rate cap (failure 9) ---


@pytest.mark.parametrize("server", [{"max_inbound_bytes_per_s": 16_000}], indirect=True)
async def test_a_sender_far_faster_than_real_time_is_capped(server: AudioSocketServer) -> None:
    u = uuid.uuid4()
    fut = server.expect(u)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(encode_uuid(u))
    conn = await asyncio.wait_for(fut, T)
    rec = Recorder()
    conn.set_receiver(rec)
    chunk = encode_audio(bytes(320)) * 800  # 16 s of audio per write, 258 KB
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0
    # Send as fast as the socket takes it until the server has been throttling for a while.
    async with asyncio.timeout(30):
        while server.throttled < 8:
            writer.write(chunk)
            sent += len(chunk)
            try:
                async with asyncio.timeout(SWEEP_S):
                    await writer.drain()
            except TimeoutError:
                pass  # the server stopped reading: TCP pushes back, as it should
    elapsed = loop.time() - started
    delivered = sum(len(pcm) for pcm, _ in rec.audio)
    # At most one second's burst plus the cap per second reaches the call, whatever the machine's
    # speed (a slower machine only has fewer seconds' worth); the rest was dropped or never read.
    print(f"RATECAP delivered {delivered} of {sent} bytes sent in {elapsed:.2f} s")
    assert delivered <= 16_000 * (1 + elapsed + SWEEP_S)
    assert server.inbound_dropped_bytes > 0
    assert not conn.closed  # capped, not cut off: a burst from Asterisk only waits
    writer.close()


class _TraceRecorder(Recorder):
    """Records the log's trace id each audio callback runs under, once reading was throttled."""

    def __init__(self, server: AudioSocketServer) -> None:
        super().__init__()
        self._server = server
        self.traces: set[str | None] = set()

    def on_audio(self, pcm: bytes, sample_rate: int) -> None:
        if self._server.throttled:
            self.traces.add(TRACE_ID.get())
        super().on_audio(pcm, sample_rate)


@pytest.mark.parametrize("server", [{"max_inbound_bytes_per_s": 16_000}], indirect=True)
async def test_reads_resumed_after_throttling_keep_the_call_trace_id(server: AudioSocketServer) -> None:
    u = uuid.uuid4()
    fut = server.expect(u)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(encode_uuid(u))
    conn = await asyncio.wait_for(fut, T)
    rec = _TraceRecorder(server)
    conn.set_receiver(rec)
    chunk = encode_audio(bytes(320)) * 800
    async with asyncio.timeout(30):
        while server.throttled < 3:  # paused, resumed (in the sweep) and read again, twice
            writer.write(chunk)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SWEEP_S):
                    await writer.drain()
    writer.close()
    assert rec.traces == {str(u)}


# --- admission (failure 2) ---


async def _closed_at_once(port: int) -> bool:
    """Connect; True if the server closes (or resets) the connection without a word."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(T):
            return await reader.read() == b""
    except ConnectionResetError:
        return True
    finally:
        writer.close()


@pytest.mark.parametrize("server", [{"max_connections": 3, "uuid_timeout_s": 30}], indirect=True)
async def test_connections_over_the_total_cap_are_refused_and_live_calls_go_on(
    server: AudioSocketServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake, conn = await accepted(server)
    rec = Recorder()
    conn.set_receiver(rec)
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
    with caplog.at_level(logging.WARNING):
        assert all([await _closed_at_once(server.port) for _ in range(5)])
    assert server.refused["total"] == 5
    assert caplog.text.count("refused (") == 1  # one rate-limited warning for five refusals
    fake.send_raw(encode_audio(TONE))
    await rec.wait(lambda: rec.audio)  # the live call still gets its audio through
    for _, w in idle:
        w.close()


@pytest.mark.parametrize("server", [{"max_connections_per_peer": 2, "uuid_timeout_s": 30}], indirect=True)
async def test_connections_over_the_per_peer_cap_are_refused(server: AudioSocketServer) -> None:
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
    assert await _closed_at_once(server.port)
    assert server.refused["peer"] == 1
    for _, w in idle:
        w.close()


async def _verdict(reader: asyncio.StreamReader) -> str:
    """ "closed" if the server closed the connection within a short wait, else "open"."""
    try:
        async with asyncio.timeout(0.5):
            await reader.read()
        return "closed"
    except ConnectionResetError:
        return "closed"
    except TimeoutError:
        return "open"


@pytest.mark.parametrize("server", [{"max_accepts_per_s": 3, "uuid_timeout_s": 30}], indirect=True)
async def test_a_burst_of_connections_over_the_accept_rate_is_refused(server: AudioSocketServer) -> None:
    conns = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(10)]
    # Refused ones are closed at accept: wait for each connection's verdict (EOF or nothing).
    verdicts = await asyncio.gather(*(_verdict(r) for r, _ in conns))
    assert verdicts.count("closed") == server.refused["rate"]
    # A burst of one second's worth is allowed; the rest (the clock moves a little) is refused.
    assert server.refused["rate"] >= 5
    assert server.connections <= 5
    for _, w in conns:
        w.close()


# --- log amplification (failure 8) ---


async def test_log_bytes_per_byte_a_peer_sends_are_bounded(server: AudioSocketServer) -> None:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect(logging.DEBUG)
    logger = logging.getLogger("bridge")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    sent = 0
    try:
        big = bytes(0xFFFF)
        attacks = [
            _frame(0x03, b"7" * 0xFFFF),  # a 64 KiB "DTMF digit" as the first message
            _frame(0x01, big),  # a 64 KiB "UUID"
            _frame(0x42, big) * 3,  # unknown kinds before any UUID
            b"garbage that is not a header" * 1000,
        ]
        for _ in range(5):
            for payload in attacks:
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(payload)
                sent += len(payload)
                try:
                    async with asyncio.timeout(T):
                        await reader.read()
                except ConnectionResetError:
                    pass
                writer.close()
        # And on a live call: malformed DTMF with a large payload.
        fake, conn = await accepted(server)
        payload = _frame(0x03, b"x" * 0xFFFF)
        fake.send_raw(payload)
        sent += len(payload)
        async with asyncio.timeout(T):
            await conn.wait_closed()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    logged = sum(len(line) + 1 for line in lines)
    assert lines, "the faults were not logged at all"
    assert max(len(line) for line in lines) < 400
    print(f"LOGVOL {logged} log bytes for {sent} bytes sent")
    assert logged / sent < 0.01, f"{logged} log bytes for {sent} bytes sent"
