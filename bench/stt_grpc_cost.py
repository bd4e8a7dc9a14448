"""`python -m bench.stt_grpc_cost`: what the STT's gRPC stream costs the bridge's process per call.

The capacity bench (`bench.hotpath`) leaves the STT stream out: its drain task only takes the
batches out of each call's buffer. Here N recognitions run through the product adapter
(`YandexSttStreamer` on one shared `speechkit_channel`, as `bridge/providers.py` builds them)
against the SpeechKit stand-in in a process of its own, pinned to the other core; this process
is pinned to the first. One shared 20 ms tick pushes each call's next frame (espeak-ng speech of
the bench's caller phrase, then 1 s of silence, looped; each call starts at its own offset), one
reader task per call takes its results, as the Orchestrator does.

After `--warmup` s it measures `--duration` s: CPU per call-second split by thread (the event
loop's thread, i.e. the main thread, against the others: grpc's poller and C-core threads; from
/proc/self/task/*/stat), audio requests per second (counted where the adapter books each one,
`RecognizeCall._count`), selector wake-ups (asyncio's loop only), the tick's lateness, and the
stand-in's CPU. `--json` writes it all; `--levels 50,200` runs each level in turn (each with a
fresh process-wide grpc state is not possible: one process, levels in the order given).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import CALLER_PHRASE, percentile
from bridge.event_loop import EventLoopKind, loop_factory
from orchestrator.adapters.speechkit import YandexSettings, speechkit_channel
from orchestrator.adapters.stt.yandex import YandexRecognitionStream, YandexSttStreamer
from orchestrator.adapters.stt.yandex_call import RecognizeCall
from orchestrator.adapters.tts.espeak import espeak_pcm_sync
from orchestrator.audio import FRAME_BYTES, FRAME_MS
from orchestrator.clock import LoopClock

ROOT = Path(__file__).resolve().parent.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")
TICK_S = FRAME_MS / 1000


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def thread_cpu(pid: int | str = "self") -> dict[int, tuple[str, float]]:
    """Thread id -> (name, user + system CPU s) of a process's threads."""
    out: dict[int, tuple[str, float]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / _CLK_TCK)
    return out


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


@contextlib.contextmanager
def counting_requests() -> Iterator[list[int]]:
    """Count the audio/silence requests the adapter sends (where it books each one)."""
    count = [0]
    original = RecognizeCall._count

    def counted(self: RecognizeCall, *args: Any) -> None:
        count[0] += 1
        original(self, *args)

    RecognizeCall._count = counted  # type: ignore[method-assign,assignment]
    try:
        yield count
    finally:
        RecognizeCall._count = original  # type: ignore[method-assign]


@dataclass
class Level:
    calls: int
    duration_s: float
    load_avg_1m: float
    loop: str
    chunk_ms: int  # audio per real-time request
    env: dict[str, str]  # GRPC_* environment variables set
    requests_per_s: float = 0.0
    cpu_ms_per_call_s: float = 0.0  # the whole process
    loop_thread_ms_per_call_s: float = 0.0
    other_threads_ms_per_call_s: float = 0.0
    loop_thread_us_per_request: float = 0.0
    process_us_per_request: float = 0.0
    selects_per_request: float | None = None
    other_threads: dict[str, float] = field(default_factory=dict)  # name -> ms per call-second
    tick_late_ms: dict[str, float] = field(default_factory=dict)  # p50, p99, max
    standin_cpu_pct: float = 0.0
    results: dict[str, int] = field(default_factory=dict)
    frames_dropped: int = 0
    reconnects: int = 0


class StandinProcess:
    """The SpeechKit stand-in as a child process pinned to `cpu` (`with StandinProcess() as s`)."""

    def __init__(self, cpu: int) -> None:
        self._cpu = cpu
        self._dir = tempfile.TemporaryDirectory(prefix="bench-stt-grpc-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def __enter__(self) -> StandinProcess:
        script = Path(self._dir.name) / "script.json"
        lines = ["здравствуйте", "а вы работаете в субботу", "сколько стоит уборка", "нет спасибо"]
        script.write_text(json.dumps({"stt": {"default": lines * 50}}, ensure_ascii=False))
        cpu = self._cpu
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "testkit.standins.speechkit_server",
                "--port",
                "0",
                "--script",
                str(script),
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            preexec_fn=lambda: _pin(cpu),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if "listening on" not in line:
            self.__exit__()
            raise RuntimeError(f"the SpeechKit stand-in did not start: {line!r}")
        self.endpoint = line.rsplit(" ", 1)[1]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._dir.cleanup()


class Feeder:
    """One shared 20 ms tick: every call's due frames, from its own offset in the looped clip."""

    def __init__(self, streams: list[YandexRecognitionStream], clip: bytes) -> None:
        self._streams = streams
        n = len(clip) // FRAME_BYTES
        self._frames = [clip[i * FRAME_BYTES : (i + 1) * FRAME_BYTES] for i in range(n)]
        self._offsets = [(i * 37) % n for i in range(len(streams))]
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time()
        self._pushed = 0  # ticks done
        self.late: list[float] = []  # s past each tick's due time
        self._handle: asyncio.TimerHandle | None = None
        self.stopped = False

    def start(self) -> None:
        self._handle = self._loop.call_at(self._start + TICK_S, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        due = int((now - self._start) / TICK_S)
        self.late.append(now - (self._start + (self._pushed + 1) * TICK_S))
        frames = self._frames
        n = len(frames)
        while self._pushed < due:  # a late tick pushes every frame that came meanwhile
            k = self._pushed
            for stream, offset in zip(self._streams, self._offsets, strict=True):
                stream.push_audio(frames[(offset + k) % n])
            self._pushed += 1
        if not self.stopped:
            self._handle = self._loop.call_at(self._start + (self._pushed + 1) * TICK_S, self._tick)

    def stop(self) -> None:
        self.stopped = True
        if self._handle is not None:
            self._handle.cancel()


async def _read(stream: YandexRecognitionStream, counts: dict[str, int]) -> None:
    async for event in stream:
        kind = getattr(event, "kind", type(event).__name__)
        counts[kind] = counts.get(kind, 0) + 1


def _counting_select(loop: asyncio.AbstractEventLoop) -> list[int] | None:
    """Count the selector's wake-ups (asyncio's own loop; None for another loop)."""
    selector = getattr(loop, "_selector", None)
    if selector is None:
        return None
    count = [0]
    select: Callable[..., Any] = selector.select

    def counted(timeout: float | None = None) -> Any:
        count[0] += 1
        return select(timeout)

    selector.select = counted
    return count


async def run_level(
    endpoint: str,
    calls: int,
    *,
    clip: bytes,
    warmup_s: float,
    duration_s: float,
    loop_kind: str,
    chunk_ms: int = 100,
) -> Level:
    loop = asyncio.get_running_loop()
    selects = _counting_select(loop)
    settings = YandexSettings(stt_endpoint=endpoint, tts_endpoint=endpoint, tls=False, chunk_ms=chunk_ms)
    channel = speechkit_channel(endpoint, tls=False)
    env = {k: v for k, v in os.environ.items() if k.startswith("GRPC_")}
    level = Level(calls, duration_s, os.getloadavg()[0], loop_kind, chunk_ms, env)
    try:
        async with asyncio.timeout(10):
            await channel.channel_ready()
        clock = LoopClock()
        streams = [
            YandexSttStreamer(channel, settings, clock=clock, request_id=f"c{i}").open_stream()
            for i in range(calls)
        ]
        counts: dict[str, int] = {}
        readers = [asyncio.create_task(_read(s, counts), name=f"read-{i}") for i, s in enumerate(streams)]
        feeder = Feeder(streams, clip)
        with counting_requests() as requests:
            feeder.start()
            await asyncio.sleep(warmup_s)
            pid = os.getpid()
            t0, th0, sk0, r0 = time.monotonic(), thread_cpu(), process_cpu_of_children(), requests[0]
            s0 = selects[0] if selects else 0
            late0 = len(feeder.late)
            await asyncio.sleep(duration_s)
            t1, th1, sk1, r1 = time.monotonic(), thread_cpu(), process_cpu_of_children(), requests[0]
            s1 = selects[0] if selects else 0
            late = feeder.late[late0:]
            feeder.stop()
            for s in streams:
                s.end_input()
            async with asyncio.timeout(30):
                await asyncio.gather(*readers)
        for s in streams:
            await s.aclose()
        wall = t1 - t0
        call_s = calls * wall
        loop_cpu = th1[pid][1] - th0[pid][1]
        others: dict[str, float] = {}
        for tid, (name, cpu) in th1.items():
            if tid != pid:
                others[name] = others.get(name, 0.0) + cpu - th0.get(tid, (name, 0.0))[1]
        other_cpu = sum(others.values())
        n_req = r1 - r0
        level.requests_per_s = n_req / wall
        level.cpu_ms_per_call_s = (loop_cpu + other_cpu) * 1000 / call_s
        level.loop_thread_ms_per_call_s = loop_cpu * 1000 / call_s
        level.other_threads_ms_per_call_s = other_cpu * 1000 / call_s
        level.other_threads = {k: round(v * 1000 / call_s, 4) for k, v in sorted(others.items()) if v > 0}
        level.loop_thread_us_per_request = loop_cpu * 1e6 / max(1, n_req)
        level.process_us_per_request = (loop_cpu + other_cpu) * 1e6 / max(1, n_req)
        level.selects_per_request = (s1 - s0) / max(1, n_req) if selects else None
        ms = sorted(x * 1000 for x in late)
        level.tick_late_ms = {
            "p50": percentile(ms, 50),
            "p99": percentile(ms, 99),
            "max": ms[-1] if ms else 0.0,
        }
        level.standin_cpu_pct = (sk1 - sk0) * 100 / wall
        level.results = counts
        level.frames_dropped = sum(s.frames_dropped for s in streams)
        level.reconnects = sum(s.reconnects for s in streams)
    finally:
        await channel.close()
    return level


_STANDIN_PID = [0]


def process_cpu_of_children() -> float:
    return process_cpu(_STANDIN_PID[0]) if _STANDIN_PID[0] else 0.0


def speech_clip() -> bytes:
    """The caller phrase (espeak-ng, 8 kHz slin) and 1 s of silence, in whole frames."""
    pcm = espeak_pcm_sync(CALLER_PHRASE) + bytes(8000 * 2)
    return pcm[: len(pcm) // FRAME_BYTES * FRAME_BYTES]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="50,200", help="calls at once, comma-separated (default 50,200)")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per level")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    ap.add_argument("--chunk-ms", type=int, default=100, help="audio per real-time request (chunk_ms)")
    ap.add_argument("--cpu", type=int, default=0, help="this process's core (the stand-in gets the next)")
    ap.add_argument("--json", type=Path, help="write the levels here")
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    _pin(args.cpu)
    clip = speech_clip()
    kind: EventLoopKind = args.loop
    out: list[Level] = []
    with StandinProcess((args.cpu + 1) % (os.cpu_count() or 1)) as standin:
        assert standin.proc is not None
        _STANDIN_PID[0] = standin.proc.pid
        with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
            for n in levels:
                level = runner.run(
                    run_level(
                        standin.endpoint,
                        n,
                        clip=clip,
                        warmup_s=args.warmup,
                        duration_s=args.duration,
                        loop_kind=kind,
                        chunk_ms=args.chunk_ms,
                    )
                )
                out.append(level)
                print(
                    f"{n} calls: {level.requests_per_s:.0f} req/s; CPU ms per call-second: process "
                    f"{level.cpu_ms_per_call_s:.3f} = loop thread {level.loop_thread_ms_per_call_s:.3f} + other "
                    f"threads {level.other_threads_ms_per_call_s:.3f}; loop thread {level.loop_thread_us_per_request:.1f}"
                    f" us/request (process {level.process_us_per_request:.1f}), selects/request "
                    f"{level.selects_per_request}; tick late p50/p99/max {level.tick_late_ms['p50']:.2f}/"
                    f"{level.tick_late_ms['p99']:.2f}/{level.tick_late_ms['max']:.2f} ms; stand-in "
                    f"{level.standin_cpu_pct:.0f} %; load {level.load_avg_1m:.2f}; results {level.results};"
                    f" dropped {level.frames_dropped}, reconnects {level.reconnects}",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps([asdict(x) for x in out], indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
