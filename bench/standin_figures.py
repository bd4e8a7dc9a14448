"""Per-call figures with the real provider adapters talking to the stand-ins on real sockets
(`python -m bench --only standins`): the orchestration overhead per turn over gRPC/HTTP.

The same call and harness as `bench.call_figures` (the service's call path, labelled cached
phrases, `FakeAsterisk` callers in this process), but STT, TTS and LLM are the product adapters
(`YandexSttStreamer`, `YandexTTSManager` over gRPC, `OpenAICompatLLMManager` over HTTP with the
default safety: local rules + the moderation request) and the stand-ins run in two processes of
their own: `testkit.standins.openai_server` (first token 300 ms after the request, the answer's
tokens all at once) and `bench.standin_speechkit` (the SpeechKit stand-in's recognition; its
synthesis is labelled audio 100 ms after a sentence's text, as espeak-ng's time is not fixed).

Provider times are then measured, not fixed. T0 is the STT final as the adapter read it off the
wire (the turn record's t2 = the result's `received_at`). Per call, ms:
- overhead_own_ms: the Orchestrator's own part, (t2 -> t4 LLM request) + (t5 TTS first chunk ->
  answer audio queued), from the turn record (as in `call_figures.figures_of`);
- overhead_measured_ms: first answer frame written - T0 - (LLM first token delay + TTS first
  audio delay as measured), i.e. own + the wait for the pacer's next 20 ms tick;
- overhead_ms: first answer frame written - T0 - 400 ms (the nominal 300 + 100): also holds
  what the wire, the adapters and the stand-ins add to the providers' nominal delays;
- llm_first_token_ms: t4 -> the LLM adapter's first chunk (the first sentence, moderated);
- tts_first_audio_ms: that chunk (its text pushed into the synthesis stream) -> t5.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.call_figures import (
    ANSWER,
    ANSWER_LABEL,
    LLM_DELAY_S,
    QUESTION,
    ROOT,
    TTS_DELAY_S,
    CallBench,
    CallFigures,
    FiguresResult,
    T,
    _Probe,
    figures_of,
    run_figures,
)
from bench.common import percentile, table
from bench.hotpath import machine_info
from orchestrator.adapters.llm.openai_compat import OpenAICompatLLMManager
from orchestrator.adapters.llm.safety import CombinedSafety, LocalRulesSafety, ModerationSafety
from orchestrator.adapters.openai_settings import OpenAISettings, openai_client
from orchestrator.adapters.speechkit import YandexSettings, speechkit_channel
from orchestrator.adapters.stt.yandex import YandexSttStreamer
from orchestrator.adapters.tts.yandex import YandexTTSManager

__all__ = [
    "StandinFigures",
    "StandinLevel",
    "Standins",
    "render_standins",
    "run_standin_figures",
    "standins_json",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class StandinFigures(CallFigures):
    """`CallFigures` (overhead_ms against the nominal 400 ms) plus the measured provider times."""

    llm_first_token_ms: float | None = None
    tts_first_audio_ms: float | None = None
    overhead_measured_ms: float | None = None


class Standins:
    """The OpenAI and SpeechKit stand-ins as child processes (`with Standins() as s:`).

    Started from the caller's scheduling (start them before `realtime()`: they stand for remote
    services, not for the bridge). `OSError`/`RuntimeError` when one does not come up.
    """

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="bench-standins-")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.llm_url = ""
        self.speechkit = ""

    def __enter__(self) -> Standins:
        script = Path(self._dir.name) / "script.json"
        script.write_text(
            json.dumps(
                {"stt": {"default": [QUESTION, "нет, спасибо"]}, "llm": {"rules": [["суббот", ANSWER]]}},
                ensure_ascii=False,
            )
        )
        try:
            llm = self._start(
                "testkit.standins.openai_server", "--first-token-s", str(LLM_DELAY_S), "--token-s", "0",
                script=script,
            )  # fmt: skip
            self.llm_url = re.sub(r".*listening on (\S+).*", r"\1", llm)
            sk = self._start(
                "bench.standin_speechkit", "--label", str(ANSWER_LABEL), "--delay-s", str(TTS_DELAY_S),
                script=script,
            )  # fmt: skip
            self.speechkit = re.sub(r".*listening on (\S+).*", r"\1", sk)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self, module: str, *args: str, script: Path) -> str:
        cmd = [sys.executable, "-m", module, "--port", "0", "--script", str(script), *args]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()  # its one line, once it listens
        if "listening" not in line:
            raise RuntimeError(f"{module} did not start: {line!r}")
        return line

    def cpu_s(self) -> float:
        """User + system CPU seconds the stand-in processes have used so far."""
        total = 0
        for proc in self.procs:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return total / _CLK_TCK

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        self._dir.cleanup()


class StandinCallBench(CallBench):
    """`CallBench` whose STT, TTS and LLM are the product adapters on the stand-ins (with
    `real_stt=False` the STT stays `call_figures`' in-process fake: what the gRPC STT costs)."""

    def __init__(self, standins: Standins, *, real_stt: bool = True) -> None:
        super().__init__()
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

    def figures(self, probe: _Probe) -> StandinFigures:
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
        fig.tts_first_audio_ms = (t5 - token) * 1000
        if fig.overhead_ms is not None:
            fig.overhead_measured_ms = fig.overhead_ms + (LLM_DELAY_S + TTS_DELAY_S - (t5 - t4)) * 1000
        return fig


@dataclass
class StandinLevel:
    """One level's figures, the stand-ins' CPU over it (% of one core) and the load it ran at."""

    result: FiguresResult
    standins_cpu_pct: float
    load_before: float


def wait_for_load(
    max_load: float, progress: Callable[[str], None], *, poll_s: float = 60, limit_s: float = 600
) -> float:
    """Wait (at most `limit_s`) until the 1-minute load average is at most `max_load`; returns it."""
    deadline = time.monotonic() + limit_s
    while (load := os.getloadavg()[0]) > max_load and time.monotonic() < deadline:
        progress(f"load average {load:.2f} > {max_load}: waiting {poll_s:.0f} s")
        time.sleep(poll_s)
    return load


def run_standin_figures(
    standins: Standins,
    levels: tuple[int, ...] = (1, 50, 200),
    *,
    repeat_single: int = 10,
    max_load: float | None = None,
    real_stt: bool = True,
    progress: Callable[[str], None] = lambda _line: None,
) -> list[StandinLevel]:
    """Each level as `run_figures` runs it, over the stand-ins, after one uncounted call; with
    `max_load`, a level of more than one call first waits for the load average to come down to
    it (see `wait_for_load`). `real_stt`: see `StandinCallBench`."""
    out: list[StandinLevel] = []
    # The process's first call pays lazy imports and first-use costs in the adapters (greeting
    # 120 ms, LLM first token +70 ms): one call, not counted, first.
    run_figures((1,), repeat_single=1, bench_factory=lambda: StandinCallBench(standins, real_stt=real_stt))
    for n in levels:
        load = wait_for_load(max_load, progress) if max_load is not None and n > 1 else os.getloadavg()[0]
        progress(f"stand-ins: {n} call(s), load average {load:.2f}")
        cpu0, wall0 = standins.cpu_s(), time.monotonic()
        (result,) = run_figures(
            (n,),
            repeat_single=repeat_single,
            bench_factory=lambda: StandinCallBench(standins, real_stt=real_stt),
        )
        pct = (standins.cpu_s() - cpu0) / (time.monotonic() - wall0) * 100
        out.append(StandinLevel(result, pct, load))
    return out


_ROWS: tuple[tuple[str, str, str], ...] = (
    ("overhead_own_ms", "own: t2->t4 + t5->queued", "<= 2 (1), <= 5 (200)"),
    ("overhead_measured_ms", "first frame - T0 - measured LLM+TTS", ""),
    ("overhead_ms", "first frame - T0 - 400 ms", ""),
    ("llm_first_token_ms", "LLM first token (t4 -> chunk; 300 nominal)", ""),
    ("tts_first_audio_ms", "TTS first audio (chunk -> t5; 100 nominal)", ""),
    ("handover_ms", "filler hand-over ms", "<= 20"),
    ("barge_frames", "barge-in frames after", "0"),
    ("greeting_ms", "greeting_ms", "<= 50"),
)


def _values(calls: list[CallFigures], name: str) -> list[float]:
    return [float(v) for c in calls if (v := getattr(c, name, None)) is not None]


def render_standins(levels: list[StandinLevel]) -> str:
    """The figures per level as one table: figure, calls, n, p50/p95/p99/max, target."""
    rows: list[list[object]] = []
    for lv in levels:
        r = lv.result
        for name, label, target in _ROWS:
            v = _values(r.calls, name)
            q = [percentile(v, p) for p in (50, 95, 99)]
            rows.append([label, r.concurrent, len(v), *q, max(v) if v else None, target])
        rows.append(["bridge+callers CPU % / stand-ins CPU %", r.concurrent, len(r.calls), r.cpu_pct,
                     lv.standins_cpu_pct, None, None, ""])  # fmt: skip
        rows.append(["load average before", r.concurrent, None, lv.load_before, None, None, None, ""])
        if r.failed:
            rows.append(["calls failed", r.concurrent, r.failed, None, None, None, None, "0"])
    headers = ["figure", "calls", "n", "p50", "p95", "p99", "max", "target"]
    return table(headers, rows, title="Per-call figures over the stand-ins (gRPC SpeechKit, HTTP OpenAI)")


def standins_json(levels: list[StandinLevel], scheduling: str) -> dict[str, object]:
    """The figures as plain data, every call's included, with `machine_info()`."""
    return {
        "machine": machine_info(),
        "scheduling": scheduling,
        "llm_first_token_s_nominal": LLM_DELAY_S,
        "tts_first_audio_s_nominal": TTS_DELAY_S,
        "levels": [
            {
                "concurrent": lv.result.concurrent,
                "failed": lv.result.failed,
                "load_average_before": round(lv.load_before, 2),
                "process_cpu_pct": round(lv.result.cpu_pct, 1),
                "standins_cpu_pct": round(lv.standins_cpu_pct, 1),
                "pacer_max_lateness_ms": round(lv.result.late_ms, 1),
                "pacer_resyncs": lv.result.resyncs,
                "gc_max_pause_ms": round(lv.result.gc_ms, 1),
                "calls": [asdict(c) for c in lv.result.calls],
            }
            for lv in levels
        ],
    }
