"""The Prometheus exporter on its own: families, the Grafana dashboard's queries, the hot-path
counters it reads (playout underflows, the barge-in stop time, pacer lateness), the admin port."""

from __future__ import annotations

import asyncio
import gc
import json
import re
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bridge.admin import AdminServer, AdminSettings, Readiness
from bridge.metrics import METRIC_NAMES, ServiceMetrics
from bridge.pacer import Pacer
from bridge.playout import Playout
from orchestrator.domain.models import AudioChunk
from orchestrator.events import END_REASONS, CallEvent, CallEventKind

DASHBOARD = Path(__file__).resolve().parent.parent / "docker" / "grafana" / "voicebridge.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _metrics() -> ServiceMetrics:
    return ServiceMetrics(Pacer(), calls_active=lambda: 2, ari_connected=lambda: True)


def _series_names(text: str) -> set[str]:
    """Every series name the exposition can have (families with no labelled child yet included)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return names


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_exporter_has_every_family_it_promises() -> None:
    text = _metrics().exposition().decode()
    families = {
        f.name + ("_total" if f.type == "counter" else "") for f in text_string_to_metric_families(text)
    }
    assert families == METRIC_NAMES


def test_every_metric_the_dashboard_queries_exists() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queried = {name for e in exprs for name in re.findall(r"\bvoicebridge_[a-z_]+", e)}
    exported = _series_names(_metrics().exposition().decode())
    assert queried, "the dashboard queries nothing"
    assert queried <= exported, f"not exported: {sorted(queried - exported)}"
    # ... and it shows every family (nothing exported that nobody looks at).
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in queried}
    assert shown | {n for n in METRIC_NAMES if n + "_bucket" in queried} >= METRIC_NAMES, sorted(
        METRIC_NAMES - shown
    )


def test_records_and_events_become_series() -> None:
    m = _metrics()
    m.observe_record(
        {"event": "turn", "route": "llm", "stt_ms": 310.0, "logic_ms": 4.0, "llm_first_token_ms": 420.0,
         "tts_first_chunk_ms": 150.0, "response_ms": 900.0}
    )  # fmt: skip
    m.observe_record({"event": "turn", "route": "greeting", "stt_ms": None, "response_ms": None})
    m.observe_record(
        {"event": "call_end", "stt_frames_dropped": 7, "stt_resend_dropped_ms": 250, "finals_held": 2,
         "finals_joined": 1}
    )  # fmt: skip
    m.observe_event(CallEvent(CallEventKind.PLAY, 0.0, {"kind": "filler", "key": "filler:x"}))
    m.observe_event(CallEvent(CallEventKind.PLAY, 0.0, {"kind": "answer", "key": "static:x"}))
    m.observe_event(CallEvent(CallEventKind.FILLER_CUT, 0.0, {}))
    failure = {"stage": "playback", "error": "x", "provider": "redis", "kind": "CacheError"}
    m.observe_event(CallEvent(CallEventKind.PROVIDER_FAILURE, 0.0, failure))
    s = _samples(m.exposition().decode())
    assert s[("voicebridge_turn_stage_seconds_count", frozenset({("stage", "stt")}))] == 1
    assert s[("voicebridge_turn_stage_seconds_sum", frozenset({("stage", "response")}))] == 0.9
    assert s[("voicebridge_turn_stage_seconds_count", frozenset({("stage", "llm_first_token")}))] == 1
    assert s[("voicebridge_turns_total", frozenset({("route", "greeting")}))] == 1
    assert s[("voicebridge_fillers_played_total", frozenset())] == 1
    assert s[("voicebridge_fillers_cut_total", frozenset())] == 1
    assert (
        s[("voicebridge_provider_errors_total", frozenset({("provider", "redis"), ("kind", "CacheError")}))]
        == 1
    )
    dropped = frozenset({("direction", "inbound"), ("where", "stt_buffer")})
    assert s[("voicebridge_frames_dropped_total", dropped)] == 7
    not_resent = frozenset({("direction", "inbound"), ("where", "stt_resend")})
    assert s[("voicebridge_frames_dropped_total", not_resent)] == 12.5  # 250 ms of 20 ms frames
    assert s[("voicebridge_calls_active", frozenset())] == 2
    assert s[("voicebridge_end_of_turn_finals_total", frozenset({("kind", "held")}))] == 2
    assert s[("voicebridge_end_of_turn_finals_total", frozenset({("kind", "joined")}))] == 1


class _Sink:
    def __init__(self) -> None:
        self.frames: list[str] = []

    def send_audio(self, frame: bytearray) -> None:
        self.frames.append("audio")

    def send_silence(self) -> None:
        self.frames.append("silence")


async def test_playout_counts_underflows_only_inside_a_segment_and_times_a_cut() -> None:
    sink = _Sink()
    playout = Playout(sink)
    playout.tick()  # idle silence: not an underflow
    await playout.write(AudioChunk(pcm=bytes(640), sample_rate=8000))
    playout.tick()
    playout.tick()
    playout.tick()  # the writer is late: the caller hears a gap mid-speech
    assert (playout.underflows, playout.silence_sent) == (1, 2)
    playout.end_segment()
    playout.tick()
    assert playout.underflows == 1
    stops: list[float] = []
    await playout.write(AudioChunk(pcm=bytes(640), sample_rate=8000))
    playout.watch_cut(asyncio.get_running_loop().time(), stops.append)
    playout.tick()  # still audio (nothing cleared it): no report yet
    assert stops == []
    playout.clear()
    playout.tick()  # silence: reported once
    playout.tick()
    assert len(stops) == 1 and stops[0] >= 0


def test_pacer_lateness_is_bucketed_per_tick() -> None:
    m = ServiceMetrics(pacer := Pacer(), calls_active=lambda: 0, ari_connected=lambda: False)
    pacer.lateness_counts[2] += 3  # three ticks 2-5 ms late
    pacer.lateness_sum_s += 0.009
    s = _samples(m.exposition().decode())
    assert s[("voicebridge_pacer_lateness_seconds_count", frozenset())] == 3
    assert s[("voicebridge_pacer_lateness_seconds_bucket", frozenset({("le", "0.002")}))] == 0
    assert s[("voicebridge_pacer_lateness_seconds_bucket", frozenset({("le", "0.005")}))] == 3


async def test_admin_port_serves_metrics_health_readiness_and_drain() -> None:
    problems: dict[str, str] = {"ari": "not connected"}
    drained: list[bool] = []
    admin = AdminServer(
        AdminSettings(port=0),
        exposition=_metrics().exposition,
        readiness=lambda: Readiness(dict(problems), {"llm": "circuit open for 3 s"}),
        drain=lambda: drained.append(True),
    )
    await admin.start()
    base = f"http://127.0.0.1:{admin.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 200 and "voicebridge_calls_active 2.0" in await r.text()
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 503
                assert await r.json() == {
                    "ready": False,
                    "not_ready": problems,
                    "degraded": {"llm": "circuit open for 3 s"},
                }
            problems.clear()
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 200
                assert await r.json() == {"ready": True, "degraded": {"llm": "circuit open for 3 s"}}
            async with http.post(f"{base}/drain") as r:
                assert r.status == 202 and drained == [True]
    finally:
        await admin.close()


def test_the_readme_lists_every_call_outcome_and_no_other() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    [row] = [line for line in readme.splitlines() if line.startswith("| `voicebridge_calls_total`")]
    assert tuple(re.findall(r"`([a-z_]+)`", row.split("|")[3])) == END_REASONS


def test_frozen_objects_are_the_collectors_freeze_count() -> None:
    # The leak signal of `[gc] freeze_calls`: objects moved out of the collector's reach.
    held = [[] for _ in range(100)]  # tracked containers, frozen below
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen >= len(held)
        value = _samples(_metrics().exposition().decode())[("voicebridge_gc_frozen_objects", frozenset())]
        assert value == frozen
    finally:
        gc.unfreeze()
