"""What reading AudioSocket legs in the shared tick would save: receiver CPU per socket-second.

An experiment, not adopted (bench/README.md, section 1b: the bridge saved about 0.1 ms per
call-second, and either the tick's pacing or one more bot frame over a barge-in paid for it).

`python -m bench.read_modes [--steps 250,500] [--duration 8] [--repeat 3] [--json FILE]`.
Two processes, each pinned to its own core: a sender with N connected TCP loopback sockets that
writes one 323-byte AudioSocket SLIN message (3-byte header + 320 bytes, one 20 ms frame) per
socket every 20 ms, the sockets spread over the period in `--slots` 1 ms slots as independent
Asterisk channels would send them (`--slots 1`: all at once, as the capacity bench's callers
do); and a receiver, an asyncio loop, in one of these modes (read + write):

- `proto`: an `asyncio.Protocol` per socket, as the bridge does now: one epoll event per frame,
  `data_received(bytes)`, the real `Decoder.lone_frame` and a call into a sink.
- `polled`: the sockets are not registered with the loop; a 20 ms `call_at` tick does one
  non-blocking `recv_into` per socket into that socket's preallocated buffer (again while it
  filled the buffer), then the same decode and sink call.
- `bproto`: as `proto`, but an `asyncio.BufferedProtocol`: the transport reads with `recv_into`
  into one buffer shared by every socket (`get_buffer`), the read copied out as bytes once.
- `reader`: no transport; `loop.add_reader` per socket with our own callback (non-blocking
  `recv_into` the shared buffer, copy, decode, sink): asyncio's transport layers skipped. Only
  with write `send` or `-` (a transport would own the descriptor).
- a `w` before a mode (`wproto-send`): the receiver's heap first warmed as the bridge's is
  (glibc's mmap threshold raised: see `_receiver`); else each 256 KiB read of an
  `asyncio.Protocol` costs three more system calls than in the bridge.
- write `-` (none), `tw` (`transport.write` of one 323-byte frame per socket per tick, the
  pacer's path now; in `polled` mode the transport exists with its reading paused) or `send`
  (`sock.send` of the same frame).

Reported: the receiver's CPU time (user + sys, `resource.getrusage`) over the timed window per
socket-second, in ms, and the frames it read per socket-second (50 when it kept up). Every mode
has the 20 ms tick (the bridge always runs its pacer). Repeats are interleaved (repeat, N, mode).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import socket
import statistics
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection

from bridge.audiosocket.protocol import Decoder, encode_audio

FRAME_S = 0.02
MESSAGE = encode_audio(bytes(320))  # 323 bytes
SETTLE_S = 1.0  # connections up, loop running, before the timed window
READ_BUF = 4096  # per socket: a dozen frames, more than a stalled tick leaves queued
MODES = ("proto-", "polled-", "proto-tw", "polled-tw", "proto-send", "polled-send")
# The transport's read path vs two leaner ones (not in the default run): `--modes proto-send,bproto-send,reader-send`.
MORE_MODES = ("bproto-tw", "bproto-send", "reader-send", "reader-")
_SHARED = memoryview(bytearray(256 * 1024))  # asyncio's own max_size per read


@dataclass(frozen=True, slots=True)
class Run:
    """One receiver run: `ms_per_sock_s` of CPU, `frames_per_sock_s` read (50 = kept up)."""

    mode: str
    n: int
    repeat: int
    ms_per_sock_s: float
    user_ms_per_sock_s: float
    sys_ms_per_sock_s: float
    frames_per_sock_s: float


class _Sink:
    """Stands in for the call's receiver (`TelephonyGateway.on_audio`): counts frames."""

    __slots__ = ("frames",)

    def __init__(self) -> None:
        self.frames = 0

    def on_audio(self, pcm: bytes, sample_rate: int) -> None:
        self.frames += 1


class _Proto(asyncio.Protocol):
    """Mode `proto`: the bridge's inbound path now (`ServerProtocol.data_received`, hot path)."""

    def __init__(self, sink: _Sink, reading: bool) -> None:
        self._sink = sink
        self._decoder = Decoder()
        self._reading = reading
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self._reading:
            self.transport.pause_reading()  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        pcm = self._decoder.lone_frame(data)
        if pcm is not None:
            self._sink.on_audio(pcm, 8000)
            return
        for _msg in self._decoder.feed(data):
            self._sink.frames += 1


class _BufferedProto(asyncio.BufferedProtocol):
    """Mode `bproto`: `_Proto`'s work, the reads landing in the shared buffer."""

    def __init__(self, sink: _Sink) -> None:
        self._inner = _Proto(sink, reading=True)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return _SHARED

    def buffer_updated(self, nbytes: int) -> None:
        self._inner.data_received(bytes(_SHARED[:nbytes]))


def _reader(sock: socket.socket, sink: _Sink) -> None:
    """Mode `reader`: a callback per socket straight from the loop's selector."""
    decoder = Decoder()
    recv_into = sock.recv_into

    def on_readable() -> None:
        try:
            n = recv_into(_SHARED)
        except BlockingIOError:
            return
        data = bytes(_SHARED[:n])
        pcm = decoder.lone_frame(data)
        if pcm is not None:
            sink.on_audio(pcm, 8000)
        else:
            for _msg in decoder.feed(data):
                sink.frames += 1

    asyncio.get_running_loop().add_reader(sock.fileno(), on_readable)


class _Polled:
    """Mode `polled`: one socket drained by the tick into its own preallocated buffer."""

    __slots__ = ("_buf", "_decoder", "_mv", "_sink", "sock")

    def __init__(self, sock: socket.socket, sink: _Sink) -> None:
        self.sock = sock
        self._sink = sink
        self._decoder = Decoder()
        self._buf = bytearray(READ_BUF)
        self._mv = memoryview(self._buf)

    def drain(self) -> None:
        recv_into = self.sock.recv_into
        while True:
            try:
                n = recv_into(self._buf)
            except BlockingIOError:
                return
            # (The experiment's decoder took the shared buffer and `n`, one copy of the payload;
            # the bridge's takes the read's bytes: one allocation more per read than measured.)
            data = bytes(self._mv[:n])
            pcm = self._decoder.lone_frame(data)
            if pcm is not None:
                self._sink.on_audio(pcm, 8000)
            else:
                for _msg in self._decoder.feed(data):
                    self._sink.frames += 1
            if n < READ_BUF:
                return


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def _receiver(mode: str, n: int, duration: float, conn: Connection, warm_heap: bool = False) -> None:
    _pin(0)
    if warm_heap:
        # As in the bridge (numpy and ONNX Runtime loaded): freeing a block glibc had mmapped
        # raises its mmap threshold above asyncio's 256 KiB reads, which then come from the
        # heap; in a fresh process each such read is an mmap, an mremap and a munmap.
        del bytearray(1 << 20)[:]
    listener = socket.create_server(("127.0.0.1", 0), backlog=min(n, 1024))
    conn.send(listener.getsockname()[1])
    socks = []
    for _ in range(n):
        s, _addr = listener.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
    listener.close()
    conn.send(asyncio.run(_receive(mode, socks, duration)))


async def _receive(mode: str, socks: list[socket.socket], duration: float) -> tuple[float, float, int]:
    read, write = mode.split("-")
    loop = asyncio.get_running_loop()
    sink = _Sink()
    protos: list[_Proto | _BufferedProto] = []
    for s in socks:
        if read == "reader":
            _reader(s, sink)
            continue
        proto = _BufferedProto(sink) if read == "bproto" else _Proto(sink, reading=read == "proto")
        await loop.connect_accepted_socket(lambda p=proto: p, s)  # type: ignore[misc]
        protos.append(proto)
    polled = [_Polled(s, sink) for s in socks] if read == "polled" else []
    transports = [p.transport for p in protos]
    sends = [s.send for s in socks]

    def tick() -> None:
        for p in polled:
            p.drain()
        if write == "tw":
            for t in transports:
                t.write(MESSAGE)  # type: ignore[union-attr]
        elif write == "send":
            for send in sends:
                try:  # noqa: SIM105 - contextlib.suppress per frame would be measured too
                    send(MESSAGE)
                except BlockingIOError:
                    pass

    t0 = loop.time()
    k = 0

    def on_tick() -> None:
        nonlocal k
        k += 1
        loop.call_at(t0 + (k + 1) * FRAME_S, on_tick)
        tick()

    loop.call_at(t0 + FRAME_S, on_tick)
    await asyncio.sleep(SETTLE_S)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    f0 = sink.frames
    await asyncio.sleep(duration)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, sink.frames - f0


def _sender(port: int, n: int, slots: int, stop_at: float) -> None:
    _pin(1)
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
    groups = [socks[i::slots] for i in range(slots)]
    slot_s = FRAME_S / slots
    t0 = time.monotonic()
    k = 0
    sink = bytearray(65536)
    while time.monotonic() < stop_at:
        for s in groups[k % slots]:
            try:
                s.send(MESSAGE)
            except BlockingIOError:
                pass
            except OSError:  # the receiver is done and closed its end
                return
        if k % (slots * 5) == 0:  # what the receiver writes back, every 100 ms
            for s in socks:
                try:
                    while s.recv_into(sink) == len(sink):
                        pass
                except BlockingIOError:
                    pass
                except OSError:
                    return
        k += 1
        delay = t0 + k * slot_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    for s in socks:
        s.close()


def run_one(mode: str, n: int, duration: float, slots: int, repeat: int) -> Run:
    """One sender + receiver pair for `duration` s of timed window in `mode`."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    warm = mode.startswith("w")  # `wproto-send`: `proto-send` on a heap as warm as the bridge's
    recv = ctx.Process(target=_receiver, args=(mode.removeprefix("w"), n, duration, child, warm))
    recv.start()
    port = parent.recv()
    stop_at = time.monotonic() + 5.0 + SETTLE_S + duration + 1.0
    send = ctx.Process(target=_sender, args=(port, n, slots, stop_at))
    send.start()
    user, sys_, frames = parent.recv()
    send.join(timeout=30)
    recv.join(timeout=30)
    per = n * duration
    return Run(mode, n, repeat, (user + sys_) * 1e3 / per, user * 1e3 / per, sys_ * 1e3 / per, frames / per)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.read_modes", description=__doc__.split("\n")[0])
    ap.add_argument("--steps", default="250,500", help="sockets per run, comma-separated")
    ap.add_argument("--duration", type=float, default=8.0, help="timed window per run, s")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--slots", type=int, default=20, help="1 ms send slots per 20 ms (1: all at once)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated; also {', '.join(MORE_MODES)}")
    ap.add_argument("--json", default="", help="write the runs here")
    args = ap.parse_args()
    steps = [int(x) for x in args.steps.split(",")]
    modes = args.modes.split(",")
    known = {m.split("-")[0] for m in MODES + MORE_MODES}
    for mode in modes:
        read, _, write = mode.removeprefix("w").partition("-")
        if read not in known or write not in ("", "tw", "send") or (read == "reader" and write == "tw"):
            ap.error(
                f"--modes: {mode!r} is not a mode (e.g. {', '.join(MODES + MORE_MODES)}; `w` before any)"
            )
    runs: list[Run] = []
    for r in range(1, args.repeat + 1):
        for n in steps:
            for mode in modes:
                run = run_one(mode, n, args.duration, args.slots, r)
                runs.append(run)
                print(
                    f"# r{r} N={n} {mode:<12} {run.ms_per_sock_s:.3f} ms/sock-s"
                    f" (user {run.user_ms_per_sock_s:.3f}, sys {run.sys_ms_per_sock_s:.3f})"
                    f" frames/sock-s {run.frames_per_sock_s:.1f}",
                    flush=True,
                )
    print(f"\nreceiver CPU, ms per socket-second (median of {args.repeat}; min-max), slots={args.slots}")
    print(f"{'N':>5} {'mode':<12} {'total':>16} {'user':>7} {'sys':>7} {'frames/s':>9}")
    for n in steps:
        for mode in modes:
            rs = [x for x in runs if x.n == n and x.mode == mode]
            tot = [x.ms_per_sock_s for x in rs]
            print(
                f"{n:>5} {mode:<12} {statistics.median(tot):>6.3f} ({min(tot):.3f}-{max(tot):.3f})"
                f" {statistics.median(x.user_ms_per_sock_s for x in rs):>7.3f}"
                f" {statistics.median(x.sys_ms_per_sock_s for x in rs):>7.3f}"
                f" {statistics.median(x.frames_per_sock_s for x in rs):>9.1f}"
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(
                {"slots": args.slots, "duration_s": args.duration, "runs": [asdict(x) for x in runs]},
                fh,
                indent=1,
            )


if __name__ == "__main__":
    main()
