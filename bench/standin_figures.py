"""Per-call figures with the real provider adapters talking to the stand-ins on real sockets
(`python -m bench --only standins`): the orchestration overhead per turn over gRPC/HTTP.

The same call and harness as `bench.call_figures` (the service's call path, labelled cached
phrases, `FakeAsterisk` callers in their own process or, `inline`, in this one), but STT, TTS and
LLM are the product adapters (`YandexSttStreamer`, `YandexTTSManager` over gRPC,
`OpenAICompatLLMManager` over HTTP with the default safety: local rules + the moderation request)
and the stand-ins run in two processes of their own (`bench.standin_processes`):
`testkit.standins.openai_server` (first token 300 ms after the request, the answer's
tokens all at once) and `bench.standin_speechkit` (the SpeechKit stand-in's recognition; its
synthesis is labelled audio 100 ms after a sentence's text, as espeak-ng's time is not fixed).

The levels (`bench.standin_levels`): one call at a time (10 in turn); N calls paced (the default
row: all N live past their greeting, then their turns spread over `--turn-window` s, even or
Poisson arrivals); the largest N once more in a burst ("stress": every call turns as soon as its
greeting ends, all within about 2 s). The map is the bench's own copy without the no-input
reprompt (`call_figures.bench_map`): a caller waiting for its slot, or a turn slowed by load,
gets no reprompt that would spoil the figures. A caller hangs up itself 10 s after its line
if the bot has neither answered nor hung up; such calls are failures, each with its stage and
error in the JSON.

Provider times are then measured, not fixed. T0 is the STT final as the adapter read it off the
wire (the turn record's t2 = the result's `received_at`). Per call, ms:
- overhead_own_ms: the Orchestrator's own part, (t2 -> t4 LLM request) + (t5 TTS first chunk ->
  answer audio queued), from the turn record (as in `call_figures.figures_of`);
- overhead_measured_ms: first answer frame written - T0 - (LLM first token delay + TTS first
  audio delay as measured), i.e. own + the wait for the pacer's next 20 ms tick;
- overhead_ms: first answer frame written - T0 - 400 ms (the nominal 300 + 100): also holds
  what the wire, the adapters and the stand-ins add to the providers' nominal delays;
- llm_first_token_ms: t4 -> the LLM adapter's first chunk (the first sentence, moderated);
- tts_first_audio_ms: that chunk (its text pushed into the synthesis stream) -> t5;
- own in parts: own_to_logic_ms (t2 -> t3), of which stt_refinement_wait_ms (the STT adapter
  holds a final until its normalized text, `final_refinement_wait_s` 300 ms at most: final ->
  released, by the `FinalRelease` probe), own_logic_ms (t3 -> t4), own_queue_ms (t5 -> queued),
  own_after_refinement_ms (own - the refinement wait);
- vad_end_after_final_ms, vad_end_lag_ms, stt_final_after_speech_ms: the gateway VAD's report of
  the question's speech end - T0 and - the last voiced frame; T0 - that frame (the stand-in
  finalises after 500 ms of silence): where the turn's time went before T0.
`bench.standin_report` renders the table and the JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from bench.call_figures import (
    LLM_DELAY_S,
    QUESTION,
    STOP,
    TTS_DELAY_S,
    CallBench,
    CallFigures,
    T,
    figures_of,
)
from bench.call_levels import CallerMode, FiguresResult, caller_process
from bench.call_probes import PROBES, Probe, Probes
from bench.caller_process import CallerProcess
from bench.standin_levels import Arrivals, LevelPlan, LevelRun, run_level
from bench.standin_processes import Standins
from bench.standin_trace import ClientTrace, trace_dir
from orchestrator.adapters.llm.openai_compat import OpenAICompatLLMManager
from orchestrator.adapters.llm.safety import CombinedSafety, LocalRulesSafety, ModerationSafety
from orchestrator.adapters.openai_settings import OpenAISettings, openai_client
from orchestrator.adapters.speechkit import YandexSettings, speechkit_channel
from orchestrator.adapters.stt.yandex import YandexSttStreamer
from orchestrator.adapters.stt.yandex_call import RecognizeCall
from orchestrator.adapters.tts.espeak import espeak_pcm_sync
from orchestrator.adapters.tts.yandex import YandexTTSManager

__all__ = [
    "StandinFigures",
    "StandinLevel",
    "Standins",
    "level_plans",
    "run_standin_figures",
]


@dataclass
class StandinFigures(CallFigures):
    """`CallFigures` (overhead_ms against the nominal 400 ms) plus the measured provider times."""

    llm_first_token_ms: float | None = None
    tts_first_audio_ms: float | None = None
    overhead_measured_ms: float | None = None
    # overhead_own_ms in its parts: t2 -> t3 (the final to the dialogue logic: the end-of-turn
    # decision and the loop's delay), t3 -> t4 (the logic to the LLM request), t5 -> answer queued.
    own_to_logic_ms: float | None = None
    stt_refinement_wait_ms: float | None = None  # of t2 -> t3: the adapter's wait for the normalized text
    own_after_refinement_ms: float | None = None  # overhead_own_ms - stt_refinement_wait_ms
    own_logic_ms: float | None = None
    own_queue_ms: float | None = None
    # The gateway's VAD reported the question's speech end this long after T0 (> 0: the final
    # waited for it, `EndOfTurn`), and this long after the last voiced frame (hangover + delay).
    vad_end_after_final_ms: float | None = None
    vad_end_lag_ms: float | None = None
    stt_final_after_speech_ms: float | None = None  # T0 - the last voiced frame (500 ms nominal)


class StandinCallBench(CallBench):
    """`CallBench` whose STT, TTS and LLM are the product adapters on the stand-ins (with
    `real_stt=False` the STT stays `call_figures`' in-process fake: what the gRPC STT costs)."""

    def __init__(
        self, standins: Standins, *, real_stt: bool = True, callers: CallerProcess | None = None
    ) -> None:
        super().__init__(callers)
        services = self.app.services
        assert services is not None
        ep = standins.speechkit
        yandex = YandexSettings(stt_endpoint=ep, tts_endpoint=ep, tls=False)
        # One channel per provider, as `bridge.composition` builds them.
        self._stt_channel = stt_channel = speechkit_channel(ep, tls=False)
        self._tts_channel = tts_channel = speechkit_channel(ep, tls=False)
        self._openai = o = OpenAISettings(base_url=standins.llm_url, api_key="standin")
        self._client = client = openai_client(o)
        safety = CombinedSafety([LocalRulesSafety(), ModerationSafety(client, o)])
        llm = services.dialogue_map.settings.llm
        clock = self.app.clock
        self.app.services = dataclasses.replace(
            services,
            stt_factory=(lambda cid: YandexSttStreamer(stt_channel, yandex, clock=clock, request_id=cid))
            if real_stt
            else services.stt_factory,
            tts_factory=lambda cid: YandexTTSManager(tts_channel, yandex, request_id=cid),
            llm_factory=lambda _cid: OpenAICompatLLMManager(client, o, llm, safety=safety),
        )

    async def __aenter__(self) -> StandinCallBench:
        await super().__aenter__()
        # Warm connections, as a running service's are: the gRPC channels and one kept-alive HTTP
        # connection (a level of many calls opens more, cold, as a burst of calls would).
        async with asyncio.timeout(T):
            await asyncio.gather(self._stt_channel.channel_ready(), self._tts_channel.channel_ready())
            await self._client.moderations.create(input="warm-up", model=self._openai.moderation_model)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await super().__aexit__(*exc)
        finally:
            await self._client.close()
            await self._stt_channel.close()
            await self._tts_channel.close()

    def figures(self, probe: Probe) -> StandinFigures:
        """The call's figures with T0 = the turn record's t2 and the measured provider times."""
        turn = next(
            (r for r in probe.records if r.get("answer_audio_at") and r.get("llm_first_token_at")), None
        )
        if turn is None:  # the call never got an answer: what `figures_of` finds
            return StandinFigures(**asdict(figures_of(probe, self.greeting_label, self.filler_labels)))
        t2, t4 = float(turn["t2_stt_final"]), float(turn["t4_llm_request"])
        token, t5 = float(turn["llm_first_token_at"]), float(turn["t5_tts_first_chunk"])
        probe.finals[:] = [t2]
        fig = StandinFigures(**asdict(figures_of(probe, self.greeting_label, self.filler_labels)))
        fig.llm_first_token_ms = (token - t4) * 1000
        if (t3 := turn.get("t3_logic_start")) is not None:
            fig.own_to_logic_ms, fig.own_logic_ms = (float(t3) - t2) * 1000, (t4 - float(t3)) * 1000
        fig.own_queue_ms = (float(turn["answer_audio_at"]) - t5) * 1000
        released = next((t for t, kind, _ in probe.events if kind == "stt_final_released" and t >= t2), None)
        if released is not None:
            fig.stt_refinement_wait_ms = (released - t2) * 1000
            if fig.overhead_own_ms is not None:
                fig.own_after_refinement_ms = fig.overhead_own_ms - fig.stt_refinement_wait_ms
        if probe.speech_ends:  # the first is the question's (the caller is silent before it)
            reported, at = probe.speech_ends[0]
            fig.vad_end_after_final_ms, fig.vad_end_lag_ms = (reported - t2) * 1000, (reported - at) * 1000
            fig.stt_final_after_speech_ms = (t2 - at) * 1000
        fig.tts_first_audio_ms = (t5 - token) * 1000
        if fig.overhead_ms is not None:
            fig.overhead_measured_ms = fig.overhead_ms + (LLM_DELAY_S + TTS_DELAY_S - (t5 - t4)) * 1000
        return fig


class FinalRelease:
    """Bench-only probe: when the STT adapter releases a final (its normalized text came, or
    `final_refinement_wait_s` ran out), as a "stt_final_released" event in the call's probe."""

    def __enter__(self) -> None:
        self._emit = emit = RecognizeCall._emit_pending

        def emit_pending(call: RecognizeCall, text: str) -> None:
            if (probe := PROBES.get(call.shared.call_id)) is not None:
                probe.events.append((asyncio.get_running_loop().time(), "stt_final_released", text))
            emit(call, text)

        setattr(RecognizeCall, "_emit_pending", emit_pending)  # noqa: B010 - a bench-only probe

    def __exit__(self, *exc: object) -> None:
        setattr(RecognizeCall, "_emit_pending", self._emit)  # noqa: B010


@dataclass
class StandinLevel:
    """One level's run (see `bench.standin_levels`), the stand-ins' CPU over it (% of one core)
    and the 1-minute load average before it."""

    run: LevelRun
    standins_cpu_pct: float
    load_before: float

    @property
    def result(self) -> FiguresResult:
        return self.run.result


def wait_for_load(
    max_load: float, progress: Callable[[str], None], *, poll_s: float = 60, limit_s: float = 600
) -> float:
    """Wait (at most `limit_s`) until the 1-minute load average is at most `max_load`; returns it."""
    deadline = time.monotonic() + limit_s
    while (load := os.getloadavg()[0]) > max_load and time.monotonic() < deadline:
        progress(f"load average {load:.2f} > {max_load}: waiting {poll_s:.0f} s")
        time.sleep(poll_s)
    return load


def level_plans(
    levels: tuple[int, ...],
    *,
    window_s: float = 8.0,
    arrivals: Arrivals = "even",
    seed: int = 1,
    stress: bool = True,
) -> list[LevelPlan]:
    """The levels' plans: 1 -> one call at a time; N > 1 -> N paced over `window_s` (N in a burst
    when `window_s` is 0); with `stress` and a window, the largest N once more in a burst."""
    plans = [
        LevelPlan("single", 1) if n == 1
        else LevelPlan("paced", n, window_s, arrivals, seed) if window_s > 0
        else LevelPlan("burst", n)
        for n in levels
    ]  # fmt: skip
    many = [n for n in levels if n > 1]
    if stress and window_s > 0 and many:
        plans.append(LevelPlan("burst", max(many)))
    return plans


def run_standin_figures(
    standins: Standins,
    plans: list[LevelPlan],
    *,
    repeat_single: int = 10,
    max_load: float | None = None,
    real_stt: bool = True,
    callers: CallerMode = "process",
    realtime: bool = True,
    progress: Callable[[str], None] = lambda _line: None,
) -> list[StandinLevel]:
    """Each level (`level_plans`) over the stand-ins, after one uncounted call; the 1-call level
    `repeat_single` times in turn. With `max_load`, a level of more than one call first waits
    for the load average to come down to it (see `wait_for_load`). `real_stt`: see
    `StandinCallBench`. `callers`: in a process of their own (pinned to the other core, SCHED_FIFO
    with `realtime`) or in the bridge's loop (as `call_levels.run_figures`)."""
    lines = (espeak_pcm_sync(QUESTION) + bytes(8000), espeak_pcm_sync(STOP) + bytes(8000))

    out: list[StandinLevel] = []
    directory = trace_dir()
    levels: list[tuple[str, float, float]] = []  # for the trace: each level's span, monotonic s
    trace = ClientTrace() if directory else contextlib.nullcontext()
    with Probes(), FinalRelease(), trace, caller_process(callers, realtime=realtime) as proc:

        def bench() -> StandinCallBench:
            return StandinCallBench(standins, real_stt=real_stt, callers=proc)

        # The process's first call pays lazy imports and first-use costs in the adapters
        # (greeting 120 ms, LLM first token +70 ms): one call, not counted, first.
        run_level(LevelPlan("single", 1), lines, bench)
        for plan in plans:
            many = plan.calls > 1
            load = wait_for_load(max_load, progress) if max_load is not None and many else os.getloadavg()[0]
            progress(f"stand-ins: {plan.label}, load average {load:.2f}")
            cpu0, wall0 = standins.cpu_s(), time.monotonic()
            run = run_level(plan, lines, bench, repeat=1 if many else repeat_single)
            levels.append((plan.label, wall0, time.monotonic()))
            pct = (standins.cpu_s() - cpu0) / (time.monotonic() - wall0) * 100
            out.append(StandinLevel(run, pct, load))
            if run.failures:
                progress(f"  {len(run.failures)} call(s) failed, first: {run.failures[0]}")
    if isinstance(trace, ClientTrace) and directory:
        trace.write(directory, levels)
    return out
