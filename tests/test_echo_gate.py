"""The echo gate: the bot's own voice returning on the line does not count as the caller.

Unit level on synthetic levels, the VAD with the gate on real espeak-ng speech, and the gateway
end to end on real sockets with a fake Asterisk whose line reflects the bot's audio.
"""

from __future__ import annotations

import asyncio
import audioop
import struct
import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest

from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.echo_gate import EchoGate, EchoSettings
from bridge.gateway import TelephonyGateway
from bridge.pacer import Pacer
from bridge.vad import VadEventKind, VoiceActivityDetector
from orchestrator.audio import FRAME_BYTES
from orchestrator.clock import LoopClock
from orchestrator.domain.models import AudioChunk
from testkit.fake_asterisk import FakeCallerPool
from tests.test_gateway import Listener
from tests.test_vad import make_russian_speech, silence

T = 15.0  # bound on any one wait


def tone(level: int) -> bytes:
    """A 20 ms frame whose RMS is about `level`."""
    return struct.pack("<160h", *([level, -level] * 80))


def test_delay_is_found_and_echo_is_masked_but_louder_speech_is_not() -> None:
    gate = EchoGate(EchoSettings())
    # The bot's levels vary frame to frame; the echo is the same envelope 3 frames late, -20 dB.
    levels = [(3000 if (i // 4) % 2 else 300) + 50 * (i % 7) for i in range(200)]
    masked = 0
    for i, out in enumerate(levels):
        gate.sent(tone(out))
        echo = levels[i - 3] // 10 if i >= 3 else 0
        masked += gate.is_echo(echo)
    assert gate.delay_frames == 3
    assert masked >= 190  # echo alone: masked (the first frames too, by the worst-case bound)
    # Speech at the bot's own level over the echo is the caller.
    gate.sent(tone(3000))
    assert not gate.is_echo(3000)


def test_no_bot_audio_no_masking_and_off_means_off() -> None:
    gate = EchoGate(EchoSettings())
    for _ in range(20):
        gate.sent_silence()
    assert not gate.is_echo(50)  # the bot is quiet: nothing can be its echo
    off = EchoGate(EchoSettings(enabled=False))
    off.sent(tone(10000))
    assert not off.is_echo(10)


def test_bad_echo_settings_are_named() -> None:
    with pytest.raises(ValueError, match="max_delay_ms"):
        EchoSettings(max_delay_ms=5)


@pytest.fixture(scope="module")
def greeting(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    text = "Здравствуйте! Вас приветствует клининговая компания. Я помогу рассчитать стоимость уборки."
    pcm = make_russian_speech(tmp_path_factory.mktemp("greeting"), text)
    return audioop.mul(pcm, 2, 10 ** (-18 / 20) * 32768 / max(1, audioop.rms(pcm, 2)))  # -18 dBFS


def _starts_on_echo(greeting: bytes, echo_db: float, settings: EchoSettings) -> int:
    """SPEECH_STARTs while the bot says `greeting` and its echo comes back `echo_db` down, 60 ms late."""
    gate = EchoGate(settings)
    vad = VoiceActivityDetector(echo=gate)
    frames = [greeting[i : i + FRAME_BYTES] for i in range(0, len(greeting), FRAME_BYTES)]
    gain = 10 ** (echo_db / 20)
    starts = 0
    for i, out in enumerate(frames):
        gate.sent(out)
        back = audioop.mul(frames[i - 3], 2, gain) if i >= 3 else bytes(FRAME_BYTES)
        back = audioop.ulaw2lin(audioop.lin2ulaw(back, 2), 2)
        event = vad.process(back, i * 0.02)
        starts += event is not None and event.kind is VadEventKind.SPEECH_START
    return starts


@pytest.mark.parametrize("echo_db", [-12.0, -18.0, -24.0])
def test_echo_of_the_greeting_does_not_start_speech(greeting: bytes, echo_db: float) -> None:
    assert _starts_on_echo(greeting, echo_db, EchoSettings()) == 0
    # The same echo without the gate is taken for the caller: the case this gate is for.
    assert _starts_on_echo(greeting, echo_db, EchoSettings(enabled=False)) >= 1


Env = tuple[AudioSocketServer, FakeCallerPool]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    pacer = Pacer()
    server = AudioSocketServer(AudioSocketSettings(bind_port=0), pacer=pacer)
    await server.start()
    pool = FakeCallerPool("127.0.0.1", server.port)  # real time: the echo keeps step with the bot
    try:
        yield server, pool
    finally:
        await pool.close()
        await server.close()


async def _greet_over_echo(env: Env, greeting: bytes, echo: EchoSettings, caller_audio: bytes = b"") -> int:
    """Play `greeting` to a caller whose line echoes it at -18 dB, 60 ms late; SPEECH_STARTs seen."""
    server, pool = env
    u = uuid.uuid4()
    fut = server.expect(u)
    caller = await pool.connect(u, audio=caller_audio, echo_db=-18.0, echo_delay_frames=3)
    async with asyncio.timeout(T):
        conn = await fut
    gateway = TelephonyGateway(conn, server.pacer, clock=LoopClock(), echo_settings=echo)
    listener = Listener()
    listener.gateway = gateway
    gateway.attach(listener, None)
    try:
        await gateway.outbound.write(AudioChunk(greeting[: 2 * 8000 * 3]))  # its first 3 s
        gateway.outbound.end_segment()
        async with asyncio.timeout(T):
            await gateway.outbound.drain()
            n = caller.frames_sent
            await caller.wait_until(lambda c: c.frames_sent >= n + 10)  # the echo's tail is back
        return gateway.speech_starts
    finally:
        await gateway.close()


async def test_gateway_does_not_take_the_bots_echo_for_the_caller(env: Env, greeting: bytes) -> None:
    assert await _greet_over_echo(env, greeting, EchoSettings()) == 0


async def test_gateway_without_the_gate_is_cut_off_by_its_echo(env: Env, greeting: bytes) -> None:
    assert await _greet_over_echo(env, greeting, EchoSettings(enabled=False)) >= 1


async def test_gateway_hears_the_caller_over_the_echo(
    env: Env, greeting: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    words = make_russian_speech(tmp_path_factory.mktemp("caller"), "подождите, пожалуйста, у меня вопрос")
    caller = silence(1000) + audioop.mul(words, 2, 10 ** (-20 / 20) * 32768 / max(1, audioop.rms(words, 2)))
    assert await _greet_over_echo(env, greeting, EchoSettings(), caller) >= 1


# --- echo subtraction (sample counts, no clock) ---


def _bot_audio(seconds: float, seed: int = 3) -> np.ndarray:
    """Speech-like bot audio: noise with a syllable-rate envelope, s16, about -20 dBFS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 8000) // 160 * 160
    env = 1.0 + 0.8 * np.sin(np.arange(n) * 2 * np.pi * 4 / 8000)
    return np.clip(rng.standard_normal(n) * 2500 * env, -32768, 32767).astype(np.int16)


def _echo_of(bot: np.ndarray, delay: int, gain: float) -> np.ndarray:
    out = np.zeros(len(bot))
    out[delay:] = bot[: len(bot) - delay] * gain
    return out


def _frames(x: np.ndarray) -> list[bytes]:
    pcm = np.clip(np.round(x), -32768, 32767).astype(np.int16).tobytes()
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


def test_the_residual_cancels_a_delayed_scaled_copy_of_what_was_sent() -> None:
    bot = _bot_audio(2.0)
    gate = EchoGate(EchoSettings(search_ms=300))
    sent, back = _frames(bot.astype(np.float64)), _frames(_echo_of(bot, 437, 0.25))
    first_residual = None
    for i, (out, inbound) in enumerate(zip(sent, back, strict=True)):
        gate.sent(out)
        res = gate.cancel(inbound)
        if res is inbound:
            assert first_residual is None  # raw audio only until the path is found
            continue
        first_residual = i if first_residual is None else first_residual
        assert audioop.rms(res, 2) <= 1  # frame-exact: nothing of the echo left
        assert gate.is_echo(audioop.rms(res, 2))
    # Found on the frame that completed 300 ms of the bot (15 frames), with one search.
    assert first_residual == 14
    assert gate.searches == 1
    assert gate.delay_samples == 437
    assert abs(gate.path_gain - 0.25) < 0.005
    assert gate.erle_db > 40


def test_a_quiet_window_with_one_loud_frame_of_echo_is_searched() -> None:
    # A quiet bot (about -45 dBFS) with one loud syllable frame per 300 ms window, echoed at
    # -32 dB: the window's mean is under a phone line's silence (-60 dBFS, RMS 33), its loudest
    # frame is not (RMS 111: it passes the VAD's energy gate, 100), so the delay search runs and
    # finds the path (review: a test on the window's mean skipped it, leaving that echo to the
    # level gate alone).
    bot = _bot_audio(3.0, seed=4).astype(np.float64) * 0.06
    loud = _bot_audio(0.02, seed=5).astype(np.float64) * 1.6
    for start in range(1600, len(bot) - 160, 2400):
        bot[start : start + 160] = loud
    back = _echo_of(bot, 320, 10 ** (-32 / 20))
    energy = (np.frombuffer(b"".join(_frames(back)), np.int16).astype(float).reshape(-1, 160) ** 2).mean(
        axis=1
    )
    assert energy.reshape(-1, 15).mean(axis=1).max() < 33**2 < 100**2 < energy.max()
    gate = EchoGate(EchoSettings(search_ms=300))
    for out, inbound in zip(_frames(bot), _frames(back), strict=True):
        gate.sent(out)
        gate.cancel(inbound)
    assert gate.delay_samples == 320


def test_the_caller_over_the_echo_is_kept_whole() -> None:
    bot = _bot_audio(2.0)
    caller = np.zeros(len(bot))
    caller[8000:9600] = _bot_audio(0.2, seed=9)[:1600] * 0.5  # 0.2 s at 1.0 s, uncorrelated
    gate = EchoGate(EchoSettings(search_ms=300))
    sent, back = _frames(bot.astype(np.float64)), _frames(_echo_of(bot, 300, 0.3) + caller)
    alone = _frames(caller)
    for i, (out, inbound) in enumerate(zip(sent, back, strict=True)):
        gate.sent(out)
        res = gate.cancel(inbound)
        if 50 <= i < 60:  # the caller's frames: what is left is the caller, to a sample or two
            diff = np.frombuffer(res, np.int16).astype(int) - np.frombuffer(alone[i], np.int16)
            assert int(np.abs(diff).max()) <= 2
            assert not gate.is_echo(audioop.rms(res, 2))


def test_a_moved_echo_path_is_searched_again_and_found() -> None:
    bot = _bot_audio(4.0)
    first, second = _echo_of(bot, 200, 0.3), _echo_of(bot, 640, 0.2)
    back = np.concatenate([first[:16000], second[16000:]])  # the path moves at 2 s
    gate = EchoGate(EchoSettings(search_ms=300))
    delays = []
    for out, inbound in zip(_frames(bot.astype(np.float64)), _frames(back), strict=True):
        gate.sent(out)
        gate.cancel(inbound)
        delays.append(gate.delay_samples)
    assert delays[99] == 200  # before the move
    assert delays[-1] == 640
    assert gate.searches <= 3  # bounded: the first search, then only once the ERLE fell


def test_no_path_no_subtraction_and_cancel_off() -> None:
    gate = EchoGate(EchoSettings(search_ms=300))
    frame = tone(2000)
    for _ in range(50):
        gate.sent_silence()
        assert gate.cancel(frame) is frame  # the bot never spoke: no search, no residual
    assert gate.searches == 0 and gate.delay_samples is None
    off = EchoGate(EchoSettings(cancel=False))
    bot = _frames(_bot_audio(1.0).astype(np.float64))
    for out in bot:
        off.sent(out)
        assert off.cancel(out) is out
    assert off.searches == 0


def test_a_skipped_outbound_frame_drops_the_path_instead_of_adding_echo() -> None:
    # The pacer skips a frame after a stall: the counts slip by 160 samples, so the known path
    # would subtract the wrong reference (about doubling the echo's energy). The gate hands the
    # VAD the raw frame instead, drops the path within a few frames and finds the shifted one.
    bot = _bot_audio(4.0)
    sent, back = _frames(bot.astype(np.float64)), _frames(_echo_of(bot, 296, 0.3))
    gate = EchoGate(EchoSettings(search_ms=300))
    dropped_at = None
    for i, (out, inbound) in enumerate(zip(sent, back, strict=True)):
        if i != 100:  # frame 100 never went out
            gate.sent(out)
        res = gate.cancel(inbound)
        # Never more than 1.5 times the line's energy (a wrong reference gives about 2 times).
        assert audioop.rms(res, 2) <= 1.23 * audioop.rms(inbound, 2)
        if i == 99:
            assert gate.delay_samples == 296
        if i > 100 and dropped_at is None and gate.delay_samples is None:
            dropped_at = i
        last = audioop.rms(res, 2), audioop.rms(inbound, 2)
    assert dropped_at is not None and dropped_at <= 100 + 10  # within 200 ms of the slip
    assert gate.delay_samples == 296 + 160  # found again, at the slipped alignment
    assert last[0] < last[1] / 10  # and cancelling again


def test_bad_cancel_settings_are_named() -> None:
    with pytest.raises(ValueError, match="search_ms"):
        EchoSettings(search_ms=100)
    with pytest.raises(ValueError, match="search_ms"):
        EchoSettings(search_ms=310)  # not whole 20 ms frames
    with pytest.raises(ValueError, match="min_erle_db"):
        EchoSettings(min_erle_db=-1.0)


def test_a_line_with_no_echo_is_not_searched_every_fifth_of_a_second() -> None:
    # No echo path at all (a digital trunk): each fruitless search doubles the wait for the next
    # (0.2, 0.4, 0.8 ... s of the bot), so 10 s of the bot's speech cost 5 searches, not 49.
    bot = _frames(_bot_audio(10.0).astype(np.float64))
    line = _frames(_bot_audio(10.0, seed=11).astype(np.float64) * 0.1)  # the caller's line noise
    gate = EchoGate(EchoSettings(search_ms=300))
    for out, inbound in zip(bot, line, strict=True):
        gate.sent(out)
        assert gate.cancel(inbound) is inbound
    assert gate.delay_samples is None
    assert gate.searches == 5


def test_echo_under_the_line_noise_bounds_what_may_be_echo_after_the_first_search() -> None:
    # Echo 27 dB down under noise about as loud: no path cancels 6 dB, so none is taken; but the
    # window bounds the echo, and a caller 10 dB under the bot is no longer taken for it.
    bot = _bot_audio(1.0)
    noise = np.random.default_rng(9).standard_normal(len(bot)) * 120
    gate = EchoGate(EchoSettings(search_ms=300))
    level = int(audioop.rms(bot.tobytes(), 2))
    sent, back = _frames(bot.astype(np.float64)), _frames(_echo_of(bot, 400, 10 ** (-27 / 20)) + noise)
    caller_masked: list[bool] = []
    searches: list[int] = []
    for out, inbound in zip(sent[:40], back[:40], strict=True):
        gate.sent(out)
        assert gate.cancel(inbound) is inbound  # no path: the raw frame
        gate.is_echo(audioop.rms(inbound, 2))
        caller_masked.append(gate.may_be_echo(level // 3))
        searches.append(gate.searches)
    assert gate.delay_samples is None
    # The first search (0.3 s of the bot) has lags reaching back before it spoke: no bound. The
    # second one's window is all the bot's: from its frame on, the bound, not the worst case (the
    # level gate's median alone still masks a caller 10 dB down then).
    second = searches.index(2)
    assert caller_masked[:20] == [True] * 20  # (the level gate's own delay settles after 20)
    assert not any(caller_masked[second:])
    assert gate.may_be_echo(int(level * 10 ** (-27 / 20)))  # the echo's own level still may be
