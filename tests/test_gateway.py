"""TelephonyGateway end to end: real AudioSocket server, FakeAsterisk callers on real sockets."""

from __future__ import annotations

import asyncio
import gc
import struct
import uuid
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.audiosocket.connection import AudioSocketConnection
from bridge.audiosocket.protocol import Kind, encode_audio
from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.gateway import TelephonyGateway
from bridge.pacer import Pacer
from bridge.playout import PlayoutClosed
from orchestrator.adapters.speechkit import YandexSettings, speechkit_channel
from orchestrator.adapters.stt.yandex import YandexSttStreamer
from orchestrator.audio import FRAME_BYTES, Resampler
from orchestrator.clock import LoopClock
from orchestrator.contracts import InboundAudio
from orchestrator.domain.models import AudioChunk
from testkit.fake_asterisk import FakeAsterisk, FakeCallerPool
from testkit.standins.speechkit_server import SpeechKitStandin
from tests.test_stt_yandex import SlotHolder
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

    def on_speech_onset(self, at: float) -> None:
        self._add("onset", None, at)

    def on_speech_rejected(self, at: float) -> None:
        self._add("rejected", None, at)

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


class Sink:
    """An AudioSink that records the frames, and the VAD's speech starts seen by each frame."""

    def __init__(self, gateway: TelephonyGateway | None = None) -> None:
        self.frames: list[bytes] = []
        self.starts_seen: list[int] = []
        self.gateway = gateway
        self._want = 0
        self._enough = asyncio.Event()

    def push_audio(self, frame: bytes) -> None:
        self.frames.append(frame)
        if self.gateway is not None:
            self.starts_seen.append(self.gateway.speech_starts)
        if len(self.frames) >= self._want:
            self._enough.set()

    async def wait_frames(self, n: int) -> None:
        self._want = n
        if len(self.frames) < n:
            self._enough.clear()
            async with asyncio.timeout(T):
                await self._enough.wait()


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


async def open_call(env: Env, *, audio: bytes = b"") -> Call:
    server, pool = env
    u = uuid.uuid4()
    fut = server.expect(u)
    caller = await pool.connect(u, audio=audio)
    async with asyncio.timeout(T):
        conn = await fut
    gateway = TelephonyGateway(conn, server.pacer, clock=LoopClock())
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
    sink = Sink(call.gateway)
    call.gateway.attach(listener, sink)
    await listener.wait_for("start")
    await listener.wait_for("end")
    starts = [e for e in listener.events if e[0] == "start"]
    assert len(starts) == 1
    frames_at_start = starts[0][1]
    assert isinstance(frames_at_start, int)
    # The start was confirmed inside the speech (>= 200 ms into it), not on the clicks.
    assert frames_at_start >= len(lead) // FRAME_BYTES + 10
    # Each frame reached the recognizer before the VAD saw it: the frame that confirmed the
    # speech was pushed while no start had been reported yet.
    assert sink.starts_seen[frames_at_start - 1] == 0 and sink.starts_seen[frames_at_start] == 1
    assert call.gateway.speech_starts == 1
    assert call.gateway.speech_ends == 1
    await call.gateway.close()


async def test_dtmf_reaches_the_listener(env: Env) -> None:
    call = await open_call(env)
    listener = Listener()
    call.gateway.attach(listener, None)
    call.caller.send_dtmf("5")
    call.caller.send_dtmf("#")
    async with asyncio.timeout(T):
        while len(listener.events) < 2:
            listener.changed.clear()
            await listener.changed.wait()
    assert [e[1] for e in listener.events] == ["5", "#"]
    await call.gateway.close()


async def test_inbound_frames_reach_the_sink_and_wideband_is_converted(env: Env) -> None:
    call = await open_call(env)
    pool = env[1]
    pool.pacer.remove(call.caller)  # send by hand, not paced
    sink = Sink()
    inbound: InboundAudio = call.gateway  # the Orchestrator's view: checked by mypy
    inbound.attach(None, sink)
    frames = ramp_frames(3)
    call.caller.send_raw(b"".join(encode_audio(f) for f in frames))
    await sink.wait_frames(3)
    assert sink.frames == frames
    # 16 kHz in: 8 kHz, 20 ms frames out (the resampler keeps state across messages).
    call.caller.send_raw(encode_audio(bytes(640), Kind.SLIN16) * 10)
    # The filter holds back its last few ms (and works in blocks): what one stream makes of it.
    reference = Resampler()
    wide = len(b"".join(reference.convert(bytes(640), 16000) for _ in range(10))) // FRAME_BYTES
    assert wide >= 4
    await sink.wait_frames(3 + wide)
    assert all(len(f) == FRAME_BYTES for f in sink.frames)
    # Detached: frames are counted, delivered nowhere.
    inbound.attach(None, None)
    call.caller.send_raw(encode_audio(ramp_frames(1)[0]))
    call.caller.send_dtmf("1")  # arrives after the frame: a marker that it is in
    listener = Listener()
    call.gateway.attach(listener, None)
    await listener.wait_for("dtmf")
    assert len(sink.frames) == 3 + wide and call.gateway.frames_in == 3 + wide + 1
    assert "frames_dropped" not in call.gateway.stats()  # the recognizer's counter is the one
    assert call.gateway.stats()["vad_dropped"] == 0  # every frame judged (the VAD's batch queue)
    await call.gateway.close()


async def test_a_stalled_recognizer_drops_exactly_the_overflow_socket_to_grpc(env: Env) -> None:
    # The whole inbound path: FakeAsterisk -> AudioSocket -> gateway -> the recognizer's one
    # buffer -> gRPC to the SpeechKit stand-in, whose only stream slot is taken (a stalled
    # service). Frames beyond the buffer are dropped there and nowhere else, each counted once.
    speechkit = SpeechKitStandin(max_concurrent_streams=1, idle_timeout_s=30.0)
    await speechkit.start()
    channel = speechkit_channel(speechkit.endpoint, tls=False)
    holder = SlotHolder(channel)
    settings = YandexSettings(tls=False, max_buffered_s=0.2, keepalive_s=5.0)  # 10 frames
    try:
        await holder.running()
        recognizer = YandexSttStreamer(channel, settings, clock=LoopClock()).open_stream()
        call = await open_call(env)
        env[1].pacer.remove(call.caller)
        gw = call.gateway
        listener = Listener()
        gw.attach(listener, recognizer)
        frames = ramp_frames(40)
        call.caller.send_raw(b"".join(encode_audio(f) for f in frames))
        call.caller.send_dtmf("1")  # arrives after every frame: a marker that all are in
        await listener.wait_for("dtmf")
        assert gw.frames_in == 40
        assert recognizer.frames_dropped == 40 - 10
        assert recognizer.audio_bytes_sent == 0  # the service took nothing
        holder.release()  # the service frees up: the newest 10 frames go, then the end
        recognizer.end_input()
        async with asyncio.timeout(T):
            assert [e async for e in recognizer] == []
        assert speechkit.stt_sessions[1].audio_bytes == 10 * FRAME_BYTES == recognizer.audio_bytes_sent
        assert recognizer.frames_dropped == 30
        await recognizer.aclose()
        await gw.close()
    finally:
        holder.release()
        holder.call.cancel()
        await channel.close()
        await speechkit.close()


async def test_caller_hangup_ends_delivery_and_playout(env: Env) -> None:
    server, pool = env
    call = await open_call(env)
    gw = call.gateway
    sink, listener = Sink(), Listener()
    gw.attach(listener, sink)
    assert len(server.pacer) == 1  # the gateway's playout (the callers have their own pacer)
    waiter = asyncio.create_task(gw.wait_hangup(), name="hangup-waiter")
    pool.hangup(call.caller)  # EOF, as Asterisk does
    async with asyncio.timeout(T):
        await waiter
    assert gw.hung_up
    async with asyncio.timeout(T):
        await gw.wait_hangup()  # at once now
    # Nothing is delivered after the hang-up (the callbacks may still be called by the socket).
    n = len(sink.frames)
    gw.on_audio(ramp_frames(1)[0], 8000)
    gw.on_dtmf("7")
    gw.attach(listener, sink)  # ignored: nothing is kept
    gw.on_audio(ramp_frames(1)[0], 8000)
    assert len(sink.frames) == n and not any(e[0] == "dtmf" for e in listener.events)
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
        await call.gateway.wait_hangup()
    assert call.caller.hangup_received
    assert call.gateway.hung_up
    assert len(server.pacer) == 0


class Raising:
    def on_speech_onset(self, at: float) -> None:
        raise RuntimeError("listener bug")

    def on_speech_rejected(self, at: float) -> None:
        raise RuntimeError("listener bug")

    def on_speech_start(self, at: float) -> None:
        raise RuntimeError("listener bug")

    def on_speech_end(self, at: float) -> None:
        raise RuntimeError("listener bug")

    def on_dtmf(self, digit: str, at: float) -> None:
        raise RuntimeError("listener bug")


async def test_a_broken_listener_does_not_kill_the_call(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    call = await open_call(env)
    gw = call.gateway
    sink = Sink()
    gw.attach(Raising(), sink)
    env[1].pacer.remove(call.caller)
    call.caller.send_dtmf("3")
    call.caller.send_raw(encode_audio(ramp_frames(1)[0]))
    await sink.wait_frames(1)
    assert sink.frames == ramp_frames(1)
    assert "voice listener failed on DTMF '3'" in caplog.text
    assert not gw.hung_up
    await gw.close()


class RaisingSink:
    def __init__(self) -> None:
        self.calls = 0

    def push_audio(self, frame: bytes) -> None:
        self.calls += 1
        raise RuntimeError("sink bug")


async def test_a_broken_sink_is_detached_and_the_vad_goes_on(
    env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    speech = make_russian_speech(tmp_path)
    call = await open_call(env, audio=silence(200) + speech + silence(600))
    gw = call.gateway
    sink, listener = RaisingSink(), Listener()
    listener.gateway = gw
    gw.attach(listener, sink)
    await listener.wait_for("start")  # barge-in still works without a recognizer
    assert sink.calls == 1 and caplog.text.count("audio sink failed") == 1
    assert not gw.hung_up
    await gw.close()


async def test_a_finished_calls_gateway_is_freed_by_refcount_not_the_collector(env: Env) -> None:
    # Each call's gateway holds its VAD (a Silero model is ~10 MB of RSS); anything that still
    # points at it after the leg ended, in a cycle or from the server, keeps that memory until a
    # full collection (rare by design: bridge/gc_policy.py) or forever. With the collector off,
    # only reference counting can free it: the gateway must be gone once the caller hung up and
    # the TCP connection closed, the local names dropped.
    server, pool = env
    gc.collect()
    gc.disable()
    try:
        call = await open_call(env)
        gw = call.gateway
        sink, listener = Sink(), Listener()
        gw.attach(listener, sink)
        call.caller.play(b"".join(ramp_frames(5)))
        await sink.wait_frames(5)
        pool.hangup(call.caller)
        async with asyncio.timeout(T):
            await gw.wait_hangup()
            await call.caller.wait_closed()
            while server.connections:  # noqa: ASYNC110 - connection_lost comes a loop turn after EOF
                await asyncio.sleep(0)
        gone = weakref.ref(gw)
        del gw, call, sink, listener
        await asyncio.sleep(0)
        assert gone() is None, [type(r).__name__ for r in gc.get_referrers(gone()) if r is not None]
    finally:
        gc.enable()


class _Quiet(asyncio.Transport):
    """Takes the playout's writes and drops them."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        return None

    def close(self) -> None:
        return None


async def test_inbound_audio_in_any_split_reaches_the_sink_as_whole_frames_in_order() -> None:
    conn = AudioSocketConnection(uuid.uuid4(), _Quiet(), "test")
    gw = TelephonyGateway(conn, Pacer(), clock=LoopClock())
    sink = Sink()
    gw.attach(None, sink)
    audio = b"".join(ramp_frames(7))
    pos = 0
    for size in (100, 500, 40, 320, 2, 358, 320, 600):  # 2240 bytes: 7 frames
        gw.on_audio(audio[pos : pos + size], 8000)
        pos += size
    assert pos == len(audio)
    assert sink.frames == [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]
    assert gw.frames_in == 7
    gw.on_audio(audio[:100], 8000)
    gw.on_hangup()
    gw.on_audio(audio[100:320], 8000)  # after the hang-up: nothing, not even the held part
    assert len(sink.frames) == 7
