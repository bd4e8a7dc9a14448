"""The per-call figures over the stand-ins as a table and as JSON (`bench.standin_figures`)."""

from __future__ import annotations

from dataclasses import asdict

from bench.call_figures import LLM_DELAY_S, TTS_DELAY_S, CallFigures
from bench.common import percentile, table
from bench.hotpath import machine_info
from bench.standin_figures import StandinLevel
from bench.standin_levels import PATIENCE_S

__all__ = ["render_standins", "standins_json"]

_ROWS: tuple[tuple[str, str, str], ...] = (
    ("overhead_own_ms", "own: t2->t4 + t5->queued", "<= 2 (1), <= 5 (200)"),
    ("own_to_logic_ms", "  of it t2->t3 (end of turn, loop delay)", ""),
    ("stt_refinement_wait_ms", "    of that, final -> its refinement (adapter)", ""),
    ("own_logic_ms", "  of it t3->t4 (logic to LLM request)", ""),
    ("own_queue_ms", "  of it t5->answer queued", ""),
    ("own_after_refinement_ms", "  own without the refinement wait", ""),
    ("vad_end_after_final_ms", "VAD speech end reported - T0", ""),
    ("vad_end_lag_ms", "VAD speech end reported - last voiced frame", ""),
    ("stt_final_after_speech_ms", "T0 - last voiced frame (stand-in: 500)", ""),
    ("overhead_measured_ms", "first frame - T0 - measured LLM+TTS", ""),
    ("overhead_ms", "first frame - T0 - 400 ms", ""),
    ("llm_first_token_ms", "LLM first token (t4 -> chunk; 300 nominal)", ""),
    ("tts_first_audio_ms", "TTS first audio (chunk -> t5; 100 nominal)", ""),
    ("handover_ms", "filler hand-over ms", "<= 20"),
    ("handover_silence", "filler hand-over silence frames", "0"),
    ("barge_frames", "barge-in frames after", "0"),
    ("greeting_ms", "greeting_ms", "<= 50"),
)


def _values(calls: list[CallFigures], name: str) -> list[float]:
    return [float(v) for c in calls if (v := getattr(c, name, None)) is not None]


def render_standins(levels: list[StandinLevel]) -> str:
    """The figures per level as one table: figure, level, n, p50/p95/p99/max, target; then each
    level's CPU (the bridge's process, with the callers inline; the stand-ins; the caller process,
    else the callers' share of the loop), pacer lateness, the longest GC pause and failures."""
    rows: list[list[object]] = []
    for lv in levels:
        r, label = lv.result, lv.run.plan.label
        for name, text, target in _ROWS:
            v = _values(r.calls, name)
            q = [percentile(v, p) for p in (50, 95, 99)]
            rows.append([text, label, len(v), *q, max(v) if v else None, target])
        if r.callers_cpu_pct is None:
            rows.append(["CPU %: bridge+callers / stand-ins / callers' loop share", label, len(r.calls),
                         r.cpu_pct, lv.standins_cpu_pct, lv.run.callers_loop_pct, None, ""])  # fmt: skip
        else:
            rows.append(["CPU %: bridge / stand-ins / caller process", label, len(r.calls),
                         r.cpu_pct, lv.standins_cpu_pct, r.callers_cpu_pct, None, ""])  # fmt: skip
        rows.append(["pacer lateness ms: bridge / callers; longest gc pause ms", label, r.resyncs,
                     r.late_ms, r.callers_late_ms, r.gc_ms, None, ""])  # fmt: skip
        rows.append(["turns spread over s / load average before", label, None, lv.run.turn_span_s,
                     lv.load_before, None, None, ""])  # fmt: skip
        rows.append(["calls failed", label, r.failed, None, None, None, None, "0"])
    headers = ["figure", "level", "n", "p50", "p95", "p99", "max", "target"]
    out = table(headers, rows, title="Per-call figures over the stand-ins (gRPC SpeechKit, HTTP OpenAI)")
    failed = [f"  {lv.run.plan.label}: call {f.index} ({f.stage}): {f.error}; call_end {f.call_end}"
              for lv in levels for f in lv.run.failures[:5]]  # fmt: skip
    return "\n".join([out, "failed calls (first 5 per level; all in the JSON):", *failed]) if failed else out


def standins_json(
    levels: list[StandinLevel], scheduling: str, standins_scheduling: str = ""
) -> dict[str, object]:
    """The figures as plain data, every call's and every failure's included, with `machine_info()`."""
    return {
        "machine": machine_info(),
        "scheduling": scheduling,
        "standins_scheduling": standins_scheduling,
        "llm_first_token_s_nominal": LLM_DELAY_S,
        "tts_first_audio_s_nominal": TTS_DELAY_S,
        "caller_patience_s": PATIENCE_S,
        "levels": [
            {
                "label": lv.run.plan.label,
                "mode": lv.run.plan.mode,
                "concurrent": lv.result.concurrent,
                "turn_window_s": lv.run.plan.window_s,
                "turn_arrivals": lv.run.plan.arrivals if lv.run.plan.mode == "paced" else None,
                "turn_seed": lv.run.plan.seed if lv.run.plan.mode == "paced" else None,
                "turn_span_s": round(lv.run.turn_span_s, 3),
                "turn_offsets_s": [None if t is None else round(t, 3) for t in lv.run.turn_offsets_s],
                "wall_s": round(lv.run.wall_s, 1),
                "failed": lv.result.failed,
                "failures": [asdict(f) for f in lv.run.failures],
                "load_average_before": round(lv.load_before, 2),
                "process_cpu_pct": round(lv.result.cpu_pct, 1),
                "standins_cpu_pct": round(lv.standins_cpu_pct, 1),
                "callers_loop_pct": round(lv.run.callers_loop_pct, 1),
                "caller_process_cpu_pct": None if (c := lv.result.callers_cpu_pct) is None else round(c, 1),
                "caller_pacer_max_lateness_ms": None
                if (x := lv.result.callers_late_ms) is None
                else round(x, 1),
                "pacer_max_lateness_ms": round(lv.result.late_ms, 1),
                "pacer_resyncs": lv.result.resyncs,
                "gc_max_pause_ms": round(lv.result.gc_ms, 1),
                "rss_per_call_kb": round(lv.result.rss_per_call_kb, 1),
                "calls": [asdict(c) for c in lv.result.calls],
            }
            for lv in levels
        ],
    }
