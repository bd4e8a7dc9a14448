"""The per-turn figures on virtual time: the Orchestrator alone, no sockets and no scheduling noise.

The same call as `bench.call_figures` (the cleaning map, labelled clips, the LLM's first token at
T0 + 300 ms, the TTS's first audio 100 ms after its first text), driven by `testkit.fakes`'
`FakeInbound` and `FakeSTT` on `testkit.virtual_time`: the caller asks at 1.0 s (final T0 at
2.3 s), then says "нет, спасибо" over the answer at 4.0 s, which the VAD announces at once
(SPEECH_ONSET: the bot pauses) and confirms 200 ms later. The playout writes into a
`RecordingSink` on the same 20 ms pacer. Virtual time makes the figures exact: what is left is
the design's, e.g. waiting for the next 20 ms tick.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.call_figures import ANSWER, LLM_DELAY_S, MAP_PATH, QUESTION, TTS_DELAY_S
from bench.call_probes import ANSWER_LABEL
from orchestrator.cache.memory import InMemoryAudioCache
from orchestrator.clock import LoopClock
from orchestrator.dialogue_map.loader import load_dialogue_map
from orchestrator.dialogue_map.templates import render_template
from orchestrator.domain.models import LLMStreamChunk
from orchestrator.factory import CallServices, create_orchestrator_instance
from orchestrator.flow_engine import MapFlowEngine
from testkit.fakes import (
    FakeInbound,
    FakeLLM,
    FakeSTT,
    FakeTTS,
    KeywordClassifier,
    LLMAttempt,
    Say,
    clip,
    make_playout,
)
from testkit.virtual_time import run_virtual

__all__ = ["VirtualFigures", "run_virtual_figures"]

ASK_AT, ASK_S, STT_DELAY_S = 1.0, 1.0, 0.3
BARGE_AT = 4.0


@dataclass
class VirtualFigures:
    """Figures of the virtual-time call (ms; frames)."""

    overhead_ms: float  # first answer frame written - T0 - 400 ms
    handover_ms: float  # first answer frame - last filler frame before it (20: back to back)
    handover_silence: int  # silence frames written between them (the audible gap: 0 = seamless)
    underflow: int  # silence frames inside the answer before the barge-in
    barge_frames: int  # answer frames written after the VAD's onset decision
    barge_ms: float  # last answer frame - the decision (negative: none after it)


async def _call() -> VirtualFigures:
    dmap = load_dialogue_map(str(MAP_PATH))
    labels = {key: i + 1 for i, key in enumerate(dmap.audio)}
    fillers = {lab for key, lab in labels.items() if key.startswith("filler:")}
    cache = InMemoryAudioCache(
        {key: clip(lab, 1.0 if lab in fillers else 0.3) for key, lab in labels.items()}
    )
    pacer, playout, sink = make_playout()
    inbound = FakeInbound(
        [
            Say(ASK_AT, QUESTION, duration=ASK_S, stt_delay=STT_DELAY_S),
            Say(BARGE_AT, "нет, спасибо", onset=True, start_delay=0.2),
        ]
    )
    pacer.add(inbound)
    pacer.start()
    stt = FakeSTT(inbound)
    chunk = LLMStreamChunk(ANSWER, is_safe=True, is_final=True, model="bench-llm")
    services = CallServices(
        dialogue_map=dmap,
        flow_engine=MapFlowEngine(dmap),
        intent_classifier=KeywordClassifier({"refuse": ["нет"]}, {}),
        audio_cache=cache,
        clock=LoopClock(),
        render=render_template,
        stt_factory=lambda _cid: stt,
        tts_factory=lambda _cid: FakeTTS(
            latency=TTS_DELAY_S, seconds_per_char=0.04, stream_label=ANSWER_LABEL
        ),
        llm_factory=lambda _cid: FakeLLM([LLMAttempt([(LLM_DELAY_S, chunk)])]),
    )
    orch = await create_orchestrator_instance("virtual-1", services)
    try:
        await orch.run(inbound, playout, None)
    finally:
        pacer.stop()
        playout.close()
    frames = sink.frames
    i_answer = next(i for i, (_, lab) in enumerate(frames) if lab == ANSWER_LABEL)
    t_answer = frames[i_answer][0]
    i_filler = max(i for i in range(i_answer) if frames[i][1] in fillers)
    spoken = [(i, t) for i, (t, lab) in enumerate(frames) if lab == ANSWER_LABEL]
    before = [i for i, t in spoken if t <= BARGE_AT]
    after = [t for _, t in spoken if t > BARGE_AT]
    t0 = ASK_AT + ASK_S + STT_DELAY_S
    return VirtualFigures(
        overhead_ms=(t_answer - t0 - LLM_DELAY_S - TTS_DELAY_S) * 1000,
        handover_ms=(t_answer - frames[i_filler][0]) * 1000,
        handover_silence=sum(1 for _, lab in frames[i_filler + 1 : i_answer] if lab == 0),
        underflow=sum(1 for _, lab in frames[before[0] : before[-1] + 1] if lab == 0),
        barge_frames=len(after),
        barge_ms=((after[-1] if after else frames[before[-1]][0]) - BARGE_AT) * 1000,
    )


def run_virtual_figures() -> VirtualFigures:
    """The call on a fresh virtual-time loop (fails on leftover tasks)."""
    return run_virtual(_call)
