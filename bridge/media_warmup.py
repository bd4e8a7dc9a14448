"""Warm the per-call media path at start-up, so the first call does not pay for it on the loop.

What a call's gateway makes on first use is process-wide and lazy: ONNX Runtime's import and the
shared Silero session (`bridge.vad_silero`, 0.1-0.2 s), the loop's `SileroBatch`, a pooled
per-call Silero state, the first session runs, webrtcvad, numpy's FFT module (the echo gate's
delay search) and the Resampler. Measured 2026-12-03 (bench/README.md, "First call"): the
process's first call stalled the shared 20 ms tick by 64-86 ms inside its `on_call`, and its
greeting came 96-118 ms after the UUID instead of ~20 ms; every call in progress at that moment
hears the stall. `warm_media_path` runs one throwaway `TelephonyGateway` through the steps a call
takes (the bot speaks, its echo comes back 80 ms later, the caller talks over it), on a null
transport and a pacer of its own, before the service takes calls.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np

from bridge.audiosocket.connection import AudioSocketConnection
from bridge.echo_gate import EchoSettings
from bridge.gateway import TelephonyGateway
from bridge.pacer import Pacer
from bridge.playout import PlayoutSettings
from bridge.vad import VadSettings
from orchestrator.audio import FRAME_BYTES, SAMPLE_RATE
from orchestrator.clock import LoopClock
from orchestrator.domain.models import AudioChunk

__all__ = ["WARMUP_FRAMES", "warm_media_path"]

WARMUP_FRAMES = 75  # 1.5 s: the echo search's window fills and the caller's run is judged
_ECHO_DELAY = 640  # samples (80 ms)
_CALLER_FROM = 40  # the caller starts talking over the bot at this frame


class _NullTransport(asyncio.Transport):
    """Drops what the throwaway call writes."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        return None

    def close(self) -> None:
        return None

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


class _Discard:
    """The throwaway call's recognizer and listener: takes everything, keeps nothing."""

    def push_audio(self, frame: bytes) -> None:
        return None

    def on_speech_onset(self, at: float) -> None:
        return None

    def on_speech_rejected(self, at: float) -> None:
        return None

    def on_speech_start(self, at: float) -> None:
        return None

    def on_speech_end(self, at: float) -> None:
        return None

    def on_dtmf(self, digit: str, at: float) -> None:
        return None


def _voice(n: int, f0: float, seed: int) -> np.ndarray:
    """`n` samples of a voiced-like signal (harmonics of `f0` in noise) at about -20 dBFS."""
    t = np.arange(n) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    sig = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8)) + 0.3 * rng.standard_normal(n)
    return np.asarray(sig * (3000 / np.sqrt(np.mean(sig**2))), dtype=np.float64)


async def warm_media_path(vad: VadSettings, echo: EchoSettings) -> float:
    """Run one throwaway call's media (`WARMUP_FRAMES` frames each way) with the service's VAD
    and echo settings on the running loop; returns the seconds it took.

    Nothing leaves the process (null transport, own unstarted pacer); what stays is what the
    first call would have made anyway (the Silero session, the loop's batch, one pooled state).
    Raises what the first call would have raised (a Silero model that does not load).
    """
    started = time.perf_counter()
    n = WARMUP_FRAMES * FRAME_BYTES // 2
    bot = _voice(n, 140.0, 1)
    caller = np.zeros(n)
    caller[_ECHO_DELAY:] = 0.1 * bot[:-_ECHO_DELAY]  # the bot's echo, 20 dB down
    caller[_CALLER_FROM * FRAME_BYTES // 2 :] += _voice(n - _CALLER_FROM * FRAME_BYTES // 2, 210.0, 2)
    inbound = np.clip(caller, -32768, 32767).astype("<i2").tobytes()
    conn = AudioSocketConnection(uuid.UUID(int=0), _NullTransport(), "warm-up")
    gateway = TelephonyGateway(
        conn,
        Pacer(),  # never started: this call's playout is ticked here
        clock=LoopClock(),
        vad_settings=vad,
        echo_settings=echo,
        playout_settings=PlayoutSettings(high_water_ms=10**9),  # write() never waits
    )
    sink = _Discard()
    gateway.attach(sink, sink)
    try:
        await gateway.outbound.write(AudioChunk(bot.astype("<i2").tobytes()))
        gateway.outbound.end_segment()
        for i in range(WARMUP_FRAMES):
            gateway.outbound.tick()
            gateway.on_audio(inbound[i * FRAME_BYTES : (i + 1) * FRAME_BYTES], SAMPLE_RATE)
            await asyncio.sleep(0)  # the Silero batch's flush, as after a round of reads
    finally:
        gateway.on_hangup()
    return time.perf_counter() - started
