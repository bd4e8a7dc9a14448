"""Per-call figures on real sockets (`python -m bench --only figures`, levels in `bench.call_levels`):
orchestration overhead per turn, barge-in, filler hand-over, time to greeting, memory per call and
over many short calls.

The service's call path as `voicebridge serve` runs it (`VoicebridgeApp.on_call`: the real
AudioSocket server, gateway, VAD, playout, pacer and Orchestrator with the cleaning map), with
in-process fakes for the providers on fixed delays, and `FakeAsterisk` callers over TCP: in a
process of their own on the other core (`bench.caller_process`, `--figure-callers process`, the
default; as Asterisk is another process) or in this process and loop (`inline`: at 200 calls the
callers' own work then shares the bridge's loop and core). Every cached phrase
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

The probes that record those timelines are `bench.call_probes`; the concurrency levels
(`run_figures`) are `bench.call_levels`. `bench.short_calls` runs many short calls on the same
harness; `bench.figures_report` renders the figures; `bench.virtual_figures` runs the same call
on virtual time.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.call_probes import ANSWER_LABEL, PROBES, Probe, TimedSTT, probe_connection
from bench.caller_process import CallerProcess, RemoteCaller, RemoteCallerPool
from bridge.app import VoicebridgeApp
from bridge.ari import AriCall
from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.gc_policy import apply_gc_settings
from bridge.media_warmup import warm_media_path
from bridge.settings import Settings
from orchestrator.cache.memory import InMemoryAudioCache
from orchestrator.dialogue_map.loader import load_dialogue_map
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.dialogue_map.templates import render_template
from orchestrator.domain.models import LLMStreamChunk
from orchestrator.factory import CallServices
from orchestrator.flow_engine import MapFlowEngine
from orchestrator.orchestrator import CallEvent
from testkit.fake_asterisk import FakeAsterisk, FakeCallerPool
from testkit.fakes import FakeLLM, FakeTTS, KeywordClassifier, LLMAttempt, clip

ROOT = Path(__file__).resolve().parent.parent
MAP_PATH = ROOT / "dialogue_maps" / "cleaning_quote.ru.json"
LLM_DELAY_S = 0.3  # T0 -> the LLM's first token
TTS_DELAY_S = 0.1  # first text -> the TTS's first audio
ANSWER = "Да, мы работаем в субботу с восьми утра до десяти вечера, записать вас на уборку?"
QUESTION = "а вы работаете в субботу"
STOP = "подождите"
T = 30.0  # bound on any wait of one call

Leg = FakeAsterisk | RemoteCaller  # a caller in this loop, or one in the caller process

__all__ = [
    "ANSWER",
    "LLM_DELAY_S",
    "MAP_PATH",
    "QUESTION",
    "ROOT",
    "STOP",
    "T",
    "TTS_DELAY_S",
    "CallBench",
    "CallFigures",
    "Leg",
    "bench_map",
    "figures_of",
    "one_call",
]


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


def figures_of(probe: Probe, greeting_label: int, filler_labels: set[int]) -> CallFigures:
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


def _services(app: VoicebridgeApp, probes: dict[str, Probe]) -> tuple[int, set[int]]:
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
        stt_factory=lambda cid: TimedSTT([QUESTION, "нет, спасибо"], probes[cid].finals),
        tts_factory=lambda _cid: FakeTTS(
            latency=TTS_DELAY_S, seconds_per_char=0.04, stream_label=ANSWER_LABEL
        ),
        llm_factory=lambda _cid: FakeLLM([LLMAttempt([(LLM_DELAY_S, chunk)])]),
        metrics_sink=record,
    )
    filler_labels = {lab for key, lab in labels.items() if key.startswith("filler:")}
    return labels["static:greeting"], filler_labels


class CallBench:
    """The service, its AudioSocket server and a pool of callers: in this loop, or in `callers`
    (the caller process) when given."""

    def __init__(self, callers: CallerProcess | None = None) -> None:
        self.app = VoicebridgeApp(Settings(dialogue_map=str(MAP_PATH)), observer=self._observe)
        self.greeting_label, self.filler_labels = _services(self.app, PROBES)
        settings = AudioSocketSettings(bind_port=0, max_accepts_per_s=10_000, max_connections=5000)
        self.server = AudioSocketServer(settings, pacer=self.app.pacer)
        self.caller_process = callers
        self.pool: FakeCallerPool | None = None
        self.remote: RemoteCallerPool | None = None

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
        # As `VoicebridgeApp.start()` does: the media path warmed (the first call would make the
        # Silero session on the loop, a 44-86 ms stall), then what lives as long as the process
        # kept out of the collector's generations (before the pacer starts: a full collection
        # stalls its ticks).
        await warm_media_path(self.app.settings.vad, self.app.settings.echo)
        gc.collect()
        gc.freeze()
        self._gc_threshold = gc.get_threshold()
        apply_gc_settings(self.app.settings.gc)
        await self.server.start()
        if self.caller_process is None:
            self.pool = FakeCallerPool("127.0.0.1", self.server.port)
        else:
            self.remote = RemoteCallerPool(self.caller_process, self.server.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.pool is not None:
                await self.pool.close()
            if self.remote is not None:
                await self.remote.close()
        finally:
            await self.server.close()
            gc.unfreeze()
            gc.set_threshold(*self._gc_threshold)

    async def start_call(self) -> tuple[str, Leg, asyncio.Task[None]]:
        u = uuid.uuid4()
        cid = str(u)
        probe = PROBES[cid] = Probe(greeting_label=self.greeting_label)
        connected = self.server.expect(u)
        caller: Leg
        if self.remote is not None:
            caller = await self.remote.connect(u)
        else:
            assert self.pool is not None
            caller = await self.pool.connect(u, keep_messages=False)
        conn = await asyncio.wait_for(connected, T)
        probe_connection(conn, probe)
        call = AriCall(cid, f"channel-{cid}", None, None, conn, asyncio.Event())
        return cid, caller, asyncio.create_task(self.app.on_call(call), name=f"bench-call-{cid}")

    def hangup(self, caller: Leg) -> None:
        """The caller hangs up (EOF), wherever it runs."""
        if isinstance(caller, RemoteCaller):
            assert self.remote is not None
            self.remote.hangup(caller)
        else:
            assert self.pool is not None
            self.pool.hangup(caller)

    def forget(self, caller: Leg) -> None:
        """Drop a closed caller from its pool (a no-op when it is not there)."""
        if isinstance(caller, RemoteCaller):
            if self.remote is not None and caller in self.remote.callers:
                self.remote.callers.remove(caller)
        elif self.pool is not None and caller in self.pool.callers:
            self.pool.callers.remove(caller)

    def figures(self, probe: Probe) -> CallFigures:
        """One finished call's figures (a variant with other providers overrides this)."""
        return figures_of(probe, self.greeting_label, self.filler_labels)

    async def end_call(self, caller: Leg, handler: asyncio.Task[None]) -> None:
        await asyncio.wait_for(handler, T)
        self.hangup(caller)
        await asyncio.wait_for(caller.wait_closed(), T)
        self.forget(caller)


async def one_call(bench: CallBench, question: bytes, stop: bytes, delay_s: float) -> CallFigures:
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
