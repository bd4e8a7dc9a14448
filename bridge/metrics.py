"""Prometheus metrics of the service (prometheus-client), served by the admin port (`bridge.admin`).

Nothing here runs per audio frame. Three sources:
- events and records, as they happen: call ends (`calls_total` by outcome), each turn's metrics
  record (`turn_stage_seconds` by stage, `turns_total` by route), barge-ins, fillers, provider
  failures, transfers by outcome (the Orchestrator's `CallEvent`s, seen by the app's observer);
- plain integer counters that the hot path keeps anyway (each call's gateway, playout and
  AudioSocket leg; the pacer), summed at scrape time by `collect()`: live calls are read in
  place, a call's final counts are added to the retired totals when it ends, so each counter only
  grows;
- the garbage collector's pauses, timed by a `gc.callbacks` hook into plain bucket counts (no
  lock may be taken inside a collection).

Labels are small fixed sets (outcome, stage, route, provider, error class, direction); never a
call id. `METRIC_NAMES` lists every family exported (the Grafana dashboard is checked against it).
"""

from __future__ import annotations

import bisect
import gc
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, get_args

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from bridge.pacer import LATENESS_BUCKETS_S, Pacer
from orchestrator.domain.models import TransferOutcome
from orchestrator.events import CallEvent, CallEventKind
from orchestrator.metrics import MetricsRecord

if TYPE_CHECKING:
    from bridge.gateway import TelephonyGateway

__all__ = ["CONTENT_TYPE", "METRIC_NAMES", "ServiceMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Turn record field (ms) -> the `stage` label of `voicebridge_turn_stage_seconds`.
STAGES = {
    "stt": "stt_ms",
    "logic": "logic_ms",
    "llm_first_token": "llm_first_token_ms",
    "tts_first_chunk": "tts_first_chunk_ms",
    "response": "response_ms",
}
_STAGE_BUCKETS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_BARGE_IN_BUCKETS_S = (0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.1, 0.2, 0.5)
_GC_BUCKETS_S = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
# Counters of one call (`TelephonyGateway.stats()` keys) -> (family, labels).
_CALL_COUNTERS: dict[str, tuple[str, dict[str, str]]] = {
    "frames_in": ("voicebridge_frames", {"direction": "inbound", "kind": "audio"}),
    "frames_out": ("voicebridge_frames", {"direction": "outbound", "kind": "audio"}),
    "silence_out": ("voicebridge_frames", {"direction": "outbound", "kind": "silence"}),
    "ring_out": ("voicebridge_frames", {"direction": "outbound", "kind": "ringback"}),
    "dropped_in": ("voicebridge_frames_dropped", {"direction": "inbound", "where": "before_call"}),
    "stt_dropped": ("voicebridge_frames_dropped", {"direction": "inbound", "where": "stt_buffer"}),
    "stt_resend_dropped": ("voicebridge_frames_dropped", {"direction": "inbound", "where": "stt_resend"}),
    "dropped_out": ("voicebridge_frames_dropped", {"direction": "outbound", "where": "socket"}),
    "vad_dropped": ("voicebridge_frames_dropped", {"direction": "inbound", "where": "vad_queue"}),
    "underflows": ("voicebridge_outbound_underflows", {}),
}
_HELP = {
    "voicebridge_frames": "20 ms audio frames received from and sent to callers",
    "voicebridge_frames_dropped": "audio frames dropped: inbound before a call took them, by the STT buffer (provider behind), sent to STT on a failed connection and beyond its resend bound, or unjudged by the VAD's batch queue (full), outbound when the socket could not take them",
    "voicebridge_outbound_underflows": "silent frames sent in the middle of bot speech (the answer's audio was late: the caller heard a gap)",
}

# voicebridge_end_of_turn_finals' kinds: the call-end record's field for each.
_END_OF_TURN_FINALS = {"held": "finals_held", "joined": "finals_joined"}

METRIC_NAMES = frozenset(
    {
        "voicebridge_calls_active",
        "voicebridge_calls_total",
        "voicebridge_turns_total",
        "voicebridge_turn_stage_seconds",
        "voicebridge_barge_ins_total",
        "voicebridge_barge_in_stop_seconds",
        "voicebridge_fillers_played_total",
        "voicebridge_fillers_cut_total",
        "voicebridge_provider_errors_total",
        "voicebridge_frames_total",
        "voicebridge_frames_dropped_total",
        "voicebridge_outbound_underflows_total",
        "voicebridge_pacer_lateness_seconds",
        "voicebridge_pacer_resyncs_total",
        "voicebridge_gc_pause_seconds",
        "voicebridge_gc_frozen_objects",
        "voicebridge_ari_connected",
        "voicebridge_transfers_total",
        "voicebridge_end_of_turn_finals_total",
    }
)


class _GcPauses:
    """Garbage-collector pauses by generation, as bucket counts (`gc.callbacks` hook)."""

    def __init__(self) -> None:
        self.counts = [[0] * (len(_GC_BUCKETS_S) + 1) for _ in range(3)]
        self.sums = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        # Runs inside a collection: plain arithmetic only, no lock, no allocation worth naming.
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = min(max(info.get("generation", 0), 0), 2)
        self.sums[generation] += pause
        self.counts[generation][bisect.bisect_left(_GC_BUCKETS_S, pause)] += 1


def _buckets(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (the last is +Inf) as Prometheus' cumulative `le` buckets."""
    cumulative, out = 0, []
    for bound, count in zip([*map(str, bounds), "+Inf"], counts, strict=True):
        cumulative += count
        out.append((bound, float(cumulative)))
    return out


class ServiceMetrics(Collector):
    """The service's metrics in their own registry; `exposition()` is what `/metrics` serves."""

    def __init__(
        self,
        pacer: Pacer,
        *,
        calls_active: Callable[[], int],
        ari_connected: Callable[[], bool],
    ) -> None:
        self._pacer = pacer
        self._calls_active = calls_active
        self._ari_connected = ari_connected
        self._live: set[TelephonyGateway] = set()
        self._retired: dict[str, float] = dict.fromkeys(_CALL_COUNTERS, 0.0)
        self._gc = _GcPauses()
        # No `*_created` series: process start time is what they would say, for every family.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = r = CollectorRegistry(auto_describe=False)
        self.calls_total = Counter("voicebridge_calls", "calls ended, by outcome", ["outcome"], registry=r)
        self.turns_total = Counter("voicebridge_turns", "dialogue turns, by route", ["route"], registry=r)
        self.turn_stage = Histogram(
            "voicebridge_turn_stage_seconds",
            "per-turn stage durations from the t1..t6 marks: stt (speech onset to final), logic, "
            "llm_first_token, tts_first_chunk, response (end of the caller's words to the first bot audio)",
            ["stage"],
            buckets=_STAGE_BUCKETS_S,
            registry=r,
        )
        self.barge_ins = Counter("voicebridge_barge_ins", "times the caller cut the bot off", registry=r)
        self.transfers = Counter(
            "voicebridge_transfers",
            "transfers to a person (a map's action TRANSFER) by outcome: answered, busy, no_answer, failed",
            ["outcome"],
            registry=r,
        )
        for outcome in get_args(TransferOutcome):  # every outcome shown from the start, at 0
            self.transfers.labels(outcome)
        self.barge_in_stop = Histogram(
            "voicebridge_barge_in_stop_seconds",
            "barge-in decision to the bot's last frame: the first silent frame sent after it",
            buckets=_BARGE_IN_BUCKETS_S,
            registry=r,
        )
        self.fillers_played = Counter("voicebridge_fillers_played", "fillers started", registry=r)
        self.fillers_cut = Counter(
            "voicebridge_fillers_cut", "fillers cut because the answer was ready", registry=r
        )
        self.provider_errors = Counter(
            "voicebridge_provider_errors",
            "provider failures a call had to cover (the caller heard the emergency phrase)",
            ["provider", "kind"],
            registry=r,
        )
        self.end_of_turn_finals = Counter(
            "voicebridge_end_of_turn_finals",
            "STT finals the end of turn held for the caller's silence (a turn's first), and joined to "
            "the one before (a turn said with a pause), from the call-end records",
            ["kind"],
            registry=r,
        )
        for kind in _END_OF_TURN_FINALS:
            self.end_of_turn_finals.labels(kind)
        r.register(self)

    # --- lifecycle ---
    def install_gc_hook(self) -> None:
        """Start timing garbage-collector pauses (idempotent)."""
        if self._gc not in gc.callbacks:
            gc.callbacks.append(self._gc)

    def remove_gc_hook(self) -> None:
        """Stop timing them (idempotent)."""
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)

    # --- calls ---
    def call_started(self, gateway: TelephonyGateway) -> None:
        """Count `gateway`'s frames from now on (read at scrape time)."""
        self._live.add(gateway)

    def call_ended(self, gateway: TelephonyGateway, outcome: str) -> None:
        """The call is over: its final counts join the totals, its outcome is counted."""
        if gateway in self._live:
            self._live.discard(gateway)
            for key, value in gateway.stats().items():
                if key in self._retired:
                    self._retired[key] += value
        self.calls_total.labels(outcome).inc()

    def observe_event(self, event: CallEvent, gateway: TelephonyGateway | None = None) -> None:
        """One call event (the app's observer hands every event here)."""
        kind = event.kind
        if kind is CallEventKind.BARGE_IN:
            self.barge_ins.inc()
            if gateway is not None:
                gateway.outbound.watch_cut(event.at, self.barge_in_stop.observe)
        elif kind is CallEventKind.PLAY:
            if event.data.get("kind") == "filler":
                self.fillers_played.inc()
        elif kind is CallEventKind.TRANSFER:
            self.transfers.labels(str(event.data["outcome"])).inc()
        elif kind is CallEventKind.FILLER_CUT:
            self.fillers_cut.inc()
        elif kind is CallEventKind.PROVIDER_FAILURE:
            self.provider_errors.labels(str(event.data["provider"]), str(event.data["kind"])).inc()

    def observe_record(self, record: MetricsRecord) -> None:
        """One metrics record (a turn or a call's end; `orchestrator.metrics`)."""
        event = record.get("event")
        if event == "turn":
            self.turns_total.labels(str(record.get("route") or "none")).inc()
            for stage, field in STAGES.items():
                ms = record.get(field)
                if isinstance(ms, int | float) and ms >= 0:
                    self.turn_stage.labels(stage).observe(ms / 1000)
        elif event == "call_end":
            dropped = record.get("stt_frames_dropped")
            if isinstance(dropped, int):
                self._retired["stt_dropped"] += dropped
            resend_ms = record.get("stt_resend_dropped_ms")
            if isinstance(resend_ms, int):
                # ms, not frames: the resend bound cuts inside a frame; the family counts 20 ms frames.
                self._retired["stt_resend_dropped"] += resend_ms / 20
            for kind, key in _END_OF_TURN_FINALS.items():
                count = record.get(key)
                if isinstance(count, int) and count > 0:
                    self.end_of_turn_finals.labels(kind).inc(count)

    # --- scrape time ---
    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        """The scrape-time families (prometheus-client calls this on each scrape)."""
        yield GaugeMetricFamily("voicebridge_calls_active", "calls in progress", value=self._calls_active())
        yield GaugeMetricFamily(
            "voicebridge_ari_connected", "1 while the ARI websocket is up", value=float(self._ari_connected())
        )
        totals = dict(self._retired)
        for gateway in self._live:
            for key, value in gateway.stats().items():
                if key in totals:
                    totals[key] += value
        families: dict[str, CounterMetricFamily] = {}
        for key, (name, labels) in _CALL_COUNTERS.items():
            family = families.get(name)
            if family is None:
                family = families[name] = CounterMetricFamily(name, _HELP[name], labels=list(labels))
            family.add_metric(list(labels.values()), totals[key])
        yield from families.values()
        pacer = self._pacer
        lateness = HistogramMetricFamily(
            "voicebridge_pacer_lateness_seconds",
            "how late each 20 ms pacer tick ran (every call's outbound frame waits for it)",
        )
        lateness.add_metric([], _buckets(LATENESS_BUCKETS_S, pacer.lateness_counts), pacer.lateness_sum_s)
        yield lateness
        yield CounterMetricFamily(
            "voicebridge_pacer_resyncs",
            "loop stalls too long to catch up (frames skipped)",
            value=pacer.resyncs,
        )
        gc_family = HistogramMetricFamily(
            "voicebridge_gc_pause_seconds", "garbage-collector pauses, by generation", labels=["generation"]
        )
        for generation in range(3):
            buckets = _buckets(_GC_BUCKETS_S, self._gc.counts[generation])
            gc_family.add_metric([str(generation)], buckets, self._gc.sums[generation])
        yield gc_family
        # With `[gc] freeze_calls` a frozen object that dies in a cycle is never freed: this
        # growing while the calls in progress do not is that leak (bridge/gc_policy.py).
        yield GaugeMetricFamily(
            "voicebridge_gc_frozen_objects",
            "objects the garbage collector no longer walks (gc.freeze: start-up objects, and live calls with [gc] freeze_calls)",
            value=gc.get_freeze_count(),
        )

    def exposition(self) -> bytes:
        """The Prometheus text format of everything above."""
        return generate_latest(self.registry)
