"""Per-frame micro costs of the audio hot path, in nanoseconds per 20 ms frame.

Each figure is the best of `repeat` timed loops of `number` calls (the best run is the one least
disturbed by the rest of the machine), divided by `number`. Sinks and transports are null objects,
so a figure is the cost of our code (and the C calls it makes), not of the kernel's send path.
"""

from __future__ import annotations

import asyncio
import audioop
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import CALLER_PHRASE, make_speech_wav, table
from bridge.audiosocket.protocol import Decoder, encode_audio
from bridge.audiosocket.server import AudioSocketConnection
from bridge.echo_gate import EchoGate
from bridge.gateway import TelephonyGateway
from bridge.pacer import Pacer
from bridge.playout import Playout, PlayoutSettings
from bridge.vad import VadSettings, VoiceActivityDetector
from orchestrator.audio import FRAME_BYTES, SILENCE_FRAME, Resampler, resample, rms
from orchestrator.clock import LoopClock
from orchestrator.domain.models import AudioChunk
from testkit.fake_asterisk import read_wav_8k
from testkit.fakes import BenchRecognizer


class _NullSink:
    def send_audio(self, frame: bytearray) -> None:
        return None

    def send_silence(self) -> None:
        return None


class _NullTransport(asyncio.Transport):
    """Accepts writes and drops them: the cost of the kernel's send is not ours."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        return None

    def close(self) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


@dataclass(frozen=True, slots=True)
class MicroResult:
    """One measured operation."""

    name: str
    ns_per_frame: float
    calls: int


def _best_ns(run: Callable[[int], None], number: int, repeat: int) -> float:
    """Best of `repeat` runs of `run(number)`, in ns per call."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter_ns()
        run(number)
        best = min(best, (time.perf_counter_ns() - t) / number)
    return best


def _cycle(frames: list[bytes], number: int) -> list[bytes]:
    return [frames[i % len(frames)] for i in range(number)]


def _voiced_frames(pcm: bytes, gate: int) -> list[bytes]:
    frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)]
    return [f for f in frames if rms(f) >= gate]


async def _measure(speech: bytes, number: int, repeat: int) -> list[MicroResult]:
    out: list[MicroResult] = []

    def add(name: str, run: Callable[[int], None]) -> None:
        out.append(MicroResult(name, _best_ns(run, number, repeat), number * repeat))

    # Playout.tick: a frame of queued audio, and silence when nothing is queued.
    audio_playout = Playout(_NullSink(), PlayoutSettings(high_water_ms=10**9))  # write() never waits here
    chunk = AudioChunk(bytes(speech[: number * FRAME_BYTES].ljust(number * FRAME_BYTES, b"\x01")))

    def tick_audio(n: int) -> None:
        tick = audio_playout.tick
        for _ in range(n):
            tick()

    # Refill outside the timed loop: each repeat starts with `number` frames queued.
    best = float("inf")
    for _ in range(repeat):
        await audio_playout.write(chunk)
        t = time.perf_counter_ns()
        tick_audio(number)
        best = min(best, (time.perf_counter_ns() - t) / number)
    assert audio_playout.frames_sent == number * repeat  # every tick sent audio, none silence
    out.append(MicroResult("Playout.tick, audio queued", best, number * repeat))

    silent_playout = Playout(_NullSink())

    def tick_silence(n: int) -> None:
        tick = silent_playout.tick
        for _ in range(n):
            tick()

    add("Playout.tick, nothing queued (silence)", tick_silence)

    # VAD: frames above the energy gate go to webrtcvad; silence stops at the gate.
    # One detector fed in a tight loop: nothing to batch its windows with, so they run at once
    # (as they would anyway: a detector without an `on_event` listener never batches).
    settings = VadSettings(batch_across_calls=False)
    voiced = _cycle(_voiced_frames(speech, settings.energy_gate_rms), number)
    vad = VoiceActivityDetector(settings)

    def vad_speech(n: int) -> None:
        process = vad.process
        for i in range(n):
            process(voiced[i], i * 0.02)

    add(f"VAD.process, speech ({settings.engine}, the default)", vad_speech)
    vad_webrtc = VoiceActivityDetector(VadSettings(engine="webrtc"))

    def vad_speech_webrtc(n: int) -> None:
        process = vad_webrtc.process
        for i in range(n):
            process(voiced[i], i * 0.02)

    add("VAD.process, speech (webrtc)", vad_speech_webrtc)
    vad_quiet = VoiceActivityDetector(settings)

    def vad_silence(n: int) -> None:
        process = vad_quiet.process
        for i in range(n):
            process(SILENCE_FRAME, i * 0.02)

    add("VAD.process, silence (energy gate)", vad_silence)

    # Echo gate, per inbound frame above the energy gate: the bot talking (the reference ring
    # full of its frames) with an echo-level frame (the delay search runs), and the bot quiet.
    bot = _voiced_frames(speech, settings.energy_gate_rms)
    talking = EchoGate()
    for f in bot[:20]:
        talking.sent(f)
    echo_level = max(1, int(rms(bot[0]) * 0.1))

    def echo_talking(n: int) -> None:
        is_echo = talking.is_echo
        for _ in range(n):
            is_echo(echo_level)

    add("EchoGate.is_echo, bot talking (delay search)", echo_talking)
    quiet = EchoGate()
    for _ in range(20):
        quiet.sent_silence()

    def echo_quiet(n: int) -> None:
        is_echo = quiet.is_echo
        for _ in range(n):
            is_echo(echo_level)

    add("EchoGate.is_echo, bot quiet", echo_quiet)

    # Echo subtraction with the path found: the bot's frame out (`sent`) and an echo frame in
    # (`cancel`: the delayed, scaled reference taken out), one pair per frame.
    canceller = EchoGate()
    echo_frames = [audioop.mul(f, 2, 0.1) for f in bot]
    for i in range(40):
        canceller.sent(bot[i % len(bot)])
        canceller.cancel(echo_frames[i % len(bot) - 1] if i else SILENCE_FRAME)
    assert canceller.delay_samples is not None, "micro bench: the echo path was not found"
    pairs = [(bot[i % len(bot)], echo_frames[i % len(bot) - 1]) for i in range(len(bot))]

    def echo_cancel(n: int) -> None:
        sent, cancel = canceller.sent, canceller.cancel
        for i in range(n):
            out, back = pairs[i % len(pairs)]
            sent(out)
            cancel(back)

    add("EchoGate.sent + cancel, path known (subtraction)", echo_cancel)

    # AudioSocket codec: one whole 323-byte message per feed, as the kernel usually hands it over.
    message = encode_audio(voiced[0])
    decoder = Decoder()

    def decode(n: int) -> None:
        feed = decoder.feed
        for _ in range(n):
            feed(message)

    add("Decoder.feed, one 323-byte message", decode)
    frame = bytearray(voiced[0])

    def encode(n: int) -> None:
        for _ in range(n):
            encode_audio(frame)

    add("encode_audio, one outbound frame", encode)

    conn = AudioSocketConnection(uuid.uuid4(), _NullTransport(), "bench")

    def send(n: int) -> None:
        send_audio = conn.send_audio
        for _ in range(n):
            send_audio(frame)

    add("AudioSocketConnection.send_audio (encode + write)", send)

    # The whole inbound path of one frame after decoding: the push into the recognizer's buffer
    # (as YandexRecognitionStream.push_audio), then the VAD.
    gw_conn = AudioSocketConnection(uuid.uuid4(), _NullTransport(), "bench")
    gateway = TelephonyGateway(gw_conn, Pacer(), clock=LoopClock())
    # A buffer long enough for every repeat: the timed path never takes the drop-oldest branch.
    recognizer = BenchRecognizer(number * repeat + 1)
    gateway.attach(None, recognizer)
    inbound = _cycle(_voiced_frames(speech, 0), number)

    def on_audio(n: int) -> None:
        receive = gateway.on_audio
        for i in range(n):
            receive(inbound[i], 8000)

    add("TelephonyGateway.on_audio, clip (push + VAD)", on_audio)
    gateway.on_hangup()  # not close(): the null transport never reports the socket closed

    # The one resampler (libsoxr HQ): a 16 kHz stream cut into 20 ms chunks (bot audio or
    # inbound slin16), and whole 22.05 kHz clips (espeak-ng output, cache warming) per 20 ms of
    # audio. Times 50 is the cost of one second of audio.
    wide = resample(speech, 8000, 16000)
    wide_frames = _cycle([wide[i : i + 640] for i in range(0, len(wide) - 639, 640)], number)
    streamed = Resampler()

    def resample_stream(n: int) -> None:
        convert = streamed.convert
        for i in range(n):
            convert(wide_frames[i], 16000)

    add("Resampler.convert 16 -> 8 kHz, one 20 ms chunk", resample_stream)
    clip22 = resample(speech, 8000, 22050)
    clip_frames = max(1, len(speech) // FRAME_BYTES)

    def resample_clip(n: int) -> None:
        for _ in range(max(1, n // clip_frames)):
            resample(clip22, 22050, 8000)

    out.append(
        MicroResult(
            "resample 22.05 -> 8 kHz, whole clip, per 20 ms",
            _best_ns(resample_clip, number, repeat),
            number * repeat,
        )
    )
    return out


def run_micro(*, number: int = 20000, repeat: int = 5, speech: bytes | None = None) -> list[MicroResult]:
    """Measure every operation; `speech` is 8 kHz s16 PCM (an espeak-ng clip if None)."""
    if speech is None:
        with tempfile.TemporaryDirectory(prefix="vb-bench-") as tmp:
            speech = read_wav_8k(str(make_speech_wav(Path(tmp) / "speech.wav", CALLER_PHRASE)))
    return asyncio.run(_measure(speech, number, repeat))


def render_micro(results: list[MicroResult]) -> str:
    """The plain-text table."""
    rows = [[r.name, r.ns_per_frame, r.calls, 20_000_000 / r.ns_per_frame] for r in results]
    return table(
        ("operation", "ns/frame", "calls", "per 20 ms/core"),
        rows,
        title="Per-frame micro costs (best of the repeats; null sinks and transports)",
    )
