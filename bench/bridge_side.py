"""The bridge side of the capacity benchmark; runs in its own process, pinned to its own core.

Per call, exactly what `voicebridge serve` runs on the audio path, minus the providers:
- the `AudioSocketServer` accepts the caller and a `TelephonyGateway` is built on it (inbound
  framing, each frame pushed into the call's recognizer buffer then the VAD; outbound `Playout`
  on the one shared `Pacer`);
- `BenchRecognizer` stands in for `YandexRecognitionStream`'s input side: `push_audio` into one
  `AudioBuffer` (drop-oldest, the one drop counter) and a drain task that takes 100 ms batches
  as the gRPC request generator does (the SpeechKit side is not part of the bridge's cost);
- a speaker task plays a looping espeak-ng clip through `Playout.write` in 200 ms chunks, then
  stays quiet as long as the clip lasted, so the bot talks about half of the time.

Driven over a pipe by `bench.hotpath` with tuples:
  ("expect", [uuid str, ...])  -> ("ready", port)
  ("wait_calls", n, timeout_s) -> ("calls", connected)
  ("measure", t0, t1, profile)  -> ("stats", BridgeStats)  (profile: a cProfile dump path or None)
  ("teardown",)                -> ("done", Leftovers)
  ("exit",)                    -> process ends
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import dataclasses
import functools
import gc
import logging
import os
import random
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection

from bench.callers import commands, involuntary_switches, prepare_process
from bench.common import GcTimer, Histogram
from bridge.audiosocket.server import AudioSocketConnection, AudioSocketServer, AudioSocketSettings
from bridge.echo_gate import EchoSettings
from bridge.event_loop import EventLoopKind, loop_factory
from bridge.gateway import TelephonyGateway
from bridge.gc_policy import GcSettings, apply_gc_settings, freeze_call_objects
from bridge.pacer import Pacer
from bridge.playout import PlayoutClosed
from bridge.vad import VadSettings
from bridge.vad_batch import running_batch
from orchestrator.clock import LoopClock
from orchestrator.domain.errors import ConfigError
from orchestrator.domain.models import AudioChunk
from orchestrator.tasks import cancel_and_wait
from testkit.fake_asterisk import read_wav_8k
from testkit.fakes import BenchRecognizer

CHUNK_BYTES = 3200  # 200 ms of 8 kHz audio per write, as the TTS adapters hand it out


class BridgeCall:
    """One call's gateway, its stand-in recognizer and their two tasks."""

    def __init__(
        self,
        conn: AudioSocketConnection,
        pacer: Pacer,
        clip: bytes,
        delay_s: float,
        vad: VadSettings | None = None,
        echo: EchoSettings | None = None,
    ) -> None:
        self.gateway = TelephonyGateway(conn, pacer, clock=LoopClock(), vad_settings=vad, echo_settings=echo)
        self.recognizer = BenchRecognizer()
        self.gateway.attach(None, self.recognizer)
        self.conn = conn
        self._clip = clip
        name = str(conn.uuid)[:8]
        self.tasks = (
            asyncio.create_task(self.recognizer.drain(), name=f"bench-stt-{name}"),
            asyncio.create_task(self._speak(delay_s), name=f"bench-speak-{name}"),
        )

    async def _speak(self, delay_s: float) -> None:
        out = self.gateway.outbound
        clip = self._clip
        quiet_s = len(clip) / 16000
        await asyncio.sleep(delay_s)
        with contextlib.suppress(PlayoutClosed):
            while True:
                for i in range(0, len(clip), CHUNK_BYTES):
                    await out.write(AudioChunk(clip[i : i + CHUNK_BYTES]))
                await out.drain()
                await asyncio.sleep(quiet_s)

    async def close(self) -> None:
        """Cancel the tasks (bounded) and hang the leg up."""
        await cancel_and_wait(*self.tasks)
        await self.gateway.close()


@dataclass(frozen=True, slots=True)
class BridgeStats:
    """What the bridge did in one measurement window."""

    calls: int
    wall_s: float
    cpu_pct: float
    frames_out: int  # bot audio + silence + ringback sent
    voice_out: int  # bot audio frames only
    frames_in: int
    inbound_drops: int
    outbound_drops: int
    speech_starts: int
    resyncs: int
    max_late_ms: float
    tick_p99_ms: float  # p99 of the interval between pacer ticks (bridge-side send jitter)
    preempted: int  # involuntary context switches: other work on this core
    gc_full: int  # collections of the oldest generation (the slow kind) in the window
    gc_max_ms: float  # the longest garbage collection pause (any generation) in the window
    cpu_s: float  # user + system CPU time of the bridge process in the window
    sys_s: float  # of which in the kernel (system time): the sockets' recv/send, epoll
    onnx_s: float  # ONNX Runtime's Silero runs, wall time on the loop's thread (the batch's `run_s`: its CPU unless preempted; 0 without a batch)
    rss_kb_per_call: float  # (RSS at the window's end - RSS before the first call) / calls

    @property
    def cpu_ms_per_call_s(self) -> float:
        """Bridge CPU per second of one call, in ms (user + system of the process); NaN for no calls."""
        if not self.calls or not self.wall_s:
            return float("nan")
        return 1000 * self.cpu_s / (self.calls * self.wall_s)

    @property
    def sys_ms_per_call_s(self) -> float:
        """The kernel's part of `cpu_ms_per_call_s` (system time), in ms; NaN for no calls: the
        sockets' recv and send (about one each per frame; less with larger reads) and epoll. The
        rest (user time) is Python, numpy and ONNX Runtime."""
        if not self.calls or not self.wall_s:
            return float("nan")
        return 1000 * self.sys_s / (self.calls * self.wall_s)

    @property
    def onnx_ms_per_call_s(self) -> float:
        """ONNX Runtime's part of `cpu_ms_per_call_s` (the Silero windows), in ms; NaN for no
        calls. The rest, less `sys_ms_per_call_s`, is Python (and webrtcvad, numpy)."""
        if not self.calls or not self.wall_s:
            return float("nan")
        return 1000 * self.onnx_s / (self.calls * self.wall_s)

    def calls_per_core(self, share: float = 0.8) -> float:
        """Calls one core would carry at `share` of it busy, at this step's cost per call."""
        per_call = self.cpu_ms_per_call_s
        return share * 1000 / per_call if per_call > 0 else float("nan")


@dataclass(frozen=True, slots=True)
class Leftovers:
    """What a step's calls left behind once all were closed (0 tasks and fds expected)."""

    tasks: int  # asyncio tasks still alive
    fds: int  # open descriptors above those before the first call
    connections: int  # AudioSocket connections the server still holds
    rss_growth_kb: float  # RSS above the level before the first call (allocator keeps some)


def rss_kb() -> float:
    """This process's resident set size, in KiB (Linux /proc)."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


class TickProbe:
    """The pacer's first member: when each tick began sending, so the bridge's own send jitter.

    Members tick in a fixed order, so a call's frame leaves at a fixed offset after this probe;
    the caller-side inter-arrival adds the callers' loop delays and the network on top.
    """

    def __init__(self) -> None:
        self._clock = asyncio.get_running_loop().time
        self._last: float | None = None
        self.hist: Histogram | None = None  # recording only while set

    def tick(self) -> None:
        now = self._clock()
        if self.hist is not None and self._last is not None:
            self.hist.add(now - self._last)
        self._last = now


class BridgeSide:
    """The AudioSocket server, the pacer and the calls of the current step."""

    def __init__(
        self,
        clip: bytes,
        vad: VadSettings | None = None,
        echo: EchoSettings | None = None,
        gc_settings: GcSettings | None = None,
    ) -> None:
        self._clip = clip
        self._vad, self._echo = vad, echo
        self._gc = gc_settings or GcSettings()
        self._rnd = random.Random(11)
        self.pacer = Pacer()
        self.probe = TickProbe()
        self.pacer.add(self.probe)  # before any call: it ticks first
        self.server = AudioSocketServer(
            # The admission limits are for a real PBX's traffic; the bench's callers all come from
            # one address at once, as fast as they can connect.
            AudioSocketSettings(
                bind_port=0,
                uuid_timeout_s=10.0,
                max_connections=5000,
                max_connections_per_peer=5000,
                max_accepts_per_s=5000.0,
            ),
            pacer=self.pacer,
        )
        self.calls: list[BridgeCall] = []
        self.base_rss_kb = 0.0
        self.base_fds = 0
        self._arrived = asyncio.Event()
        self._expected = 0

    async def start(self) -> None:
        """Listen on 127.0.0.1, any port; note the RSS and descriptors before any call."""
        await self.server.start()
        self.base_rss_kb = rss_kb()
        self.base_fds = len(os.listdir("/proc/self/fd"))

    def expect(self, uuids: list[str]) -> None:
        """Register the step's UUIDs; each call is built the moment its caller sends the UUID."""
        self._expected = len(uuids)
        self._arrived.clear()
        clip_s = len(self._clip) / 16000
        for u in uuids:
            fut = self.server.expect(uuid.UUID(u))
            delay = self._rnd.uniform(0, 2 * clip_s)  # calls out of step, as in real traffic
            fut.add_done_callback(functools.partial(self._on_connection, delay_s=delay))

    def _on_connection(self, fut: asyncio.Future[AudioSocketConnection], delay_s: float) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        self.calls.append(BridgeCall(fut.result(), self.pacer, self._clip, delay_s, self._vad, self._echo))
        freeze_call_objects(self._gc)  # as the service after a call's set-up ([gc] freeze_calls)
        if len(self.calls) >= self._expected:
            self._arrived.set()

    async def wait_calls(self, timeout_s: float) -> int:
        """Wait until every expected caller has connected (or the timeout); how many did."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._arrived.wait()
        return len(self.calls)

    def _totals(self) -> tuple[int, int, int, int, int, int]:
        out = voice = inn = drops = odrops = starts = 0
        for c in self.calls:
            gw = c.gateway
            voice += gw.outbound.frames_sent
            out += gw.outbound.frames_sent + gw.outbound.silence_sent + gw.outbound.ring_sent
            inn += gw.frames_in
            drops += c.recognizer.buffer.dropped
            odrops += c.conn.frames_dropped
            starts += gw.speech_starts
        return out, voice, inn, drops, odrops, starts

    async def measure(self, t0: float, t1: float, profile_path: str | None = None) -> BridgeStats:
        """Counters between loop times t0 and t1; with `profile_path`, a cProfile dump of the window."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, t0 - loop.time()))
        profiler = cProfile.Profile() if profile_path else None
        if profiler is not None:
            profiler.enable()
        start, cpu0, switches0 = loop.time(), time.process_time(), involuntary_switches()
        sys0 = os.times().system
        vad = self._vad or VadSettings()
        # Only where the calls use one: asking makes it (and loads the model) otherwise.
        batch = running_batch() if vad.engine == "silero" and vad.batch_across_calls else None
        onnx0 = batch.run_s if batch is not None else 0.0
        gc_timer = GcTimer()
        before = self._totals()
        resyncs0 = self.pacer.resyncs
        self.pacer.max_lateness_s = 0.0
        ticks = self.probe.hist = Histogram()
        await asyncio.sleep(max(0.0, t1 - loop.time()))
        wall, cpu = loop.time() - start, time.process_time() - cpu0
        sys_s = os.times().system - sys0
        onnx_s = batch.run_s - onnx0 if batch is not None else 0.0
        gc_timer.close()
        self.probe.hist = None
        if profiler is not None and profile_path:
            profiler.disable()
            profiler.dump_stats(profile_path)
        d = [b - a for a, b in zip(before, self._totals(), strict=True)]
        return BridgeStats(
            calls=len(self.calls),
            wall_s=wall,
            cpu_pct=100 * cpu / wall,
            frames_out=d[0],
            voice_out=d[1],
            frames_in=d[2],
            inbound_drops=d[3],
            outbound_drops=d[4],
            speech_starts=d[5],
            resyncs=self.pacer.resyncs - resyncs0,
            max_late_ms=1000 * self.pacer.max_lateness_s,
            tick_p99_ms=1000 * ticks.percentile(99),
            preempted=involuntary_switches() - switches0,
            gc_full=gc_timer.full,
            gc_max_ms=1000 * gc_timer.max_s,
            cpu_s=cpu,
            sys_s=sys_s,
            onnx_s=onnx_s,
            rss_kb_per_call=(rss_kb() - self.base_rss_kb) / max(1, len(self.calls)),
        )

    async def teardown(self) -> Leftovers:
        """Close every call of the step; what is left once they are closed."""
        calls, self.calls = self.calls, []
        await asyncio.gather(*(c.close() for c in calls))
        return Leftovers(
            tasks=len(asyncio.all_tasks()) - 1,  # not the command loop's own task
            fds=len(os.listdir("/proc/self/fd")) - self.base_fds,
            connections=self.server.connections,
            rss_growth_kb=rss_kb() - self.base_rss_kb,
        )

    async def close(self) -> None:
        """Close the calls and the server."""
        await self.teardown()
        await self.server.close()


async def _serve(
    conn: Connection, wav_path: str, vad: VadSettings, echo: EchoSettings, gc_settings: GcSettings
) -> None:
    side = BridgeSide(read_wav_8k(wav_path), vad, echo, gc_settings)
    await side.start()
    queue = await commands(conn)
    try:
        while True:
            cmd = await queue.get()
            if cmd[0] == "expect":
                side.expect(cmd[1])
                conn.send(("ready", side.server.port))
            elif cmd[0] == "wait_calls":
                conn.send(("calls", await side.wait_calls(cmd[2])))
            elif cmd[0] == "measure":
                conn.send(("stats", await side.measure(cmd[1], cmd[2], cmd[3])))
            elif cmd[0] == "teardown":
                conn.send(("done", await side.teardown()))
            else:
                return
    finally:
        await side.close()


def bridge_main(
    conn: Connection,
    cpu: int | None,
    nice: int,
    realtime: bool,
    wav_path: str,
    event_loop: EventLoopKind = "asyncio",
    vad_engine: str = "",
    echo: bool = True,
    vad_batch: str = "",
    freeze_calls: bool = False,
) -> None:
    """Process entry point; `event_loop` as `[service] event_loop` of the service, `vad_engine`
    as `[vad] engine` ("": its default), `echo` as `[echo] enabled`, `vad_batch` as `[vad]
    batch_across_calls` ("on"/"off"; "": its default), `freeze_calls` as `[gc] freeze_calls`."""
    scheduling = prepare_process(cpu, nice, realtime)
    try:
        factory = loop_factory(event_loop)
    except ConfigError as exc:
        conn.send(("error", str(exc)))
        return
    vad = VadSettings(engine=vad_engine) if vad_engine else VadSettings()  # type: ignore[arg-type]
    if vad_batch:
        vad = dataclasses.replace(vad, batch_across_calls=vad_batch == "on")
    batched = "batched" if vad.batch_across_calls else "unbatched"
    conn.send(
        (
            "hello",
            f"{scheduling}, {event_loop} loop, VAD {vad.engine} ({batched}), echo gate {'on' if echo else 'off'}"
            + (", calls frozen ([gc] freeze_calls)" if freeze_calls else ""),
        )
    )
    # Hundreds of hang-ups at the end of a step would each log at DEBUG/WARNING: keep it quiet.
    logging.basicConfig(level=logging.ERROR)
    # As `voicebridge serve` does once started: what lives as long as the process is kept out of
    # the collector's generations.
    gc.collect()
    gc.freeze()
    gc_settings = GcSettings(freeze_calls=freeze_calls)
    apply_gc_settings(gc_settings)  # and its full collections as rare ([gc] full_every)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(conn, wav_path, vad, EchoSettings(enabled=echo), gc_settings))
