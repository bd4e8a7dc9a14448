"""FakeAsterisk: TEST AND BENCHMARK INFRASTRUCTURE, not part of the production bridge.

A real asyncio TCP client that behaves like Asterisk's AudioSocket side of a call: it connects,
sends the UUID, streams the caller's audio as 320-byte slin frames every 20 ms on a deadline clock
(silence once the audio runs out, as a live phone line does), can send DTMF, hangs up with EOF
(Asterisk never sends 0x00), and records everything the bridge sends back with its arrival time.

Hundreds of callers share ONE timer: a `FakeCallerPool` drives every caller's `tick()` from a
single `Pacer`, exactly as the bridge drives its playouts, so 500+ callers cost one timer.

CLI: `python -m testkit.fake_asterisk --host 127.0.0.1 --port 9092 --uuid <uuid> --wav caller.wav`
"""

from __future__ import annotations

import argparse
import asyncio
import audioop
import math
import socket
import uuid
import wave
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from bridge.audiosocket.protocol import (
    Audio,
    AudioSocketProtocolError,
    Decoder,
    Hangup,
    Kind,
    Message,
    encode_audio,
    encode_dtmf,
    encode_uuid,
)
from bridge.pacer import Pacer
from orchestrator.audio import FRAME_BYTES, SAMPLE_RATE, SILENCE_FRAME

__all__ = ["FakeAsterisk", "FakeCallerPool", "Received", "read_wav_8k"]

_SILENCE_MESSAGE = encode_audio(SILENCE_FRAME)


@dataclass(frozen=True, slots=True)
class Received:
    """One message from the bridge and when it arrived (loop clock)."""

    at: float
    message: Message


@dataclass(frozen=True, slots=True)
class ArrivalStats:
    """Inter-arrival times of audio messages, in seconds."""

    count: int
    mean: float
    sd: float
    max: float


def read_wav_8k(path: str) -> bytes:
    """PCM of an 8 kHz mono 16-bit WAV file; ValueError naming the file otherwise."""
    with wave.open(path, "rb") as w:
        shape = (w.getframerate(), w.getnchannels(), w.getsampwidth())
        if shape != (SAMPLE_RATE, 1, 2):
            raise ValueError(
                f"{path}: need 8000 Hz mono 16-bit, got {shape[0]} Hz, "
                f"{shape[1]} channel(s), {8 * shape[2]}-bit"
            )
        return w.readframes(w.getnframes())


class FakeAsterisk(asyncio.Protocol):
    """One fake caller's AudioSocket leg. Drive `tick()` from a pacer (see `FakeCallerPool`)."""

    def __init__(
        self,
        call_uuid: uuid.UUID,
        *,
        kind: Kind = Kind.SLIN,
        send_silence: bool = True,
        keep_messages: bool = True,
        echo_db: float | None = None,
        echo_delay_frames: int = 3,
    ) -> None:
        self.uuid = call_uuid
        # Line echo: each bot frame received comes back, `echo_db` down, mixed into the caller's
        # audio `echo_delay_frames` ticks later (a hybrid's reflection; slin only).
        self._echo_gain = None if echo_db is None else 10 ** (echo_db / 20)
        self._echo: deque[bytes] = deque(
            [bytes(FRAME_BYTES)] * echo_delay_frames, maxlen=echo_delay_frames + 50
        )
        self.kind = kind
        self._frame_bytes = FRAME_BYTES * ({Kind.SLIN: 1, Kind.SLIN16: 2, Kind.SLIN48: 6}.get(kind, 1))
        self.send_silence = send_silence  # a live line sends frames even when the caller is quiet
        self.keep_messages = keep_messages  # False for benchmarks: keep only running stats
        self._silence = encode_audio(bytes(self._frame_bytes), kind)
        self._audio = bytearray()
        self._transport: asyncio.Transport | None = None
        self._decoder = Decoder()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[tuple[Callable[[FakeAsterisk], bool], asyncio.Future[None]]] = []
        self._closed: asyncio.Future[None] | None = None
        self.received: list[Received] = []
        self.frames_sent = 0
        self.hangup_received = False
        self.protocol_error: str | None = None
        self.eof = False  # the bridge closed the TCP connection
        # Running stats over every audio message received.
        self.audio_count = 0
        self.voice_count = 0  # audio that is not all zeros: the bot speaking
        self.first_voice_at: float | None = None
        self.last_voice_at: float | None = None
        self._last_audio_at: float | None = None
        self._gap_n = 0
        self._gap_sum = 0.0
        self._gap_sumsq = 0.0
        self._gap_max = 0.0

    # --- connection ---
    async def connect(self, host: str, port: int) -> None:
        """Open the TCP connection and send the UUID, as Asterisk's dial does."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._closed = loop.create_future()
        await loop.create_connection(lambda: self, host, port)
        assert self._transport is not None
        self._transport.write(encode_uuid(self.uuid))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        assert self._loop is not None
        now = self._loop.time()
        try:
            msgs = self._decoder.feed(data)
        except AudioSocketProtocolError as exc:
            self.protocol_error = str(exc)
            msgs = list(exc.messages)
            assert self._transport is not None
            self._transport.close()
        for msg in msgs:
            self._record(now, msg)
        if self._waiters:
            self._check_waiters()

    def _record(self, now: float, msg: Message) -> None:
        if self.keep_messages:
            self.received.append(Received(now, msg))
        if type(msg) is Audio:
            self.audio_count += 1
            if self._echo_gain is not None:
                self._echo.append(audioop.mul(msg.pcm, 2, self._echo_gain))
            last = self._last_audio_at
            if last is not None:
                gap = now - last
                self._gap_n += 1
                self._gap_sum += gap
                self._gap_sumsq += gap * gap
                if gap > self._gap_max:
                    self._gap_max = gap
            self._last_audio_at = now
            if msg.pcm.count(0) != len(msg.pcm):
                self.voice_count += 1
                if self.first_voice_at is None:
                    self.first_voice_at = now
                self.last_voice_at = now
        elif type(msg) is Hangup:
            self.hangup_received = True

    def eof_received(self) -> bool | None:
        self.eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        self._check_waiters()

    @property
    def connected(self) -> bool:
        """Whether the TCP connection is open."""
        return self._transport is not None and not self._transport.is_closing()

    # --- caller side ---
    def play(self, pcm: bytes) -> None:
        """Queue caller audio (at the kind's rate) to stream, one frame per tick."""
        self._audio += pcm

    @property
    def audio_queued(self) -> int:
        """Bytes of caller audio not sent yet."""
        return len(self._audio)

    def tick(self) -> None:
        """Send the next 20 ms of caller audio, or silence once it has run out."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        buf = self._audio
        n = self._frame_bytes
        echo = self._echo.popleft() if self._echo_gain is not None and self._echo else None
        if buf or echo is not None:
            frame = bytes(buf[:n])
            del buf[:n]
            if len(frame) < n:
                frame += bytes(n - len(frame))
            if echo is not None and len(echo) == n:
                frame = audioop.add(frame, echo, 2)
            transport.write(encode_audio(frame, self.kind))
        elif self.send_silence:
            transport.write(self._silence if self.kind is not Kind.SLIN else _SILENCE_MESSAGE)
        else:
            return
        self.frames_sent += 1

    def send_dtmf(self, digit: str) -> None:
        """Send one DTMF digit (as Asterisk does at the end of an RFC 4733 event)."""
        self.send_raw(encode_dtmf(digit))

    def send_raw(self, data: bytes) -> None:
        """Write arbitrary bytes (malformed input in tests)."""
        assert self._transport is not None
        self._transport.write(data)

    def hangup(self) -> None:
        """Hang up as Asterisk does: close the socket (EOF), no 0x00."""
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is closed (by either side)."""
        assert self._closed is not None
        await asyncio.shield(self._closed)

    async def wait_until(self, predicate: Callable[[FakeAsterisk], bool]) -> None:
        """Wait until `predicate(self)` holds; rechecked on each received message and at EOF.

        Use under `asyncio.timeout(...)`. Fails with ConnectionError if the connection closes
        without the predicate holding.
        """
        if predicate(self):
            return
        if self._closed is not None and self._closed.done():  # nothing more will arrive
            raise ConnectionError(f"fake caller {self.uuid}: connection closed")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, fut))
        try:
            await fut
        finally:
            self._waiters = [(p, f) for p, f in self._waiters if f is not fut]

    def _check_waiters(self) -> None:
        closed = self._closed is not None and self._closed.done()
        for predicate, fut in self._waiters:
            if fut.done():
                continue
            if predicate(self):
                fut.set_result(None)
            elif closed:
                fut.set_exception(ConnectionError(f"fake caller {self.uuid}: connection closed"))

    # --- what the bridge sent ---
    @property
    def audio_frames(self) -> list[Received]:
        """Every audio message received (bot audio and silence), in order."""
        return [r for r in self.received if type(r.message) is Audio]

    @property
    def bot_audio_frames(self) -> list[Received]:
        """Audio messages that are not pure silence."""
        return [r for r in self.audio_frames if any(r.message.pcm)]  # type: ignore[union-attr]

    @property
    def silence_frames(self) -> list[Received]:
        """Audio messages of pure silence."""
        return [r for r in self.audio_frames if not any(r.message.pcm)]  # type: ignore[union-attr]

    def bot_audio(self) -> bytes:
        """The bot's audio concatenated (silence frames left out)."""
        return b"".join(r.message.pcm for r in self.bot_audio_frames)  # type: ignore[union-attr]

    def inter_arrival(self) -> ArrivalStats:
        """Gaps between consecutive audio messages (running stats; works without keep_messages)."""
        n = self._gap_n
        if n == 0:
            return ArrivalStats(0, 0.0, 0.0, 0.0)
        mean = self._gap_sum / n
        var = max(0.0, self._gap_sumsq / n - mean * mean)
        return ArrivalStats(n, mean, math.sqrt(var), self._gap_max)


class FakeCallerPool:
    """Many fake callers on one shared 20 ms deadline timer (a `Pacer`)."""

    def __init__(self, host: str, port: int, *, pacer: Pacer | None = None) -> None:
        self.host = host
        self.port = port
        self.pacer = pacer if pacer is not None else Pacer()  # an empty Pacer is falsy
        self.callers: list[FakeAsterisk] = []

    async def connect(
        self,
        call_uuid: uuid.UUID | None = None,
        *,
        audio: bytes = b"",
        kind: Kind = Kind.SLIN,
        send_silence: bool = True,
        keep_messages: bool = True,
        echo_db: float | None = None,
        echo_delay_frames: int = 3,
    ) -> FakeAsterisk:
        """Connect one more caller (sending its UUID) and start streaming `audio` on the tick."""
        caller = FakeAsterisk(
            call_uuid or uuid.uuid4(),
            kind=kind,
            send_silence=send_silence,
            keep_messages=keep_messages,
            echo_db=echo_db,
            echo_delay_frames=echo_delay_frames,
        )
        await caller.connect(self.host, self.port)
        caller.play(audio)
        self.callers.append(caller)
        self.pacer.add(caller)
        if not self.pacer.running:
            self.pacer.start()
        return caller

    def hangup(self, caller: FakeAsterisk) -> None:
        """Hang one caller up (EOF) and stop ticking it."""
        self.pacer.remove(caller)
        caller.hangup()

    async def close(self) -> None:
        """Hang everyone up and stop the timer."""
        for caller in self.callers:
            self.hangup(caller)
        self.pacer.stop()
        for caller in self.callers:
            await caller.wait_closed()


async def _main(args: argparse.Namespace) -> None:
    pcm = read_wav_8k(args.wav) if args.wav else b""
    base = uuid.UUID(args.uuid)
    pool = FakeCallerPool(args.host, args.port)
    callers = [
        await pool.connect(uuid.UUID(int=(base.int + i) % 2**128), audio=pcm, keep_messages=False)
        for i in range(args.count)
    ]
    try:
        async with asyncio.timeout(len(pcm) / 16000 + args.linger):
            for caller in callers:
                await caller.wait_closed()
    except TimeoutError:
        pass
    finally:
        await pool.close()
    for caller in callers[:5]:
        stats = caller.inter_arrival()
        print(
            f"{caller.uuid}: sent {caller.frames_sent} frames; received {caller.audio_count} "
            f"audio ({caller.voice_count} non-silent), hangup={caller.hangup_received}, "
            f"inter-arrival mean {stats.mean * 1000:.2f} ms sd {stats.sd * 1000:.2f} ms "
            f"max {stats.max * 1000:.2f} ms"
        )
    if len(callers) > 5:
        worst = max(c.inter_arrival().max for c in callers)
        print(f"... {len(callers)} callers; worst inter-arrival gap {worst * 1000:.2f} ms")


def main() -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description="Fake Asterisk AudioSocket caller (testing)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9092)
    parser.add_argument("--uuid", required=True, help="the call UUID (the first, with --count)")
    parser.add_argument("--count", type=int, default=1, help="callers; UUIDs --uuid + 0, 1, ...")
    parser.add_argument("--wav", help="8 kHz mono s16 WAV to play as the caller")
    parser.add_argument("--linger", type=float, default=5.0, help="seconds to stay after the WAV")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
