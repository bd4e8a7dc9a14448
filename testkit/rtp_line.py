"""A live caller line over RTP: the caller's scripted speech plus the echo of what it hears.

sipp places the call (`scenarios/uac_rtp_line.xml`) but offers this socket's port in its SDP, so
Asterisk's RTP for the caller comes here and the caller's RTP goes from here. From the first
packet Asterisk sends (t = 0), one G.711 u-law packet leaves every 20 ms (paced to absolute
deadlines): the caller's audio at that offset (`say`, or `say_after_voice`: after the first
voiced packet heard), plus, with `echo_db`, the audio received
`echo_delay_ms` earlier, that many dB down (a hybrid's reflection), through u-law like a real line.

Records every packet received (arrival offset, s16le PCM) for the checks: what the caller heard.
"""

from __future__ import annotations

import asyncio
import struct
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import cast

from orchestrator.audio import FRAME_BYTES, SAMPLE_RATE
from orchestrator.tasks import TaskOwner
from testkit.sip import VOICED_RMS

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # stdlib audioop on 3.11/3.12
    import audioop

__all__ = ["Heard", "RtpLine"]

_PACKET_S = 0.02
_SSRC = 0x11EC0001


@dataclass(frozen=True, slots=True)
class Heard:
    """One packet from Asterisk: arrival (s after the first one) and its audio (slin)."""

    t: float
    pcm: bytes

    @property
    def rms(self) -> int:
        return int(audioop.rms(self.pcm, 2))


@dataclass
class _Protocol(asyncio.DatagramProtocol):
    line: RtpLine
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.line._received(data, (str(addr[0]), int(addr[1])))


@dataclass
class RtpLine:
    """The caller's end of the media; `async with` binds 127.0.0.1:`port` (0: any free port)."""

    echo_db: float | None = None
    echo_delay_ms: int = 60
    duration_s: float = 60.0  # stop sending after this long
    port: int = 0
    heard: list[Heard] = field(default_factory=list)
    voice_start: float | None = None  # when the first voiced packet was heard (s after the first)
    _caller: bytearray = field(default_factory=bytearray)
    _pending: list[tuple[float, bytes]] = field(default_factory=list)
    _peer: tuple[str, int] | None = None
    _t0: float | None = None
    _started: asyncio.Event = field(default_factory=asyncio.Event)
    _echo: deque[bytes] = field(default_factory=deque)
    _delay_frames: int = 3
    _protocol: _Protocol | None = None
    _tasks: TaskOwner = field(default_factory=lambda: TaskOwner("rtp-line"))

    def say_after_voice(self, at_s: float, pcm: bytes) -> None:
        """The caller says `pcm` `at_s` after the first voiced packet heard (the greeting's
        start, whatever silence Asterisk sent before it)."""
        if self.voice_start is None:
            self._pending.append((at_s, pcm))
        else:
            self.say(self.voice_start + at_s, pcm)

    def say(self, at_s: float, pcm: bytes) -> None:
        """The caller says `pcm` (8 kHz s16le) from `at_s` after the first packet heard."""
        start = int(at_s * SAMPLE_RATE) * 2
        if len(self._caller) < start + len(pcm):
            self._caller += bytes(start + len(pcm) - len(self._caller))
        mixed = audioop.add(bytes(self._caller[start : start + len(pcm)]), pcm, 2)
        self._caller[start : start + len(pcm)] = mixed

    async def __aenter__(self) -> RtpLine:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=("127.0.0.1", self.port)
        )
        self._protocol = protocol
        self.port = int(transport.get_extra_info("sockname")[1])
        self._delay_frames = max(1, self.echo_delay_ms // 20)
        self._echo = deque([bytes(FRAME_BYTES)] * self._delay_frames)
        self._tasks.spawn(self._send(), "send")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._tasks.aclose()
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()

    def _received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2 or data[1] & 0x7F != 0:
            return  # not PCMU RTP (RFC 4733 events, RTCP)
        now = asyncio.get_running_loop().time()
        if self._t0 is None:
            self._t0, self._peer = now, addr
            self._started.set()
        cc = data[0] & 0x0F
        pcm = audioop.ulaw2lin(data[12 + 4 * cc :], 2)
        heard = Heard(now - self._t0, pcm)
        self.heard.append(heard)
        if self.voice_start is None and heard.rms >= VOICED_RMS:
            self.voice_start = heard.t
            for at_s, said in self._pending:
                self.say(heard.t + at_s, said)
            self._pending.clear()
        if self.echo_db is not None and len(pcm) == FRAME_BYTES:
            self._echo.append(audioop.mul(pcm, 2, 10 ** (self.echo_db / 20)))

    def _frame(self, i: int) -> bytes:
        start = i * FRAME_BYTES
        frame = bytes(self._caller[start : start + FRAME_BYTES]).ljust(FRAME_BYTES, b"\0")
        if self.echo_db is not None and self._echo:
            # The reflection of the frame heard `echo_delay_ms` ago (the queue starts with that
            # much silence; a queue grown by jitter is cut back so the delay stays put).
            while len(self._echo) > self._delay_frames + 3:
                self._echo.popleft()
            frame = audioop.add(frame, self._echo.popleft(), 2)
        return frame

    async def _send(self) -> None:
        await self._started.wait()
        loop = asyncio.get_running_loop()
        assert self._t0 is not None and self._peer is not None and self._protocol is not None
        transport = self._protocol.transport
        assert transport is not None
        seq, ts = 1, 0
        for i in range(int(self.duration_s / _PACKET_S)):
            delay = self._t0 + i * _PACKET_S - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            payload = audioop.lin2ulaw(self._frame(i), 2)
            header = struct.pack(
                "!BBHII", 0x80, (0x80 if i == 0 else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, _SSRC
            )
            transport.sendto(header + payload, self._peer)
            seq += 1
            ts += 160

    def caller_onset(self, after_s: float, rms: int = 200) -> float | None:
        """The start of the caller's first 20 ms louder than `rms` at or after `after_s`."""
        first = int(after_s / _PACKET_S)
        for i in range(first, len(self._caller) // FRAME_BYTES):
            if audioop.rms(bytes(self._caller[i * FRAME_BYTES : (i + 1) * FRAME_BYTES]), 2) >= rms:
                return i * _PACKET_S
        return None

    def voiced_between(self, start_s: float, end_s: float, rms: int = 200) -> list[Heard]:
        """Packets heard in [start_s, end_s) louder than `rms`."""
        return [h for h in self.heard if start_s <= h.t < end_s and h.rms >= rms]
