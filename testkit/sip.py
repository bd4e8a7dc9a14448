"""SIP/RTP test harness: caller audio as an RTP pcap, sipp runs, capture of what Asterisk sends.

- `write_rtp_pcap`: G.711 u-law RTP (PT 0, 160-byte payloads every 20 ms) with Ethernet/IPv4/UDP
  headers, the format sipp's `play_pcap_audio` replays; RFC 4733 DTMF events (PT 101) can be
  embedded (sipp's own DTMF action sends the wrong payload type), and the audio is padded with
  silence for the whole call (the dialplan AudioSocket() path hangs up after 2 s of no audio).
- `run_sipp`: one sipp call from a scenario in `scenarios/` (placeholders `@NAME@` filled in).
- `Capture`: tcpdump on `lo` with a port filter, started and stopped reliably.
- `analyse`: RTP toward the sipp media port (arrival times, u-law decode, per-packet energy,
  voiced span, pacing) and whether Asterisk sent a BYE to sipp; `near_tone` picks a tone's
  packets (a single DFT bin's share of the packet's energy).

Everything is on 127.0.0.1. `play_pcap_audio` and tcpdump need root.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import struct
import subprocess
import warnings
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from orchestrator.adapters.tts.espeak import espeak_pcm_sync
from orchestrator.audio import FRAME_BYTES, SAMPLE_RATE, resample

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # stdlib audioop on 3.11/3.12
    import audioop

SCENARIOS = Path(__file__).parent / "scenarios"
ASTERISK_SIP = ("127.0.0.1", 5060)
UAC_SIP_PORT = 5061  # sipp caller
UAS_SIP_PORT = 5062  # sipp callee (pjsip.conf aor contact)
UAC_MEDIA_PORT = 16000
UAS_MEDIA_PORT = 17000
RTP_PT_PCMU = 0
RTP_PT_DTMF = 101
PACKET_S = 0.02
VOICED_RMS = 200  # s16 RMS above which a 20 ms packet counts as voiced (digital silence is 0)

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # LINKTYPE_ETHERNET
_ETH = b"\x00" * 12 + b"\x08\x00"  # loopback MACs are zero; EtherType IPv4
_DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}


# --- caller audio ---
def espeak_pcm(text: str, *, voice: str = "ru", rate_wpm: int = 150) -> bytes:
    """Synthesize `text` with espeak-ng; returns 8 kHz s16le mono PCM."""
    return espeak_pcm_sync(text, voice=voice, speed_wpm=rate_wpm)


def wav_bytes_to_pcm8k(data: bytes) -> bytes:
    """Mono 16-bit WAV bytes (any rate) -> 8 kHz s16le PCM."""
    import io

    with wave.open(io.BytesIO(data)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"WAV must be mono 16-bit, got {w.getnchannels()} ch x {w.getsampwidth()} B")
        rate = w.getframerate()
        pcm = w.readframes(w.getnframes())
    return resample(pcm, rate, SAMPLE_RATE)


def tone_pcm(seconds: float, *, hz: float = 440.0, amplitude: int = 8000) -> bytes:
    """A sine tone as 8 kHz s16le PCM."""
    import math

    n = int(seconds * SAMPLE_RATE)
    return b"".join(
        struct.pack("<h", int(amplitude * math.sin(2 * math.pi * hz * i / SAMPLE_RATE))) for i in range(n)
    )


def write_wav(path: Path, pcm: bytes, rate: int = SAMPLE_RATE) -> None:
    """Write s16le mono PCM as a WAV file."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


def write_rtp_pcap(
    path: Path,
    pcm: bytes,
    *,
    lead_silence_s: float = 0.5,
    total_s: float | None = None,
    dtmf: Sequence[tuple[float, str]] = (),
    dtmf_ms: int = 100,
    src_port: int = UAC_MEDIA_PORT,
    dst_port: int = 10000,
) -> int:
    """Write 8 kHz `pcm` as a u-law RTP pcap for sipp; returns the number of RTP packets.

    The audio starts after `lead_silence_s` and is padded with silence up to `total_s`. Each
    `(at_s, digit)` in `dtmf` replaces the audio at that time with an RFC 4733 event of
    `dtmf_ms` (marker on the first packet, three end packets with the E bit, as phones send).
    """
    frames = bytearray(int(lead_silence_s / PACKET_S) * FRAME_BYTES) + pcm
    if len(frames) % FRAME_BYTES:
        frames += bytes(FRAME_BYTES - len(frames) % FRAME_BYTES)
    n_audio = len(frames) // FRAME_BYTES
    n_total = max(n_audio, round(total_s / PACKET_S)) if total_s is not None else n_audio
    frames += bytes((n_total - n_audio) * FRAME_BYTES)

    dtmf_at: dict[int, tuple[str, int]] = {}  # packet index -> (digit, packets in the event)
    event_packets = max(1, dtmf_ms // 20)
    for at_s, digit in dtmf:
        if digit not in _DTMF_EVENTS:
            raise ValueError(f"DTMF digit {digit!r} at {at_s} s: not one of 0-9 * # A-D")
        dtmf_at[round(at_s / PACKET_S)] = (digit, event_packets)

    ssrc, seq, ts = 0x5EED1234, 1, 0
    out = bytearray(_PCAP_HEADER)
    i = 0
    while i < n_total:
        if i in dtmf_at:
            digit, count = dtmf_at[i]
            event = _DTMF_EVENTS[digit]
            for k in range(count + 3):  # `count` updates, then 3 end packets
                end = k >= count
                duration = min(k + 1, count) * 160
                payload = struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)
                out += _packet(i + k, seq, ts, RTP_PT_DTMF, k == 0, ssrc, payload, src_port, dst_port)
                seq += 1
            i += count + 3
            ts += (count + 3) * 160
            continue
        lin = frames[i * FRAME_BYTES : (i + 1) * FRAME_BYTES]
        out += _packet(
            i, seq, ts, RTP_PT_PCMU, i == 0, ssrc, audioop.lin2ulaw(bytes(lin), 2), src_port, dst_port
        )
        seq += 1
        ts += 160
        i += 1
    path.write_bytes(out)
    return seq - 1


def _packet(
    index: int, seq: int, ts: int, pt: int, marker: bool, ssrc: int, payload: bytes, sport: int, dport: int
) -> bytes:
    rtp = (
        struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
        + payload
    )
    udp = struct.pack("!HHHH", sport, dport, 8 + len(rtp), 0) + rtp
    ip_hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), index & 0xFFFF, 0, 64, 17, 0,
        bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]),
    )  # fmt: skip
    ip_hdr = ip_hdr[:10] + struct.pack("!H", _ip_checksum(ip_hdr)) + ip_hdr[12:]
    frame = _ETH + ip_hdr + udp
    usec = index * 20_000
    return struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame)) + frame


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


# --- sipp ---
@dataclass
class SippResult:
    returncode: int
    output: str
    errors: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        return f"sipp exit {self.returncode}\n--- errors ---\n{self.errors[-3000:]}\n--- output ---\n{self.output[-2000:]}"


def render_scenario(name: str, dest_dir: Path, **values: str | int | float | Path) -> Path:
    """Copy scenarios/<name>.xml to `dest_dir` with every `@KEY@` replaced by values[key]."""
    text = (SCENARIOS / f"{name}.xml").read_text()
    for key, value in values.items():
        text = text.replace(f"@{key.upper()}@", str(value))
    left = sorted(set(re.findall(r"@([A-Z_]+)@", text)))
    if left:
        raise ValueError(f"scenario {name}: placeholders without a value: {left}")
    path = dest_dir / f"{name}.xml"
    path.write_text(text)
    return path


async def run_sipp(
    scenario: Path,
    *,
    local_port: int,
    media_port: int,
    work_dir: Path,
    remote: tuple[str, int] | None = ASTERISK_SIP,
    timeout_s: float = 30.0,
    calls: int = 1,
    extra: Sequence[str] = (),
    netns: str | None = None,
    rate: float | None = None,
    concurrent: int | None = None,
) -> SippResult:
    """Run `calls` sipp calls at once (as UAC if `remote` is given, else as UAS), bounded;
    inside network namespace `netns` (`ip netns exec`) if given. `rate` (calls/s) and
    `concurrent` (at most this many at a time) spread them out instead."""
    exe = shutil.which("sipp")
    if exe is None:
        raise RuntimeError("sipp is not installed (Debian package sip-tester; make system-deps)")
    err_file = work_dir / f"{scenario.stem}.errors.log"
    msg_file = work_dir / f"{scenario.stem}.messages.log"
    args = [
        *netns_prefix(netns), exe, "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(local_port),
        "-mi", "127.0.0.1", "-mp", str(media_port), "-m", str(calls),
        "-l", str(concurrent or calls), "-r", f"{rate:g}" if rate else str(max(calls, 1)),
        "-nostdin",
        "-timeout", f"{int(timeout_s)}s", "-timeout_error", "-max_recv_loops", "1000",
        "-trace_err", "-error_file", str(err_file), "-trace_msg", "-message_file", str(msg_file),
        *extra,
    ]  # fmt: skip
    if remote is not None:
        args.append(f"{remote[0]}:{remote[1]}")
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        cwd=work_dir, start_new_session=True,
    )  # fmt: skip
    try:
        async with asyncio.timeout(timeout_s + 10):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    errors = err_file.read_text(errors="replace") if err_file.exists() else ""
    return SippResult(proc.returncode or 0, out.decode(errors="replace"), errors)


def netns_prefix(netns: str | None) -> list[str]:
    """The command prefix that runs a program inside network namespace `netns` (none: as is)."""
    return [] if netns is None else ["ip", "netns", "exec", netns]


# --- capture ---
class Capture:
    """tcpdump on `lo` (of network namespace `netns` if given) writing `path`; `async with`
    starts it (ready) and stops it (flushed)."""

    def __init__(self, path: Path, bpf: str, *, netns: str | None = None) -> None:
        self.path = path
        self.bpf = bpf
        self.netns = netns
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Capture:
        exe = shutil.which("tcpdump")
        if exe is None:
            raise RuntimeError("tcpdump is not installed (make system-deps)")
        self._proc = await asyncio.create_subprocess_exec(
            # --immediate-mode: without it libpcap hands packets over in blocks, and the last
            # block (the BYE!) is lost when we stop it.
            *netns_prefix(self.netns), exe, "-i", "lo", "--immediate-mode", "-U", "-n", "-s", "2048", "-w", str(self.path), self.bpf,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self._proc.stderr is not None
        try:
            async with asyncio.timeout(10):
                # tcpdump prints "listening on lo ..." once the capture is armed.
                while b"listening on" not in (line := await self._proc.stderr.readline()):
                    if not line:
                        raise RuntimeError(f"tcpdump exited: rc {await self._proc.wait()}")
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGINT)  # flushes and closes the file
        try:
            async with asyncio.timeout(5):
                await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()


# --- analysis ---
@dataclass
class RtpPacket:
    t: float  # capture time, s
    seq: int
    pt: int
    marker: bool
    payload: bytes
    rms: int = 0


@dataclass
class Analysis:
    rtp: list[RtpPacket] = field(default_factory=list)
    bye_times: list[float] = field(default_factory=list)
    sip_methods: list[str] = field(default_factory=list)

    @property
    def audio(self) -> list[RtpPacket]:
        return [p for p in self.rtp if p.pt in (0, 8)]

    @property
    def voiced(self) -> list[RtpPacket]:
        return [p for p in self.audio if p.rms >= VOICED_RMS]

    @property
    def bye_seen(self) -> bool:
        return bool(self.bye_times)

    def pacing(self) -> Pacing:
        """Pacing over the voiced span (first to last voiced packet, every packet in between)."""
        voiced = self.voiced
        if len(voiced) < 2:
            return Pacing(len(voiced), 0.0, 0.0, 0.0, 0)
        t0, t1 = voiced[0].t, voiced[-1].t
        span = [p for p in self.audio if t0 <= p.t <= t1]
        gaps = [b.t - a.t for a, b in zip(span, span[1:], strict=False)]
        return Pacing(
            packets=len(span),
            span_s=t1 - t0,
            packets_per_s=(len(span) - 1) / (t1 - t0) if t1 > t0 else float("inf"),
            max_gap_s=max(gaps),
            burst_packets=sum(1 for g in gaps if g < 0.005),
        )


@dataclass
class Pacing:
    packets: int
    span_s: float
    packets_per_s: float
    max_gap_s: float
    burst_packets: int  # packets that arrived < 5 ms after the previous one


def ulaw_to_pcm(payload: bytes) -> bytes:
    """G.711 u-law bytes -> s16le PCM."""
    return bytes(audioop.ulaw2lin(payload, 2))


def _udp_packets(path: Path) -> Iterator[tuple[float, int, int, bytes]]:
    """(capture time, source port, destination port, UDP payload) of every IPv4 UDP packet."""
    data = path.read_bytes()
    if len(data) < 24:
        raise ValueError(f"{path}: not a pcap file ({len(data)} bytes)")
    magic, _, _, _, _, _, linktype = struct.unpack("<IHHiIII", data[:24])
    if magic != 0xA1B2C3D4:
        raise ValueError(f"{path}: unsupported pcap magic {magic:#x}")
    link_len = {1: 14, 113: 16}.get(linktype)
    if link_len is None:
        raise ValueError(f"{path}: unsupported link type {linktype}")
    off = 24
    while off + 16 <= len(data):
        sec, usec, caplen, _ = struct.unpack("<IIII", data[off : off + 16])
        pkt = data[off + 16 : off + 16 + caplen]
        off += 16 + caplen
        ip = pkt[link_len:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        sport, dport = struct.unpack("!HH", ip[ihl : ihl + 4])
        yield sec + usec / 1e6, sport, dport, ip[ihl + 8 :]


def _rtp(t: float, udp_payload: bytes) -> RtpPacket | None:
    if len(udp_payload) < 12 or udp_payload[0] >> 6 != 2:
        return None
    b1 = udp_payload[1]
    seq = struct.unpack("!H", udp_payload[2:4])[0]
    cc = udp_payload[0] & 0x0F
    p = RtpPacket(t, seq, b1 & 0x7F, bool(b1 & 0x80), udp_payload[12 + 4 * cc :])
    if p.pt == 0:
        p.rms = int(audioop.rms(audioop.ulaw2lin(p.payload, 2), 2))
    elif p.pt == 8:
        p.rms = int(audioop.rms(audioop.alaw2lin(p.payload, 2), 2))
    return p


def tone_share(packet: RtpPacket, hz: float) -> float:
    """How much of one G.711 packet's energy is a `hz` sine (0..1; about 0.9 and up for a pure
    tone, low for speech): a single-bin DFT over the packet's samples."""
    law = audioop.alaw2lin if packet.pt == 8 else audioop.ulaw2lin
    x = np.frombuffer(law(packet.payload, 2), dtype=np.int16).astype(np.float64)
    total = float(np.dot(x, x))
    if total == 0.0:
        return 0.0
    phase = 2 * np.pi * hz / SAMPLE_RATE * np.arange(len(x))
    c, s = float(np.dot(x, np.cos(phase))), float(np.dot(x, np.sin(phase)))
    return min(1.0, 2 * (c * c + s * s) / (len(x) * total))


def near_tone(packets: list[RtpPacket], hz: float, *, share: float = 0.7) -> list[RtpPacket]:
    """The packets that are mostly a `hz` tone (`tone_share` at least `share`)."""
    return [p for p in packets if tone_share(p, hz) >= share]


def rtp_from(path: Path, *, src_port: int) -> list[RtpPacket]:
    """RTP packets in a capture sent from `src_port` (e.g. what the sipp caller sent)."""
    return [p for t, sport, _, payload in _udp_packets(path) if sport == src_port and (p := _rtp(t, payload))]


def analyse(path: Path, *, media_port: int, sip_port: int) -> Analysis:
    """Parse a capture: RTP sent to `media_port`, SIP requests sent to `sip_port`."""
    result = Analysis()
    for t, _, dport, udp_payload in _udp_packets(path):
        if dport == media_port:
            p = _rtp(t, udp_payload)
            if p is not None:
                result.rtp.append(p)
        elif dport == sip_port and udp_payload[:3].isalpha():
            method = udp_payload.split(b" ", 1)[0].decode(errors="replace")
            if method.startswith("SIP/"):
                continue  # a response, not a request
            result.sip_methods.append(method)
            if method == "BYE":
                result.bye_times.append(t)
    return result
