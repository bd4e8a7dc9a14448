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
the map says goodbye and the bot hangs up. The map is the bench's own copy without the no-input
reprompt (`bench_map`).

Figures per call: greeting_ms (UUID received -> first greeting frame written), overhead_ms
(first answer frame written - T0 - 400 ms; it includes waiting for the pacer's next 20 ms tick)
and overhead_queued_ms (the answer audio queued to the playout, the turn record's
`answer_audio_at`, - T0 - 400 ms: the orchestration alone), handover_ms (first answer frame -
last filler frame before it, write times: 20 = back to back) with the silence frames between
them, underflow (silence frames written between the answer's first frame and its last before the
barge-in), barge-in frames/ms (answer frames written after the VAD's onset decision; the last
answer frame's time - the decision, negative when none followed it).

`bench.short_calls` runs many short calls on the same harness; `bench.figures_report` renders
the figures; `bench.virtual_figures` runs the same call on virtual time.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.bridge_side import rss_kb
from bench.common import GcTimer
from bridge.app import VoicebridgeApp
from bridge.ari import AriCall
from bridge.audiosocket.connection import AudioSocketConnection
from bridge.audiosocket.protocol import Message, Uuid
from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.audiosocket.stream import ServerProtocol
from bridge.gateway import TelephonyGateway
from bridge.gc_policy import apply_gc_settings
from bridge.settings import Settings
from bridge.vad import VadEvent, VadEventKind
from orchestrator.adapters.tts.espeak import espeak_pcm_sync
from orchestrator.cache.memory import InMemoryAudioCache
from orchestrator.dialogue_map.loader import load_dialogue_map
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.dialogue_map.templates import render_template
from orchestrator.domain.models import LLMStreamChunk
from orchestrator.factory import CallServices
from orchestrator.flow_engine import MapFlowEngine
from orchestrator.orchestrator import CallEvent
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
    "PROBES",
    "T",
    "CallBench",
    "bench_map",
    "CallFigures",
    "FiguresResult",
    "Probes",
    "figures_of",
    "realtime",
    "run_figures",
]


@dataclass
class _Probe:
    """One call's timeline on the bridge side."""

    uuid_at: float | None = None
    frames: list[tuple[float, int]] = field(default_factory=list)  # (loop time, label; 0 silence)
    finals: list[float] = field(default_factory=list)  # STT finals (T0s)
    onsets: list[float] = field(default_factory=list)  # VAD SPEECH_ONSET decisions
    speech_ends: list[tuple[float, float]] = field(default_factory=list)  # VAD SPEECH_END (reported, at)
    records: list[dict[str, Any]] = field(default_factory=list)
    listening: asyncio.Event = field(default_factory=asyncio.Event)
    answering: asyncio.Event = field(default_factory=asyncio.Event)
    greeted: asyncio.Event = field(default_factory=asyncio.Event)  # the first greeting frame written
    greeting_label: int = -1
    answer_frames: int = 0
    events: list[tuple[float, str, str | None]] = field(default_factory=list)  # (loop time, kind, text)


PROBES: dict[str, _Probe] = {}


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


class Probes:
    """Bench-only probes on the server protocol (UUID received) and the gateway (VAD decisions)."""

    def __enter__(self) -> None:
        self._first = ServerProtocol._first_messages
        self._vad = TelephonyGateway._on_vad
        first, vad = self._first, self._vad

        def first_messages(proto: ServerProtocol, msgs: list[Message]) -> None:
            head = msgs[0]
            if type(head) is Uuid and (probe := PROBES.get(str(head.uuid))) is not None:
                probe.uuid_at = asyncio.get_running_loop().time()
            first(proto, msgs)

        def on_vad(gateway: TelephonyGateway, event: VadEvent) -> None:
            if event.kind is VadEventKind.SPEECH_ONSET and (probe := PROBES.get(gateway.uuid)):
                probe.onsets.append(asyncio.get_running_loop().time())
            elif event.kind is VadEventKind.SPEECH_END and (probe := PROBES.get(gateway.uuid)):
                probe.speech_ends.append((asyncio.get_running_loop().time(), event.at))
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


def figures_of(probe: _Probe, greeting_label: int, filler_labels: set[int]) -> CallFigures:
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


def bench_map() -> DialogueMap:
    """The bench's own copy of the cleaning map: no no-input reprompt (`no_input_timeout_s` None).

    A caller waiting for its turn slot, or a turn slowed by load, would otherwise get the state's
    playlist again after 10 s of silence, and that audio would sit where the figures are read."""
    dmap = load_dialogue_map(str(MAP_PATH))
    quiet = dmap.settings.model_copy(update={"no_input_timeout_s": None})
    return dmap.model_copy(update={"settings": quiet})


def _services(app: VoicebridgeApp, probes: dict[str, _Probe]) -> tuple[int, set[int]]:
    """`bench_map()` with labelled clips and fakes on fixed delays; (greeting, filler labels)."""
    dmap = bench_map()
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


class CallBench:
    """The service, its AudioSocket server and a pool of callers in this loop."""

    def __init__(self) -> None:
        self.app = VoicebridgeApp(Settings(dialogue_map=str(MAP_PATH)), observer=self._observe)
        self.greeting_label, self.filler_labels = _services(self.app, PROBES)
        settings = AudioSocketSettings(bind_port=0, max_accepts_per_s=10_000, max_connections=5000)
        self.server = AudioSocketServer(settings, pacer=self.app.pacer)
        self.pool: FakeCallerPool | None = None

    @staticmethod
    def _observe(cid: str, event: CallEvent) -> None:
        probe = PROBES.get(cid)
        if probe is None:
            return
        if event.kind == "listening":
            probe.listening.set()
        # What was said, else the payload in short (a provider failure's stage and error).
        text = event.data.get("text") or ", ".join(f"{k}={v}" for k, v in event.data.items())
        probe.events.append((asyncio.get_running_loop().time(), str(event.kind), str(text) or None))

    async def __aenter__(self) -> CallBench:
        # As `VoicebridgeApp.start()` does: what lives as long as the process is kept out of the
        # collector's generations (before the pacer starts: a full collection stalls its ticks).
        gc.collect()
        gc.freeze()
        self._gc_threshold = gc.get_threshold()
        apply_gc_settings(self.app.settings.gc)
        await self.server.start()
        self.pool = FakeCallerPool("127.0.0.1", self.server.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.pool is not None
        await self.pool.close()
        await self.server.close()
        gc.unfreeze()
        gc.set_threshold(*self._gc_threshold)

    async def start_call(self) -> tuple[str, FakeAsterisk, asyncio.Task[None]]:
        assert self.pool is not None
        u = uuid.uuid4()
        cid = str(u)
        probe = PROBES[cid] = _Probe(greeting_label=self.greeting_label)
        connected = self.server.expect(u)
        caller = await self.pool.connect(u, keep_messages=False)
        conn = await asyncio.wait_for(connected, T)
        _probe_connection(conn, probe)
        call = AriCall(cid, f"channel-{cid}", None, None, conn, asyncio.Event())
        return cid, caller, asyncio.create_task(self.app.on_call(call), name=f"bench-call-{cid}")

    def figures(self, probe: _Probe) -> CallFigures:
        """One finished call's figures (a variant with other providers overrides this)."""
        return figures_of(probe, self.greeting_label, self.filler_labels)

    async def end_call(self, caller: FakeAsterisk, handler: asyncio.Task[None]) -> None:
        assert self.pool is not None
        await asyncio.wait_for(handler, T)
        self.pool.hangup(caller)
        await asyncio.wait_for(caller.wait_closed(), T)
        self.pool.callers.remove(caller)


async def _one_call(bench: CallBench, question: bytes, stop: bytes, delay_s: float) -> CallFigures:
    await asyncio.sleep(delay_s)
    cid, caller, handler = await bench.start_call()
    probe = PROBES[cid]
    try:
        await asyncio.wait_for(probe.listening.wait(), T)  # the greeting is over
        caller.play(question)
        await asyncio.wait_for(probe.answering.wait(), T)
        caller.play(stop)
        await bench.end_call(caller, handler)
        return bench.figures(probe)
    finally:
        handler.cancel()
        PROBES.pop(cid, None)


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


async def _run_level(
    concurrent: int, question: bytes, stop: bytes, stagger_s: float, bench_factory: Callable[[], CallBench]
) -> FiguresResult:
    async with bench_factory() as bench:
        base = rss_kb()
        peak = base
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_kb())
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


def run_figures(
    levels: tuple[int, ...] = (1, 50, 200),
    *,
    repeat_single: int = 10,
    bench_factory: Callable[[], CallBench] = CallBench,
) -> list[FiguresResult]:
    """Each level's calls at once (starts 10 ms apart); the 1-call level runs `repeat_single`
    calls one after the other. `bench_factory` (called in each level's loop) builds the harness."""
    question = espeak_pcm_sync(QUESTION) + bytes(8000)
    stop = espeak_pcm_sync(STOP) + bytes(8000)
    out: list[FiguresResult] = []
    with Probes():
        for n in levels:
            if n == 1:
                parts = [
                    asyncio.run(_run_level(1, question, stop, 0.0, bench_factory))
                    for _ in range(repeat_single)
                ]
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
                out.append(asyncio.run(_run_level(n, question, stop, 0.01, bench_factory)))
    return out
