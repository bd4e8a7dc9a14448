"""TelephonyGateway end to end: real AudioSocket server, FakeAsterisk callers on real sockets."""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.audiosocket.protocol import Kind, encode_audio
from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.gateway import TelephonyGateway
from bridge.pacer import Pacer
from bridge.playout import PlayoutClosed
from orchestrator.audio import FRAME_BYTES
from orchestrator.clock import LoopClock
from orchestrator.contracts import InboundAudio
from orchestrator.domain.models import AudioChunk
from testkit.fake_asterisk import FakeAsterisk, FakeCallerPool
from tests.test_vad import click, make_russian_speech, silence

T = 10.0  # upper bound for any single wait, never expected to be reached


class Listener:
    """A VoiceListener that records signals with the number of frames seen by then."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object, float]] = []
        self.changed = asyncio.Event()
        self.gateway: TelephonyGateway | None = None

    def _add(self, kind: str, value: object, at: float) -> None:
        self.events.append((kind, value, at))
        self.changed.set()

    def on_speech_start(self, at: float) -> None:
        assert self.gateway is not None
        self._add("start", self.gateway.frames_in, at)

    def on_speech_end(self, at: float) -> None:
        self._add("end", None, at)

    def on_dtmf(self, digit: str, at: float) -> None:
        self._add("dtmf", digit, at)

    async def wait_for(self, kind: str) -> None:
        async with asyncio.timeout(T):
            while not any(e[0] == kind for e in self.events):
                self.changed.clear()
                await self.changed.wait()


class Call:
    def __init__(self, caller: FakeAsterisk, gateway: TelephonyGateway) -> None:
        self.caller = caller
        self.gateway = gateway


Env = tuple[AudioSocketServer, FakeCallerPool]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    pacer = Pacer()
    server = AudioSocketServer(AudioSocketSettings(bind_port=0), pacer=pacer)
    await server.start()
    # Callers send at 4x real time to keep the tests short: nothing on the inbound side depends
    # on the pace (the VAD counts frames), and outbound pacing is the server's own pacer.
    pool = FakeCallerPool("127.0.0.1", server.port, pacer=Pacer(frame_s=0.005))
    try:
        yield server, pool
    finally:
        await pool.close()
        await server.close()


async def open_call(env: Env, *, audio: bytes = b"", inbound_queue_frames: int = 100) -> Call:
    server, pool = env
    u = uuid.uuid4()
    fut = server.expect(u)
    caller = await pool.connect(u, audio=audio)
    async with asyncio.timeout(T):
        conn = await fut
    gateway = TelephonyGateway(
        conn, server.pacer, clock=LoopClock(), inbound_queue_frames=inbound_queue_frames
    )
    return Call(caller, gateway)


def ramp_frames(n: int) -> list[bytes]:
    """n distinct, non-silent 20 ms frames (frame i holds sample value i + 1)."""
    return [struct.pack("<160h", *([i + 1] * 160)) for i in range(n)]


async def test_bot_audio_arrives_paced_after_leading_silence(env: Env) -> None:
    call = await open_call(env)
    caller, gw = call.caller, call.gateway
    # Paced silence starts as soon as the gateway exists (before the bot has anything to say).
    async with asyncio.timeout(T):
        await caller.wait_until(lambda c: c.audio_count >= 3)
    assert caller.voice_count == 0
    greeting = ramp_frames(50)  # 1 s
    await gw.outbound.write(AudioChunk(b"".join(greeting)))
    async with asyncio.timeout(T):
        await gw.outbound.drain()
        await caller.wait_until(lambda c: c.voice_count >= 50)
    bot = caller.bot_audio_frames
    assert [r.message.pcm for r in bot] == greeting  # type: ignore[union-attr]  # all, in order
    times = [r.at for r in bot]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    mean = sum(gaps) / len(gaps)
    # Never faster than real time (catch-up after a stall is bounded to 3 frames at once).
    assert times[-1] - times[0] >= 49 * 0.02 - 3 * 0.02
    assert mean >= 0.018
    assert gw.outbound.frames_sent == 50
    # After the greeting, back to silence: the line never goes quiet.
    n = caller.audio_count
    async with asyncio.timeout(T):
        await caller.wait_until(lambda c: c.audio_count >= n + 3)
    assert caller.voice_count == 50
    await gw.close()


async def test_outbound_16k_audio_is_resampled_to_8k_frames(env: Env) -> None:
    call = await open_call(env)
    tone16 = struct.pack("<320h", *([3000, -3000] * 160)) * 10  # 200 ms at 16 kHz
    await call.gateway.outbound.write(AudioChunk(tone16, sample_rate=16000))
    async with asyncio.timeout(T):
        await call.gateway.outbound.drain()
        await call.caller.wait_until(lambda c: c.voice_count >= 10)
    assert all(len(r.message.pcm) == FRAME_BYTES for r in call.caller.audio_frames)  # type: ignore[union-attr]
    await call.gateway.close()


async def test_speech_barges_in_but_clicks_do_not(env: Env, tmp_path: Path) -> None:
    speech = make_russian_speech(tmp_path)
    lead = silence(200) + (click() + silence(60)) * 3 + silence(600)
    call = await open_call(env, audio=lead + speech + silence(600))
    listener = Listener()
    listener.gateway = call.gateway
    call.gateway.set_voice_listener(listener)
    await listener.wait_for("start")
    await listener.wait_for("end")
    starts = [e for e in listener.events if e[0] == "start"]
    assert len(starts) == 1
    frames_at_start = starts[0][1]
    assert isinstance(frames_at_start, int)
    # The start was confirmed inside the speech (>= 200 ms into it), not on the clicks.
    assert frames_at_start >= len(lead) // FRAME_BYTES + 10
    assert call.gateway.speech_starts == 1
    assert call.gateway.speech_ends == 1
    await call.gateway.close()


async def test_dtmf_reaches_the_listener(env: Env) -> None:
    call = await open_call(env)
    listener = Listener()
    call.gateway.set_voice_listener(listener)
    call.caller.send_dtmf("5")
    call.caller.send_dtmf("#")
    async with asyncio.timeout(T):
        while len(listener.events) < 2:
            listener.changed.clear()
            await listener.changed.wait()
    assert [e[1] for e in listener.events] == ["5", "#"]
    await call.gateway.close()


async def test_inbound_frames_reach_read_frame_and_wideband_is_converted(env: Env) -> None:
    call = await open_call(env)
    pool = env[1]
    pool.pacer.remove(call.caller)  # send by hand, not paced
    frames = ramp_frames(3)
    call.caller.send_raw(b"".join(encode_audio(f) for f in frames))
    async with asyncio.timeout(T):
        got = [await call.gateway.read_frame() for _ in range(3)]
    assert got == frames
    # 16 kHz in: 8 kHz, 20 ms frames out (the resampler keeps state across messages).
    call.caller.send_raw(encode_audio(bytes(640), Kind.SLIN16) * 10)
    async with asyncio.timeout(T):
        for _ in range(9):
            frame = await call.gateway.read_frame()
            assert frame is not None
            assert len(frame) == FRAME_BYTES
    await call.gateway.close()


async def test_queue_full_drops_the_oldest_frames(env: Env) -> None:
    call = await open_call(env, inbound_queue_frames=5)
    env[1].pacer.remove(call.caller)
    frames = ramp_frames(20)
    gw = call.gateway
    listener = Listener()
    gw.set_voice_listener(listener)
    call.caller.send_raw(b"".join(encode_audio(f) for f in frames))
    call.caller.send_dtmf("1")  # arrives after every frame: a marker that all are in
    await listener.wait_for("dtmf")
    assert gw.frames_in == 20
    assert gw.frames_dropped == 15
    got = [await gw.read_frame() for _ in range(5)]
    assert got == frames[-5:]
    assert gw.stats()["frames_dropped"] == 15
    await gw.close()


async def test_caller_hangup_ends_reads_and_playout(env: Env) -> None:
    server, pool = env
    call = await open_call(env)
    gw = call.gateway
    assert len(server.pacer) == 1  # the gateway's playout (the callers have their own pacer)
    reader = asyncio.create_task(gw.read_frame(), name="reader")
    await asyncio.sleep(0)
    pool.hangup(call.caller)  # EOF, as Asterisk does
    async with asyncio.timeout(T):
        assert await reader is None
    assert gw.hung_up
    assert await gw.read_frame() is None
    with pytest.raises(PlayoutClosed):
        await gw.outbound.write(AudioChunk(bytes(320)))
    assert len(server.pacer) == 0
    await gw.close()
    await gw.close()  # idempotent


async def test_close_hangs_up_the_audiosocket_leg(env: Env) -> None:
    server, _pool = env
    call = await open_call(env)
    await call.gateway.close()
    async with asyncio.timeout(T):
        await call.caller.wait_closed()
    assert call.caller.hangup_received
    assert await call.gateway.read_frame() is None
    assert len(server.pacer) == 0


class Raising:
    def on_speech_start(self, at: float) -> None:
        raise RuntimeError("listener bug")

    def on_speech_end(self, at: float) -> None:
        raise RuntimeError("listener bug")

    def on_dtmf(self, digit: str, at: float) -> None:
        raise RuntimeError("listener bug")


async def test_a_broken_listener_does_not_kill_the_call(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    call = await open_call(env)
    gw = call.gateway
    inbound: InboundAudio = gw  # the Orchestrator's view: checked by mypy
    gw.set_voice_listener(Raising())
    env[1].pacer.remove(call.caller)
    call.caller.send_dtmf("3")
    call.caller.send_raw(encode_audio(ramp_frames(1)[0]))
    async with asyncio.timeout(T):
        assert await inbound.read_frame() == ramp_frames(1)[0]
    assert "voice listener failed on DTMF '3'" in caplog.text
    assert not gw.hung_up
    await gw.close()
