"""Per-call figures on real sockets (`python -m bench --only figures`): orchestration overhead per
turn, barge-in, filler hand-over, time to greeting, memory per call and over many short calls.

The service's call path as `voicebridge serve` runs it (`VoicebridgeApp.on_call`: the real
AudioSocket server, gateway, VAD, playout, pacer and Orchestrator with the cleaning map), with
in-process fakes for the providers on fixed delays, and `FakeAsterisk` callers over TCP in the
same process and loop (at 200 calls the callers' own work shares the core). Every cached phrase
is a labelled clip (`testkit.fakes.clip`), so each frame the bridge writes says what it belongs
to; a probe on each connection's `send_audio`/`send_silence` records (loop time, label) per
frame written, and one on the server protocol records when the UUID was received.

One call: greeting (cache hit) -> the caller asks an off-script question (espeak-ng Russian);
the STT final (T0, `VoicedLineSTT`) goes to the LLM route: a filler (1 s clips) covers it, the
LLM's first token comes at T0 + 300 ms, the TTS's first audio 100 ms after its first text, so
the answer could start at T0 + 400 ms; 1 s into the answer the caller speaks again ("barge-in"),
which the VAD announces (SPEECH_ONSET: the bot pauses) and confirms; that line is "нет, спасибо",
the map says goodbye and the bot hangs up.

Figures per call: greeting_ms (UUID received -> first greeting frame written), overhead_ms
(first answer frame written - T0 - 400 ms; it includes waiting for the pacer's next 20 ms tick)
and overhead_queued_ms (the answer audio queued to the playout, the turn record's
`answer_audio_at`, - T0 - 400 ms: the orchestration alone), handover_ms (first answer frame -
last filler frame before it, write times: 20 = back to back) with the silence frames between
them, underflow (silence frames written between the answer's first frame and its last before the
barge-in), barge-in frames/ms (answer frames written after the VAD's onset decision; the last
answer frame's time - the decision, negative when none followed it).

`run_short_calls`: N sequential calls that hang up at the first greeting frame; RSS, asyncio
tasks and open descriptors after warm-up and at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import GcTimer, percentile, table
from bench.hotpath import machine_info
from bridge.app import VoicebridgeApp
from bridge.ari import AriCall
from bridge.audiosocket.connection import AudioSocketConnection
from bridge.audiosocket.protocol import Message, Uuid
from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.audiosocket.stream import ServerProtocol
from bridge.gateway import TelephonyGateway
from bridge.settings import Settings
from bridge.vad import VadEvent, VadEventKind
from orchestrator.adapters.tts.espeak import espeak_pcm_sync
from orchestrator.cache.memory import InMemoryAudioCache
from orchestrator.dialogue_map.loader import load_dialogue_map
from orchestrator.dialogue_map.templates import render_template
from orchestrator.domain.models import LLMStreamChunk
from orchestrator.flow_engine import MapFlowEngine
from orchestrator.orchestrator import CallEvent, CallServices
from testkit.fake_asterisk import FakeAsterisk, FakeCallerPool
from testkit.fakes import FakeLLM, FakeTTS, KeywordClassifier, LLMAttempt, clip, label_of
from testkit.voiced_stt import VoicedLineRecognition, VoicedLineSTT

ROOT = Path(__file__).resolve().parent.parent
MAP_PATH = ROOT / "dialogue_maps" / "cleaning_quote.ru.json"
LLM_DELAY_S = 0.3  # T0 -> the LLM's first token
TTS_DELAY_S = 0.1  # first text -> the TTS's first audio
ANSWER_LABEL = 900
ANSWER = "Да, мы работаем в субботу с восьми утра до десяти вечера, записать вас на уборку?"
QUESTION = "а вы работаете в субботу"
STOP = "подождите"
BARGE_AFTER_FRAMES = 50  # the caller speaks 1 s into the answer
T = 30.0  # bound on any wait of one call

__all__ = [
    "CallFigures",
    "FiguresResult",
    "ShortCalls",
    "figures_json",
    "realtime",
    "render_figures",
    "run_figures",
    "run_short_calls",
]


@dataclass
class _Probe:
    """One call's timeline on the bridge side."""

    uuid_at: float | None = None
    frames: list[tuple[float, int]] = field(default_factory=list)  # (loop time, label; 0 silence)
    finals: list[float] = field(default_factory=list)  # STT finals (T0s)
    onsets: list[float] = field(default_factory=list)  # VAD SPEECH_ONSET decisions
    records: list[dict[str, Any]] = field(default_factory=list)
    listening: asyncio.Event = field(default_factory=asyncio.Event)
    answering: asyncio.Event = field(default_factory=asyncio.Event)
    greeted: asyncio.Event = field(default_factory=asyncio.Event)  # the first greeting frame written
    greeting_label: int = -1
    answer_frames: int = 0


_probes: dict[str, _Probe] = {}


def _probe_connection(conn: AudioSocketConnection, probe: _Probe) -> None:
    """Record every frame the connection writes (instance attributes shadow the methods)."""
    send_audio, send_silence = conn.send_audio, conn.send_silence
    loop = asyncio.get_running_loop()
    frames = probe.frames

    def audio(frame: bytearray) -> None:
        send_audio(frame)
        lab = label_of(frame)
        frames.append((loop.time(), lab))
        if lab == probe.greeting_label:
            probe.greeted.set()
        elif lab == ANSWER_LABEL:
            probe.answer_frames += 1
            if probe.answer_frames == BARGE_AFTER_FRAMES:
                probe.answering.set()

    def silence() -> None:
        send_silence()
        frames.append((loop.time(), 0))

    setattr(conn, "send_audio", audio)  # noqa: B010 - a bench-only probe
    setattr(conn, "send_silence", silence)  # noqa: B010


class _Probes:
    """Bench-only probes on the server protocol (UUID received) and the gateway (VAD decisions)."""

    def __enter__(self) -> None:
        self._first = ServerProtocol._first_messages
        self._vad = TelephonyGateway._on_vad
        first, vad = self._first, self._vad

        def first_messages(proto: ServerProtocol, msgs: list[Message]) -> None:
            head = msgs[0]
            if type(head) is Uuid and (probe := _probes.get(str(head.uuid))) is not None:
                probe.uuid_at = asyncio.get_running_loop().time()
            first(proto, msgs)

        def on_vad(gateway: TelephonyGateway, event: VadEvent) -> None:
            if event.kind is VadEventKind.SPEECH_ONSET and (probe := _probes.get(gateway.uuid)):
                probe.onsets.append(asyncio.get_running_loop().time())
            vad(gateway, event)

        setattr(ServerProtocol, "_first_messages", first_messages)  # noqa: B010
        setattr(TelephonyGateway, "_on_vad", on_vad)  # noqa: B010

    def __exit__(self, *exc: object) -> None:
        setattr(ServerProtocol, "_first_messages", self._first)  # noqa: B010
        setattr(TelephonyGateway, "_on_vad", self._vad)  # noqa: B010


class _TimedRecognition(VoicedLineRecognition):
    def __init__(self, lines: list[str], finals: list[float]) -> None:
        super().__init__(lines)
        self._finals = finals

    def push_audio(self, frame: bytes) -> None:
        before = self._results.qsize()
        super().push_audio(frame)
        if self._results.qsize() > before:
            self._finals.append(asyncio.get_running_loop().time())


class _TimedSTT(VoicedLineSTT):
    def __init__(self, lines: list[str], finals: list[float]) -> None:
        super().__init__(lines)
        self._finals = finals

    def open_stream(self) -> _TimedRecognition:
        return _TimedRecognition(self.lines, self._finals)


@dataclass
class CallFigures:
    """One call's figures (ms unless named otherwise); None where the call did not get there."""

    greeting_ms: float | None = None
    overhead_ms: float | None = None
    overhead_queued_ms: float | None = None
    overhead_own_ms: float | None = None
    handover_ms: float | None = None
    handover_silence: int | None = None
    underflow: int | None = None
    barge_frames: int | None = None
    barge_ms: float | None = None


def _figures(probe: _Probe, greeting_label: int, filler_labels: set[int]) -> CallFigures:
    fig = CallFigures()
    frames = probe.frames
    first_greeting = next((t for t, lab in frames if lab == greeting_label), None)
    if first_greeting is not None and probe.uuid_at is not None:
        fig.greeting_ms = (first_greeting - probe.uuid_at) * 1000
    i_answer = next((i for i, (_, lab) in enumerate(frames) if lab == ANSWER_LABEL), None)
    if i_answer is None or not probe.finals:
        return fig
    t_answer = frames[i_answer][0]
    t0 = probe.finals[0]
    fig.overhead_ms = (t_answer - t0 - LLM_DELAY_S - TTS_DELAY_S) * 1000
    turn = next((r for r in probe.records if r.get("answer_audio_at") and r.get("t2_stt_final")), None)
    if turn is not None:
        queued = float(turn["answer_audio_at"]) - float(turn["t2_stt_final"])
        fig.overhead_queued_ms = (queued - LLM_DELAY_S - TTS_DELAY_S) * 1000
        t4, t5 = turn.get("t4_llm_request"), turn.get("t5_tts_first_chunk")
        if t4 is not None and t5 is not None:
            own = float(t4) - float(turn["t2_stt_final"]) + float(turn["answer_audio_at"]) - float(t5)
            fig.overhead_own_ms = own * 1000
    i_filler = next((i for i in range(i_answer - 1, -1, -1) if frames[i][1] in filler_labels), None)
    if i_filler is not None:
        fig.handover_ms = (t_answer - frames[i_filler][0]) * 1000
        fig.handover_silence = sum(1 for _, lab in frames[i_filler + 1 : i_answer] if lab == 0)
    decision = next((t for t in probe.onsets if t > t_answer), None)
    spoken = [(i, t) for i, (t, lab) in enumerate(frames) if lab == ANSWER_LABEL]
    before = [i for i, t in spoken if decision is None or t <= decision]
    fig.underflow = sum(1 for _, lab in frames[before[0] : before[-1] + 1] if lab == 0)
    if decision is not None:
        after = [t for _, t in spoken if t > decision]
        fig.barge_frames = len(after)
        fig.barge_ms = ((after[-1] if after else spoken[len(before) - 1][1]) - decision) * 1000
    return fig


def _services(app: VoicebridgeApp, probes: dict[str, _Probe]) -> tuple[int, set[int]]:
    """The cleaning map with labelled clips and fakes on fixed delays; (greeting, filler labels)."""
    dmap = load_dialogue_map(str(MAP_PATH))
    labels = {key: i + 1 for i, key in enumerate(dmap.audio)}
    cache = InMemoryAudioCache(
        {key: clip(lab, 1.0 if key.startswith("filler:") else 0.3) for key, lab in labels.items()}
    )
    chunk = LLMStreamChunk(ANSWER, is_safe=True, is_final=True, model="bench-llm")

    def record(rec: dict[str, Any]) -> None:
        probe = probes.get(str(rec.get("trace_id")))
        if probe is not None:
            probe.records.append(rec)

    app.services = CallServices(
        dialogue_map=dmap,
        flow_engine=MapFlowEngine(dmap),
        intent_classifier=KeywordClassifier({"refuse": ["нет"]}, {}),
        audio_cache=cache,
        clock=app.clock,
        render=render_template,
        stt_factory=lambda cid: _TimedSTT([QUESTION, "нет, спасибо"], probes[cid].finals),
        tts_factory=lambda _cid: FakeTTS(
            latency=TTS_DELAY_S, seconds_per_char=0.04, stream_label=ANSWER_LABEL
        ),
        llm_factory=lambda _cid: FakeLLM([LLMAttempt([(LLM_DELAY_S, chunk)])]),
        metrics_sink=record,
    )
    filler_labels = {lab for key, lab in labels.items() if key.startswith("filler:")}
    return labels["static:greeting"], filler_labels


class _Bench:
    """The service, its AudioSocket server and a pool of callers in this loop."""

    def __init__(self) -> None:
        self.app = VoicebridgeApp(Settings(dialogue_map=str(MAP_PATH)), observer=self._observe)
        self.greeting_label, self.filler_labels = _services(self.app, _probes)
        settings = AudioSocketSettings(bind_port=0, max_accepts_per_s=10_000, max_connections=5000)
        self.server = AudioSocketServer(settings, pacer=self.app.pacer)
        self.pool: FakeCallerPool | None = None

    @staticmethod
    def _observe(cid: str, event: CallEvent) -> None:
        probe = _probes.get(cid)
        if probe is not None and event.kind == "listening":
            probe.listening.set()

    async def __aenter__(self) -> _Bench:
        # As `VoicebridgeApp.start()` does: what lives as long as the process is kept out of the
        # collector's generations (before the pacer starts: a full collection stalls its ticks).
        gc.collect()
        gc.freeze()
        await self.server.start()
        self.pool = FakeCallerPool("127.0.0.1", self.server.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.pool is not None
        await self.pool.close()
        await self.server.close()
        gc.unfreeze()

    async def start_call(self) -> tuple[str, FakeAsterisk, asyncio.Task[None]]:
        assert self.pool is not None
        u = uuid.uuid4()
        cid = str(u)
        probe = _probes[cid] = _Probe(greeting_label=self.greeting_label)
        connected = self.server.expect(u)
        caller = await self.pool.connect(u, keep_messages=False)
        conn = await asyncio.wait_for(connected, T)
        _probe_connection(conn, probe)
        call = AriCall(cid, f"channel-{cid}", None, None, conn, asyncio.Event())
        return cid, caller, asyncio.create_task(self.app.on_call(call), name=f"bench-call-{cid}")

    async def end_call(self, caller: FakeAsterisk, handler: asyncio.Task[None]) -> None:
        assert self.pool is not None
        await asyncio.wait_for(handler, T)
        self.pool.hangup(caller)
        await asyncio.wait_for(caller.wait_closed(), T)
        self.pool.callers.remove(caller)


async def _one_call(bench: _Bench, question: bytes, stop: bytes, delay_s: float) -> CallFigures:
    await asyncio.sleep(delay_s)
    cid, caller, handler = await bench.start_call()
    probe = _probes[cid]
    try:
        await asyncio.wait_for(probe.listening.wait(), T)  # the greeting is over
        caller.play(question)
        await asyncio.wait_for(probe.answering.wait(), T)
        caller.play(stop)
        await bench.end_call(caller, handler)
        return _figures(probe, bench.greeting_label, bench.filler_labels)
    finally:
        handler.cancel()
        _probes.pop(cid, None)


def _rss_kb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


@dataclass
class FiguresResult:
    """The per-call figures of one concurrency level, and RSS per active call."""

    concurrent: int
    calls: list[CallFigures]
    rss_per_call_kb: float
    failed: int
    cpu_pct: float = 0.0  # this process (bridge and callers) over the level, % of one core
    late_ms: float = 0.0  # the bridge pacer's worst tick lateness
    resyncs: int = 0  # the bridge pacer's resyncs (stalls over its catch-up bound)
    gc_ms: float = 0.0  # the longest garbage-collector pause


async def _run_level(concurrent: int, question: bytes, stop: bytes, stagger_s: float) -> FiguresResult:
    async with _Bench() as bench:
        base = _rss_kb()
        peak = base
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _rss_kb())
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample(), name="bench-rss-sampler")
        cpu0, wall0 = _cpu_s(), time.monotonic()
        gc_timer = GcTimer()
        runs = [_one_call(bench, question, stop, i * stagger_s) for i in range(concurrent)]
        try:
            results = await asyncio.gather(*runs, return_exceptions=True)
        finally:
            gc_timer.close()
        cpu_pct = (_cpu_s() - cpu0) / (time.monotonic() - wall0) * 100
        done.set()
        await sampler
        pacer = bench.app.pacer
    calls = [r for r in results if isinstance(r, CallFigures)]
    return FiguresResult(
        concurrent,
        calls,
        (peak - base) / concurrent,
        len(results) - len(calls),
        cpu_pct,
        pacer.max_lateness_s * 1000,
        pacer.resyncs,
        gc_timer.max_s * 1000,
    )


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def realtime(enabled: bool = True) -> Iterator[str]:
    """Run this process SCHED_FIFO (as the capacity sweep's processes) inside the block, so the
    figures are the service's and not the other load's on the machine; restored after. Yields
    the scheduling in effect ("SCHED_FIFO", or "default" without the right to it)."""
    if not enabled:
        yield "default"
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except OSError:
        yield "default"
        return
    try:
        yield "SCHED_FIFO"
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, policy, param)


def run_figures(levels: tuple[int, ...] = (1, 50, 200), *, repeat_single: int = 10) -> list[FiguresResult]:
    """Each level's calls at once (starts 10 ms apart); the 1-call level runs `repeat_single`
    calls one after the other."""
    question = espeak_pcm_sync(QUESTION) + bytes(8000)
    stop = espeak_pcm_sync(STOP) + bytes(8000)
    out: list[FiguresResult] = []
    with _Probes():
        for n in levels:
            if n == 1:
                parts = [asyncio.run(_run_level(1, question, stop, 0.0)) for _ in range(repeat_single)]
                merged = [c for p in parts for c in p.calls]
                rss = sum(p.rss_per_call_kb for p in parts) / len(parts)
                out.append(
                    FiguresResult(
                        1,
                        merged,
                        rss,
                        sum(p.failed for p in parts),
                        max(p.cpu_pct for p in parts),
                        max(p.late_ms for p in parts),
                        sum(p.resyncs for p in parts),
                        max(p.gc_ms for p in parts),
                    )
                )
            else:
                out.append(asyncio.run(_run_level(n, question, stop, 0.01)))
    return out


@dataclass
class ShortCalls:
    """N short sequential calls: RSS, tasks and descriptors after warm-up and at the end."""

    calls: int
    warmup: int
    seconds: float
    rss_start_kb: float
    rss_warm_kb: float
    rss_end_kb: float
    fds_warm: int
    fds_end: int
    leftover_tasks: list[str]
    greeting_ms: list[float]

    @property
    def growth_mb(self) -> float:
        """RSS growth from after the warm-up to the end, MB."""
        return (self.rss_end_kb - self.rss_warm_kb) / 1024


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _short_calls(calls: int, warmup: int, progress: Callable[[str], None] | None) -> ShortCalls:
    async with _Bench() as bench:
        baseline = {t.get_name() for t in asyncio.all_tasks()}
        rss_start = _rss_kb()
        rss_warm, fds_warm = rss_start, _fds()
        greeting: list[float] = []
        started = time.monotonic()
        for i in range(calls):
            if i == warmup:
                gc.collect()
                rss_warm, fds_warm = _rss_kb(), _fds()
            cid, caller, handler = await bench.start_call()
            probe = _probes[cid]
            try:
                await asyncio.wait_for(probe.greeted.wait(), T)
                assert bench.pool is not None
                bench.pool.hangup(caller)
                await asyncio.wait_for(handler, T)
                await asyncio.wait_for(caller.wait_closed(), T)
                bench.pool.callers.remove(caller)
                fig = _figures(probe, bench.greeting_label, bench.filler_labels)
                if fig.greeting_ms is not None:
                    greeting.append(fig.greeting_ms)
            finally:
                _probes.pop(cid, None)
            if progress is not None and (i + 1) % 1000 == 0:
                progress(f"  {i + 1} short calls, RSS {_rss_kb() / 1024:.1f} MB")
        gc.collect()
        me = asyncio.current_task()
        leftover = sorted(
            t.get_name() for t in asyncio.all_tasks() if t is not me and t.get_name() not in baseline
        )
        return ShortCalls(
            calls,
            warmup,
            time.monotonic() - started,
            rss_start,
            rss_warm,
            _rss_kb(),
            fds_warm,
            _fds(),
            leftover,
            greeting,
        )


def run_short_calls(
    calls: int = 10_000, *, warmup: int = 200, progress: Callable[[str], None] | None = None
) -> ShortCalls:
    """`calls` sequential calls, each hung up by the caller at the first greeting frame."""
    with _Probes():
        return asyncio.run(_short_calls(calls, min(warmup, calls - 1), progress))


def _p(values: list[float], q: float) -> float:
    return percentile(values, q)


def render_figures(levels: list[FiguresResult], short: ShortCalls | None) -> str:
    """The figures as one table: figure, calls, p50/p95/p99/max, target."""
    rows: list[list[object]] = []

    def add(name: str, level: FiguresResult, values: list[float], target: str) -> None:
        rows.append(
            [name, level.concurrent, len(values), _p(values, 50), _p(values, 95), _p(values, 99),
             max(values) if values else None, target]
        )  # fmt: skip

    for lv in levels:
        c = lv.calls
        add("overhead_ms (written)", lv, [f.overhead_ms for f in c if f.overhead_ms is not None], "")
        target = "<= 2" if lv.concurrent == 1 else "<= 5"
        add(
            "overhead_ms (queued)",
            lv,
            [f.overhead_queued_ms for f in c if f.overhead_queued_ms is not None],
            target,
        )
        add(
            "overhead_ms (own: t2->t4, t5->queued)",
            lv,
            [f.overhead_own_ms for f in c if f.overhead_own_ms is not None],
            "",
        )
        add(
            "barge-in frames after", lv, [float(f.barge_frames) for f in c if f.barge_frames is not None], "0"
        )
        add(
            "barge-in last frame - decision ms", lv, [f.barge_ms for f in c if f.barge_ms is not None], "<= 0"
        )
        add("filler hand-over ms", lv, [f.handover_ms for f in c if f.handover_ms is not None], "<= 20")
        add("underflow frames", lv, [float(f.underflow) for f in c if f.underflow is not None], "0")
        add("greeting_ms", lv, [f.greeting_ms for f in c if f.greeting_ms is not None], "<= 50")
        rows.append(
            ["RSS per active call kB", lv.concurrent, len(c), lv.rss_per_call_kb, None, None, None, ""]
        )
        rows.append(["process CPU %", lv.concurrent, len(c), lv.cpu_pct, None, None, None, ""])
        rows.append(["longest gc pause ms", lv.concurrent, len(c), lv.gc_ms, None, None, None, ""])
        rows.append(
            ["pacer lateness ms (n: resyncs)", lv.concurrent, lv.resyncs, lv.late_ms, None, None, None, ""]
        )
        if lv.failed:
            rows.append(["calls failed", lv.concurrent, lv.failed, None, None, None, None, "0"])
    if short is not None:
        rows.append(["short calls: RSS growth MB", 1, short.calls, short.growth_mb, None, None, None, "< 10"])
        rows.append(["short calls: leftover tasks", 1, short.calls, float(len(short.leftover_tasks)),
                     None, None, None, "0"])  # fmt: skip
        rows.append(["short calls: fds end - warm", 1, short.calls, float(short.fds_end - short.fds_warm),
                     None, None, None, "0"])  # fmt: skip
    headers = ["figure", "calls", "n", "p50", "p95", "p99", "max", "target"]
    return table(headers, rows, title="Per-call figures on real sockets (in-process fakes)")


def figures_json(levels: list[FiguresResult], short: ShortCalls | None) -> dict[str, object]:
    """The figures as plain data, every call's figures included, with `machine_info()`."""
    return {
        "machine": machine_info(),
        "llm_first_token_s": LLM_DELAY_S,
        "tts_first_audio_s": TTS_DELAY_S,
        "levels": [
            {
                "concurrent": lv.concurrent,
                "failed": lv.failed,
                "rss_per_active_call_kb": round(lv.rss_per_call_kb, 1),
                "process_cpu_pct": round(lv.cpu_pct, 1),
                "pacer_max_lateness_ms": round(lv.late_ms, 1),
                "pacer_resyncs": lv.resyncs,
                "gc_max_pause_ms": round(lv.gc_ms, 1),
                "calls": [asdict(c) for c in lv.calls],
            }
            for lv in levels
        ],
        "short_calls": None
        if short is None
        else {
            "calls": short.calls,
            "warmup": short.warmup,
            "seconds": round(short.seconds, 1),
            "rss_start_kb": short.rss_start_kb,
            "rss_after_warmup_kb": short.rss_warm_kb,
            "rss_end_kb": short.rss_end_kb,
            "rss_growth_mb": round(short.growth_mb, 2),
            "fds_after_warmup": short.fds_warm,
            "fds_end": short.fds_end,
            "leftover_tasks": short.leftover_tasks,
            "greeting_ms_p50": percentile(short.greeting_ms, 50),
            "greeting_ms_p99": percentile(short.greeting_ms, 99),
        },
    }
