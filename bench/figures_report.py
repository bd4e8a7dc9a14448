"""The per-call figures as a table with their targets, and as JSON with the machine."""

from __future__ import annotations

from dataclasses import asdict

from bench.call_figures import LLM_DELAY_S, TTS_DELAY_S
from bench.call_levels import FiguresResult
from bench.common import percentile, table
from bench.hotpath import machine_info
from bench.short_calls import ShortCalls
from bench.virtual_figures import VirtualFigures

__all__ = ["figures_json", "render_figures"]


def _p(values: list[float], q: float) -> float:
    return percentile(values, q)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def render_figures(
    levels: list[FiguresResult], short: ShortCalls | None, virtual: VirtualFigures | None = None
) -> str:
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
        add(
            "filler hand-over silence frames",
            lv,
            [float(f.handover_silence) for f in c if f.handover_silence is not None],
            "0",
        )
        add("underflow frames", lv, [float(f.underflow) for f in c if f.underflow is not None], "0")
        add("greeting_ms", lv, [f.greeting_ms for f in c if f.greeting_ms is not None], "<= 50")
        rows.append(
            ["RSS per active call kB", lv.concurrent, len(c), lv.rss_per_call_kb, None, None, None, ""]
        )
        own = "bridge CPU %" if lv.callers_cpu_pct is not None else "bridge + callers CPU % (inline)"
        rows.append([own, lv.concurrent, len(c), lv.cpu_pct, None, None, None, ""])
        if lv.callers_cpu_pct is not None:
            rows.append(
                ["caller process CPU %", lv.concurrent, len(c), lv.callers_cpu_pct, None, None, None, ""]
            )
            rows.append(
                ["caller pacer lateness ms", lv.concurrent, len(c), lv.callers_late_ms, None, None, None, ""]
            )
        rows.append(["longest gc pause ms", lv.concurrent, len(c), lv.gc_ms, None, None, None, ""])
        rows.append(
            ["pacer lateness ms (n: resyncs)", lv.concurrent, lv.resyncs, lv.late_ms, None, None, None, ""]
        )
        if lv.failed:
            rows.append(["calls failed", lv.concurrent, lv.failed, None, None, None, None, "0"])
    if virtual is not None:
        v = virtual
        rows.append(["virtual time: overhead_ms (written)", 1, 1, v.overhead_ms, None, None, None, ""])
        rows.append(
            ["virtual time: barge-in frames after", 1, 1, float(v.barge_frames), None, None, None, "0"]
        )
        rows.append(
            ["virtual time: barge-in last frame - decision ms", 1, 1, v.barge_ms, None, None, None, "<= 0"]
        )
        rows.append(["virtual time: filler hand-over ms", 1, 1, v.handover_ms, None, None, None, "<= 20"])
        rows.append(["virtual time: filler hand-over silence frames", 1, 1, float(v.handover_silence),
                     None, None, None, "0"])  # fmt: skip
        rows.append(["virtual time: underflow frames", 1, 1, float(v.underflow), None, None, None, "0"])
    if short is not None:
        rows.append(["short calls: RSS growth MB", 1, short.calls, short.growth_mb, None, None, None, "< 10"])
        rows.append(["short calls: leftover tasks", 1, short.calls, float(len(short.leftover_tasks)),
                     None, None, None, "0"])  # fmt: skip
        rows.append(["short calls: fds end - warm", 1, short.calls, float(short.fds_end - short.fds_warm),
                     None, None, None, "0"])  # fmt: skip
    headers = ["figure", "calls", "n", "p50", "p95", "p99", "max", "target"]
    return table(headers, rows, title="Per-call figures on real sockets (in-process fakes)")


def figures_json(
    levels: list[FiguresResult], short: ShortCalls | None, virtual: VirtualFigures | None = None
) -> dict[str, object]:
    """The figures as plain data, every call's figures included, with `machine_info()`."""
    return {
        "machine": machine_info(),
        "llm_first_token_s": LLM_DELAY_S,
        "virtual_time": None if virtual is None else asdict(virtual),
        "tts_first_audio_s": TTS_DELAY_S,
        "levels": [
            {
                "concurrent": lv.concurrent,
                "failed": lv.failed,
                "rss_per_active_call_kb": round(lv.rss_per_call_kb, 1),
                "process_cpu_pct": round(lv.cpu_pct, 1),
                "caller_process_cpu_pct": _round(lv.callers_cpu_pct),
                "caller_pacer_max_lateness_ms": _round(lv.callers_late_ms),
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
