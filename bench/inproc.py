"""The gateway's per-frame cost in process: many calls, no sockets, CPU time per call-frame.

`python -m bench.inproc --calls 200 --frames 1500 [--echo-db -20] [--verify]`

Each call is a `TelephonyGateway` on a null transport (writes dropped: the kernel's send is not
ours), driven step by step: per 20 ms step every call's playout ticks once (one outbound frame,
the echo gate told of it) and one inbound frame goes through `on_audio` (the recognizer's buffer,
the echo gate's subtraction, the VAD); then the loop runs once, so Silero's batch flushes as it
does after a socket read round. A call-frame is one outbound plus one inbound frame of one call.

The schedule is deterministic: a two-turn cycle where the bot says its espeak-ng phrase, then the
caller answers in the pause (first turn) or talks over the bot 1.2 s into it (second turn), with
line noise at -65 dBFS under everything; each call starts at its own point of the cycle. With
`--echo-db`, the bot's audio comes back on the inbound line 80 ms later at that gain (the echo
gate finds the path and subtracts it).

`--verify` runs on a step clock (the frame's step x 20 ms, not the loop's) and prints a SHA-256
over every VAD event (call, kind, at, detected_at), every frame written, and each call's final
counters: two builds that decide alike print the same hash. Timing runs use the loop clock, as
the service does.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BOT_PHRASE, CALLER_PHRASE, make_speech_wav
from bridge.audiosocket.server import AudioSocketConnection
from bridge.gateway import TelephonyGateway
from bridge.pacer import Pacer
from bridge.playout import PlayoutSettings
from orchestrator.audio import FRAME_BYTES, SAMPLE_RATE
from orchestrator.clock import LoopClock
from orchestrator.domain.models import AudioChunk
from testkit.fake_asterisk import read_wav_8k
from testkit.fakes import BenchRecognizer

_FRAME = FRAME_BYTES // 2  # samples
_ECHO_DELAY = 80 * SAMPLE_RATE // 1000  # samples
_NOISE_RMS = 32768 * 10 ** (-65 / 20)
_BARGE_IN_FRAMES = 60  # the second turn's caller starts this far into the bot's speech


class _Transport(asyncio.Transport):
    """Drops writes; with `digest`, hashes them first."""

    def __init__(self, digest: Any = None) -> None:
        super().__init__()
        self._digest = digest

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._digest is not None:
            self._digest.update(data)

    def close(self) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _StepClock:
    """The current step's time: arrival times that do not depend on the machine's speed."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


class _Events:
    """A call's `VoiceListener`: each event into the run's digest."""

    def __init__(self, call: int, digest: Any) -> None:
        self._call, self._digest = call, digest
        self.count = 0

    def _add(self, kind: str, at: float) -> None:
        self.count += 1
        self._digest.update(f"{self._call} {kind} {at!r}\n".encode())

    def on_speech_onset(self, at: float) -> None:
        self._add("onset", at)

    def on_speech_rejected(self, at: float) -> None:
        self._add("rejected", at)

    def on_speech_start(self, at: float) -> None:
        self._add("start", at)

    def on_speech_end(self, at: float) -> None:
        self._add("end", at)

    def on_dtmf(self, digit: str, at: float) -> None:
        self._add("dtmf" + digit, at)


def _schedule(bot: bytes, caller: bytes, echo_db: float | None) -> tuple[list[bytes], int, int]:
    """The cycle's inbound frames, its length and the bot's clip length, in frames."""
    b = len(bot) // FRAME_BYTES
    c = len(caller) // FRAME_BYTES
    turn = b + 25 + c + 40  # frames: bot, pause, caller's answer, pause
    cycle = 2 * turn
    line = np.zeros(cycle * _FRAME, np.float64)
    voice = np.frombuffer(caller, np.int16).astype(np.float64)
    line[(b + 25) * _FRAME : (b + 25 + c) * _FRAME] += voice  # the answer in the pause
    start = (turn + _BARGE_IN_FRAMES) * _FRAME
    line[start : start + len(voice)] += voice  # over the bot
    if echo_db is not None:
        sent = np.zeros(cycle * _FRAME + _ECHO_DELAY)
        spoken = np.frombuffer(bot, np.int16).astype(np.float64)
        for at in (0, turn * _FRAME):
            sent[at + _ECHO_DELAY : at + _ECHO_DELAY + len(spoken)] += spoken
        line += sent[: cycle * _FRAME] * 10 ** (echo_db / 20)
    line += np.random.default_rng(7).normal(0.0, _NOISE_RMS, line.shape)
    pcm = np.clip(np.rint(line), -32768, 32767).astype(np.int16).tobytes()
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)], cycle, turn


async def _drive(
    calls: int, frames: int, echo_db: float | None, verify: bool, clips: tuple[bytes, bytes]
) -> dict[str, Any]:
    bot, caller = clips
    inbound, cycle, turn = _schedule(bot, caller, echo_db)
    chunk = AudioChunk(bot)
    digest = hashlib.sha256() if verify else None
    step_clock = _StepClock()
    pacer = Pacer()  # not started: the driver ticks each call's playout itself
    settings = PlayoutSettings(high_water_ms=10**9)  # write() never waits
    gateways: list[TelephonyGateway] = []
    listeners: list[_Events] = []
    starts = [(i * 131) % cycle for i in range(calls)]
    for i in range(calls):
        conn = AudioSocketConnection(uuid.UUID(int=i + 1), _Transport(digest), "bench")
        clock = step_clock if verify else LoopClock()
        gw = TelephonyGateway(conn, pacer, clock=clock, playout_settings=settings)
        events = _Events(i, digest if digest is not None else hashlib.sha256())
        gw.attach(events, BenchRecognizer(frames + 1))
        gateways.append(gw)
        listeners.append(events)
    gc.collect()
    gc.freeze()  # the service's collector policy keeps full collections rare: none in the window
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for step in range(frames):
        step_clock.t = step * 0.02
        for i, gw in enumerate(gateways):
            pos = (starts[i] + step) % cycle
            if pos == 0 or pos == turn:
                await gw.outbound.write(chunk)  # returns at once: no high-water wait
                gw.outbound.end_segment()
            gw.outbound.tick()
            gw.on_audio(inbound[pos], 8000)
        await asyncio.sleep(0)  # the batch's flush (call_soon), as after a round of reads
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    gc.unfreeze()
    out: dict[str, Any] = {
        "calls": calls,
        "frames": frames,
        "echo_db": echo_db,
        "us_per_call_frame": round(cpu / (calls * frames) * 1e6, 3),
        "wall_us_per_call_frame": round(wall / (calls * frames) * 1e6, 3),
        "events": sum(e.count for e in listeners),
    }
    if digest is not None:
        for i, gw in enumerate(gateways):
            vad = gw._vad
            counters = (
                gw.speech_starts, gw.speech_onsets, gw.speech_ends, vad.frames_gated,
                vad.frames_checked, vad.frames_echo, vad.frames_residual, gw.echo.delay_samples,
                gw.echo.path_gain, gw.echo.delay_frames, gw.outbound.frames_sent,
            )  # fmt: skip
            digest.update(f"{i} {counters!r}\n".encode())
        out["hash"] = digest.hexdigest()[:16]
    for gw in gateways:
        gw.on_hangup()
    return out


def run_inproc(calls: int, frames: int, echo_db: float | None, *, verify: bool) -> dict[str, Any]:
    """One run (espeak-ng clips made first); the figures as a dict."""
    with tempfile.TemporaryDirectory(prefix="vb-inproc-") as tmp:
        bot = read_wav_8k(str(make_speech_wav(Path(tmp) / "bot.wav", BOT_PHRASE)))
        caller = read_wav_8k(str(make_speech_wav(Path(tmp) / "caller.wav", CALLER_PHRASE)))
    return asyncio.run(_drive(calls, frames, echo_db, verify, (bot, caller)))


def main() -> None:
    """The CLI: one JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--frames", type=int, default=1500)
    p.add_argument("--echo-db", type=float, default=None, help="echo gain, dB (none: no echo)")
    p.add_argument("--verify", action="store_true", help="step clock, and the hash of what was decided")
    a = p.parse_args()
    print(json.dumps(run_inproc(a.calls, a.frames, a.echo_db, verify=a.verify)), flush=True)


if __name__ == "__main__":
    main()
