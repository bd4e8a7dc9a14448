"""The fake-caller side of the capacity benchmark; runs in its own process, pinned to its own core.

Each caller is a `FakeAsterisk` sending 20 ms frames in real time (from one shared `Pacer`, as
`FakeCallerPool` does) and timing every audio message the bridge sends back by the kernel's
receive timestamp (SO_TIMESTAMPNS, read with `recvmsg`), so how late the caller process itself
got round to reading is not in the figure. Only running counters and one shared histogram are
kept, so the caller side stays cheap and the bridge's core is the one that saturates.

A caller takes turns with the bot, as a person on a call does (see `BenchCaller`): it says its
Russian espeak-ng phrase once the bot has paused, sometimes talks over the bot instead
(`BARGE_IN_SHARE` of the bot's turns), and otherwise sends line noise at `LINE_NOISE_DBFS`.

Driven over a `multiprocessing` pipe by `bench.hotpath` with tuples:
  ("connect", port, [uuid str, ...]) -> ("connected", n)
  ("measure", t0, t1)                -> ("stats", CallerStats)   (t0/t1 on the shared monotonic clock)
  ("hangup",)                        -> ("done", 0)
  ("exit",)                          -> process ends
"""

from __future__ import annotations

import array
import asyncio
import audioop
import contextlib
import logging
import math
import os
import random
import resource
import socket
import struct
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bench.common import GcTimer, Histogram
from bridge.audiosocket.protocol import encode_uuid
from bridge.pacer import Pacer
from orchestrator.audio import FRAME_BYTES
from testkit.fake_asterisk import FakeAsterisk, read_wav_8k

BURST_S = 0.005  # two frames closer than this arrived as a burst
GAP_S = 0.040  # longer than two frame periods: the caller's jitter buffer had to stretch
BAD_GAP_S = 0.060  # three frame periods: heard as a drop-out

# How the callers talk. Until this bench took turns, each caller looped its phrase with 2 s of
# digital silence regardless of the bot: it talked over the bot for half of the bot's speech,
# and its pauses were exact zeros. A caller on a bot call mostly listens while the bot talks,
# answers in its pauses, and now and then cuts in; a phone line is never digitally silent.
LINE_NOISE_DBFS = -65.0  # a quiet phone line between words: -60..-70 dBFS
BARGE_IN_SHARE = 0.25  # of the bot's turns the caller talks over (starting 1-3 s into the turn)
REPLY_AFTER_FRAMES = (15, 35)  # the caller answers 0.3-0.7 s after the bot went quiet
TURN_GAP_FRAMES = 50  # bot audio after 1 s of its silence begins a new bot turn


def line_noise(frames: int, seed: int) -> bytes:
    """`frames` 20 ms frames of white noise at `LINE_NOISE_DBFS` RMS, s16 8 kHz."""
    rnd = random.Random(seed)
    sigma = 32768.0 * 10.0 ** (LINE_NOISE_DBFS / 20.0)
    samples = array.array("h", (round(rnd.gauss(0.0, sigma)) for _ in range(frames * FRAME_BYTES // 2)))
    return samples.tobytes()


class ArrivalWindow:
    """Inter-arrival statistics of bot frames over all callers, recorded only while `measuring`."""

    __slots__ = ("bursts", "gaps", "bad_gaps", "hist", "measuring")

    def __init__(self) -> None:
        self.measuring = False
        self.hist = Histogram()
        self.bursts = 0
        self.gaps = 0
        self.bad_gaps = 0

    def reset(self) -> None:
        """Start a new measurement window."""
        self.hist = Histogram()
        self.bursts = self.gaps = self.bad_gaps = 0

    def add(self, gap: float) -> None:
        """One inter-arrival time, in seconds."""
        self.hist.add(gap)
        if gap < BURST_S:
            self.bursts += 1
        elif gap > GAP_S:
            self.gaps += 1
            if gap > BAD_GAP_S:
                self.bad_gaps += 1


# SCM_TIMESTAMPNS carries a struct timespec: seconds and nanoseconds, two native longs.
_TIMESPEC = struct.Struct("@qq")
_ANC_BYTES = socket.CMSG_SPACE(_TIMESPEC.size)
_SO_TIMESTAMPNS: int = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; the module lacks it before 3.12
_READ_BYTES = 65536


class BenchCaller(FakeAsterisk):
    """A fake caller that takes turns with the bot and times the bridge's frames.

    Turns: bot audio (any frame that is not all zeros) after `TURN_GAP_FRAMES` of none begins a
    bot turn; the caller says `phrase` once per bot turn, `REPLY_AFTER_FRAMES` after the bot went
    quiet, or in `BARGE_IN_SHARE` of the turns 1-3 s into it, over the bot. Between its phrases
    it sends `noise` (line noise, also mixed under the phrase), from `offset` on.

    Reads its socket itself with `recvmsg` (the transport's reading is paused) to get each read's
    kernel receive timestamp; writes still go through the transport.
    """

    def __init__(
        self,
        call_uuid: uuid.UUID,
        phrase: bytes,
        noise: bytes,
        offset: int,
        window: ArrivalWindow,
        rnd: random.Random,
    ) -> None:
        super().__init__(call_uuid, keep_messages=False)
        self._phrase = phrase
        self._noise = noise
        self._noise_at = offset
        self._rnd = rnd
        self._window = window
        self._last_at: float | None = None
        self._arrived_at = 0.0  # kernel receive time of the read being handled (CLOCK_REALTIME, s)
        self._sock: socket.socket | None = None
        self.kernel_stamped = 0  # reads that carried a kernel timestamp
        self._quiet = TURN_GAP_FRAMES  # ticks since the bot's last audio frame arrived
        self._turn = -1  # ticks into the bot's current turn; -1: answered (or none yet)
        self._barge_at = -1  # tick of the turn at which the caller cuts in; -1: it waits
        self._reply_after = REPLY_AFTER_FRAMES[0]
        self.phrases = 0  # phrases started (turns taken)
        self.barge_ins = 0  # of which over the bot

    async def connect(self, host: str, port: int) -> None:
        """Connect on our own socket (so `recvmsg` is ours to call) and send the UUID."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._closed = loop.create_future()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            sock.setblocking(False)
            await loop.sock_connect(sock, (host, port))
            # asyncio allows one owner per fd: the transport writes on a duplicate of the socket,
            # we read the original (both are the one connection; it closes when both are closed).
            transport, _ = await loop.create_connection(lambda: self, sock=sock.dup())
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        transport.pause_reading()
        loop.add_reader(sock.fileno(), self._readable)
        transport.write(encode_uuid(self.uuid))

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data, anc, _flags, _addr = sock.recvmsg(_READ_BYTES, _ANC_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, anc = b"", []
        if not data:  # EOF (or a reset): stop reading and close as the transport would
            self._stop_reading()
            self.eof_received()
            if self._transport is not None:
                self._transport.close()
            return
        stamp = 0.0
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(cdata) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(cdata)
                stamp = sec + nsec * 1e-9
        if stamp:
            self.kernel_stamped += 1
        else:
            assert self._loop is not None
            stamp = time.time()  # no timestamp (not Linux?): the time we read it
        self._arrived_at = stamp
        self.data_received(data)

    def _stop_reading(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_reading()
        super().connection_lost(exc)

    def hangup(self) -> None:
        self._stop_reading()
        super().hangup()

    def tick(self) -> None:
        self._quiet += 1
        if self._turn >= 0:
            self._turn += 1
        if self.audio_queued < FRAME_BYTES:
            turn, answer = self._turn, self._quiet >= self._reply_after
            if turn >= 0 and (answer or 0 <= self._barge_at <= turn):
                self._turn = -1  # this bot turn is answered
                self.phrases += 1
                self.barge_ins += not answer
                self.play(self._phrase)
            else:
                noise, at = self._noise, self._noise_at
                self.play(noise[at : at + FRAME_BYTES])
                self._noise_at = (at + FRAME_BYTES) % len(noise)
        super().tick()

    def _bot_frame(self) -> None:
        """A frame of the bot's audio arrived."""
        if self._quiet >= TURN_GAP_FRAMES:  # a new bot turn
            rnd = self._rnd
            self._turn = 0
            self._barge_at = rnd.randint(50, 150) if rnd.random() < BARGE_IN_SHARE else -1
            self._reply_after = rnd.randint(*REPLY_AFTER_FRAMES)
        self._quiet = 0

    def data_received(self, data: bytes) -> None:
        before, voice = self.audio_count, self.voice_count
        super().data_received(data)
        n = self.audio_count - before
        if not n:
            return
        if self.voice_count != voice:
            self._bot_frame()
        now = self._arrived_at
        window = self._window
        if window.measuring and self._last_at is not None:
            window.add(now - self._last_at)
            for _ in range(n - 1):
                window.add(0.0)  # several frames in one read: they arrived together
        self._last_at = now


@dataclass(frozen=True, slots=True)
class CallerStats:
    """What the callers saw in one measurement window."""

    calls: int
    wall_s: float
    cpu_pct: float
    frames_sent: int
    frames_received: int
    voice_received: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    bursts: int
    gaps: int
    bad_gaps: int
    pacer_resyncs: int
    pacer_max_late_ms: float
    disconnected: int
    preempted: int
    gc_max_ms: float
    kernel_stamps: int  # reads timed by the kernel's receive timestamp (the rest: by the loop)
    phrases: int  # phrases the callers started (their turns)
    barge_ins: int  # of which over the bot


class CallerSide:
    """All fake callers of one step, on one pacer."""

    def __init__(self, clip: bytes) -> None:
        self._noise = line_noise(50, seed=5)
        # The phrase with the line's noise under it, trimmed to whole frames.
        n = len(clip) // FRAME_BYTES * FRAME_BYTES
        reps = math.ceil(n / len(self._noise))
        self._phrase = audioop.add(clip[:n], (self._noise * reps)[:n], 2)
        self._rnd = random.Random(7)
        self.window = ArrivalWindow()
        self.pacer = Pacer()
        self.callers: list[BenchCaller] = []

    async def connect(self, port: int, uuids: list[str]) -> int:
        """Connect one caller per UUID; each with its own random turn-taking."""
        for u in uuids:
            offset = self._rnd.randrange(len(self._noise) // FRAME_BYTES) * FRAME_BYTES
            rnd = random.Random(self._rnd.getrandbits(32))
            caller = BenchCaller(uuid.UUID(u), self._phrase, self._noise, offset, self.window, rnd)
            await caller.connect("127.0.0.1", port)
            self.callers.append(caller)
            self.pacer.add(caller)
            if not self.pacer.running:
                self.pacer.start()
        return len(self.callers)

    def _totals(self) -> tuple[int, int, int, int, int, int]:
        sent = recv = voice = stamped = phrases = barge_ins = 0
        for c in self.callers:
            sent += c.frames_sent
            recv += c.audio_count
            voice += c.voice_count
            stamped += c.kernel_stamped
            phrases += c.phrases
            barge_ins += c.barge_ins
        return sent, recv, voice, stamped, phrases, barge_ins

    async def measure(self, t0: float, t1: float) -> CallerStats:
        """Counters between loop times t0 and t1."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, t0 - loop.time()))
        start, cpu0, switches0 = loop.time(), time.process_time(), involuntary_switches()
        sent0, recv0, voice0, stamped0, phrases0, barge0 = self._totals()
        resyncs0 = self.pacer.resyncs
        self.pacer.max_lateness_s = 0.0
        self.window.reset()
        self.window.measuring = True
        gc_timer = GcTimer()
        await asyncio.sleep(max(0.0, t1 - loop.time()))
        self.window.measuring = False
        gc_timer.close()
        wall, cpu = loop.time() - start, time.process_time() - cpu0
        sent, recv, voice, stamped, phrases, barge_ins = self._totals()
        h = self.window.hist
        return CallerStats(
            calls=len(self.callers),
            wall_s=wall,
            cpu_pct=100 * cpu / wall,
            frames_sent=sent - sent0,
            frames_received=recv - recv0,
            voice_received=voice - voice0,
            p50_ms=1000 * h.percentile(50),
            p99_ms=1000 * h.percentile(99),
            max_ms=1000 * h.max_s,
            bursts=self.window.bursts,
            gaps=self.window.gaps,
            bad_gaps=self.window.bad_gaps,
            pacer_resyncs=self.pacer.resyncs - resyncs0,
            pacer_max_late_ms=1000 * self.pacer.max_lateness_s,
            disconnected=sum(1 for c in self.callers if not c.connected),
            preempted=involuntary_switches() - switches0,
            gc_max_ms=1000 * gc_timer.max_s,
            kernel_stamps=stamped - stamped0,
            phrases=phrases - phrases0,
            barge_ins=barge_ins - barge0,
        )

    async def hangup(self) -> None:
        """Hang every caller up (EOF, as Asterisk does) and wait for the sockets to close."""
        self.pacer.stop()
        for c in self.callers:
            self.pacer.remove(c)
            c.hangup()
        async with asyncio.timeout(10):
            await asyncio.gather(*(c.wait_closed() for c in self.callers))
        self.callers.clear()


async def commands(conn: Connection) -> asyncio.Queue[Any]:
    """Deliver what arrives on `conn` into a queue, from the event loop (no reader thread)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def readable() -> None:
        # uvloop makes a watched descriptor non-blocking; a message larger than the pipe's buffer
        # must then still be read whole (the sender writes it at once).
        os.set_blocking(conn.fileno(), True)
        try:
            queue.put_nowait(conn.recv())
        except EOFError:
            loop.remove_reader(conn.fileno())
            queue.put_nowait(("exit",))

    loop.add_reader(conn.fileno(), readable)
    return queue


def prepare_process(cpu: int | None, nice: int, realtime: bool) -> str:
    """Pin this process to one core (None: leave it free) and raise its priority if allowed.

    Pinning keeps the two sides off each other's core, but not the rest of the machine's work
    off ours: with `realtime` the process runs SCHED_FIFO (it preempts ordinary tasks at once,
    as on a machine of its own; the kernel still keeps 5 % of the core for others), else at
    `nice`. Without the right to either (not root) the default priority stays. Returns what
    was set, for the report.
    """
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    if realtime:
        with contextlib.suppress(PermissionError):
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
            return "SCHED_FIFO"
    if nice:
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, 0, nice)
            return f"nice {nice}"
    return "default priority"


def involuntary_switches() -> int:
    """How often the kernel took the core away from this process so far (another task ran)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


async def _serve(conn: Connection, wav_path: str) -> None:
    clip = read_wav_8k(wav_path)
    queue = await commands(conn)
    side = CallerSide(clip)
    while True:
        cmd = await queue.get()
        if cmd[0] == "connect":
            side = CallerSide(clip)
            conn.send(("connected", await side.connect(cmd[1], cmd[2])))
        elif cmd[0] == "measure":
            conn.send(("stats", await side.measure(cmd[1], cmd[2])))
        elif cmd[0] == "hangup":
            await side.hangup()
            conn.send(("done", 0))
        else:
            await side.hangup()
            return


def callers_main(conn: Connection, cpu: int | None, nice: int, realtime: bool, wav_path: str) -> None:
    """Process entry point."""
    conn.send(("hello", prepare_process(cpu, nice, realtime)))
    logging.basicConfig(level=logging.ERROR)  # e.g. asyncio debug-mode slow-callback warnings
    asyncio.run(_serve(conn, wav_path))
