"""The soak's record and its table (`bench.soak`): faults, each call with the waits where the bot
owed the caller audio, and the numbers the README's soak table gives (`SoakResult.summary`)."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent) + "/"
RESPONSE_WAIT_S = 40.0  # a wait longer than this: the call is stuck, the caller hangs up


@dataclass
class Fault:
    target: str
    action: str  # "kill" | "freeze" | "drop"
    start: float  # seconds since the soak began
    end: float = -1.0  # when it was healed


@dataclass
class Wait:
    owed: float  # seconds since the soak began
    waited_s: float | None  # until the first bot audio; None: none came
    bound_s: float
    faults: list[str]
    closed_s: float | None = None  # no bot audio, the line closed this long after `owed`

    @property
    def silent_s(self) -> float:
        """What the caller heard of silence: until bot audio, or the line closing, or the
        harness giving up (`RESPONSE_WAIT_S`)."""
        if self.waited_s is not None:
            return self.waited_s
        return self.closed_s if self.closed_s is not None else RESPONSE_WAIT_S

    @property
    def mute(self) -> bool:
        """No bot audio and the line stayed open: the caller was left in silence."""
        return self.waited_s is None and self.closed_s is None

    @property
    def excess_s(self) -> float:
        return max(0.0, self.silent_s - self.bound_s)


@dataclass
class CallRecord:
    slot: int
    start: float
    end: float = -1.0
    reason: str = "unknown"  # the service's end reason (app.outcomes)
    harness: str = ""  # what the harness had to do: "", "no_leg", "stuck_hangup"
    repeats: int = 0  # times the caller said its last line again
    waits: list[Wait] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)


@dataclass
class SoakResult:
    minutes: float
    concurrent: int
    seed: int
    calls: list[CallRecord]
    faults: list[Fault]
    rss_mb: list[tuple[float, float]]  # (seconds since start, MB)
    fds: list[tuple[float, int]]  # (seconds since start, open descriptors)
    baseline_tasks: dict[str, int]
    leftover_tasks: dict[str, int]
    baseline_fds: int
    end_fds: int
    leftover_fd_kinds: dict[str, int]
    bound_s: float
    fault_bound_s: float
    harness_rss_mb: list[tuple[float, float]] = field(default_factory=list)  # the harness's own
    objects_grown: dict[str, int] = field(default_factory=dict)  # the service's, by type, end - start
    memory_top: dict[str, object] = field(default_factory=dict)  # its /debug/tracemalloc diff
    load: str = ""  # the machine's load average at the end
    restart_failures: int = 0  # starts of a killed peer that outlasted their bound (then retried)

    def summary(self) -> dict[str, object]:
        """The numbers of the table, as a dict."""
        reasons = Counter(c.reason for c in self.calls)
        failed = [c for c in self.calls if c.reason != "end_call"]
        unexplained = [c for c in failed if not c.faults]
        waits = [w for c in self.calls for w in c.waits]
        healthy = [w for w in waits if not w.faults and w.waited_s is not None]
        slope = (
            _slope([(t, mb) for t, mb in self.rss_mb if t >= self.rss_mb[-1][0] / 2]) if self.rss_mb else 0.0
        )
        at_minute = {
            m: min(self.rss_mb, key=lambda sample: abs(sample[0] - m * 60))[1]
            for m in _minutes(self.minutes)
            if self.rss_mb
        }
        return {
            "calls": len(self.calls),
            "completed": reasons.get("end_call", 0),
            "failed": len(failed),
            "failed_by_reason": dict(Counter(c.reason for c in failed)),
            "failed_unexplained": len(unexplained),
            "harness_actions": dict(Counter(c.harness for c in self.calls if c.harness)),
            "calls_with_repeated_line": sum(1 for c in self.calls if c.repeats),
            "faults": dict(Counter(f"{f.target}:{f.action}" for f in self.faults)),
            "waits": len(waits),
            "wait_p50_s_no_fault": _pct([w.waited_s for w in healthy if w.waited_s is not None], 50),
            "wait_max_s_no_fault": max((w.waited_s or 0.0 for w in healthy), default=0.0),
            "dead_air_beyond_bound_s": round(sum(w.excess_s for w in waits), 2),
            "dead_air_beyond_bound_no_fault_s": round(sum(w.excess_s for w in waits if not w.faults), 2),
            "waits_over_bound": sum(1 for w in waits if w.excess_s > 0),
            "waits_ended_by_hangup": sum(1 for w in waits if w.closed_s is not None),
            "waits_never_answered": sum(1 for w in waits if w.mute),
            "rss_mb_first": self.rss_mb[0][1] if self.rss_mb else 0.0,
            "rss_mb_max": max((mb for _, mb in self.rss_mb), default=0.0),
            "rss_mb_last": self.rss_mb[-1][1] if self.rss_mb else 0.0,
            "rss_mb_per_min_second_half": round(slope, 2),
            "rss_mb_at_minute": at_minute,
            "harness_rss_mb_first": self.harness_rss_mb[0][1] if self.harness_rss_mb else 0.0,
            "harness_rss_mb_last": self.harness_rss_mb[-1][1] if self.harness_rss_mb else 0.0,
            "fds_max_during": max((n for _, n in self.fds), default=0),
            "leftover_tasks": sum(self.leftover_tasks.values()),
            "leftover_fds": self.end_fds - self.baseline_fds,
        }

    def render(self) -> str:
        """The plain-text table."""
        s = self.summary()
        rows = [
            (
                "duration, concurrency, seed",
                f"{self.minutes:g} min, {self.concurrent} calls, seed {self.seed}",
            ),
            ("faults injected", _fmt(s["faults"])),
            ("calls", s["calls"]),
            ("completed (goodbye, end_call)", s["completed"]),
            ("failed, by end reason", f"{s['failed']} {_fmt(s['failed_by_reason'])}"),
            ("failed with no fault overlapping", s["failed_unexplained"]),
            ("harness had to act", _fmt(s["harness_actions"]) or "never"),
            ("calls where the caller repeated its last line", s["calls_with_repeated_line"]),
            ("bot owed audio (waits)", s["waits"]),
            (
                "wait, no fault: p50 / max (s)",
                f"{s['wait_p50_s_no_fault']:.2f} / {s['wait_max_s_no_fault']:.2f}",
            ),
            (
                f"dead air beyond bound ({self.bound_s:g} s; {self.fault_bound_s:g} s in a fault)",
                f"{s['dead_air_beyond_bound_s']} s over {s['waits_over_bound']} waits "
                f"({s['dead_air_beyond_bound_no_fault_s']} s with no fault)",
            ),
            ("waits ended by the bot hanging up, no audio", s["waits_ended_by_hangup"]),
            ("waits never answered, line open (went mute)", s["waits_never_answered"]),
            (
                "service RSS first / max / last (MB)",
                f"{s['rss_mb_first']:.1f} / {s['rss_mb_max']:.1f} / {s['rss_mb_last']:.1f}",
            ),
            ("service RSS at minute (MB)", _fmt(s["rss_mb_at_minute"])),
            ("service RSS slope, second half (MB/min, least squares)", s["rss_mb_per_min_second_half"]),
            (
                "harness RSS first / last (MB)",
                f"{s['harness_rss_mb_first']:.1f} / {s['harness_rss_mb_last']:.1f}",
            ),
            ("open fds: at the start / max during the soak", f"{self.baseline_fds} / {s['fds_max_during']}"),
            ("leftover tasks at the end", f"{s['leftover_tasks']} {_fmt(self.leftover_tasks)}".strip()),
            (
                "leftover fds at the end",
                f"{s['leftover_fds']} ({self.baseline_fds} -> {self.end_fds}) {_fmt(self.leftover_fd_kinds)}",
            ),
        ]
        if self.objects_grown:
            top = dict(list(self.objects_grown.items())[:8])
            rows.append(("service objects grown, by type (end - start)", _fmt(top)))
        places = self.memory_top.get("top")
        if isinstance(places, list):
            grown = [p for p in places[:8] if isinstance(p, dict)]
            rows.append(
                (
                    "service allocations made since tracing began, still live (MB)",
                    self.memory_top.get("traced_mb", "?"),
                )
            )
            rows.append(
                (
                    "  most of them, by source line (KB)",
                    ", ".join(f"{_short(str(p['where']))} {p['size_diff_kb']:+}" for p in grown),
                )
            )
        if self.restart_failures:
            rows.append(("peer restarts that timed out and were retried", self.restart_failures))
        if self.load:
            rows.append(("machine load average (1 min) at the end", self.load))
        width = max(len(k) for k, _ in rows)
        lines = [f"soak with random faults ({self.minutes:g} min)", "-" * (width + 40)]
        lines += [f"{k:<{width}}  {v}" for k, v in rows]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {"summary": self.summary(), **{k: v for k, v in asdict(self).items()}},
            ensure_ascii=False,
            indent=1,
            default=str,
        )


def _fmt(d: object) -> str:
    if not isinstance(d, dict) or not d:
        return ""
    return "(" + ", ".join(f"{k} {v}" for k, v in sorted(d.items())) + ")"


def _short(where: str) -> str:
    """A source path from the package on: `.../site-packages/grpc/aio/_call.py:367` -> `grpc/aio/_call.py:367`."""
    if where.startswith(_ROOT):
        return where[len(_ROOT) :]
    for marker in ("site-packages/", "/lib/python3.11/"):
        if marker in where:
            return where.rsplit(marker, 1)[1]
    return where


def _slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, MB per minute; 0.0 for fewer than 2."""
    if len(samples) < 2 or len({t for t, _ in samples}) < 2:
        return 0.0
    return statistics.linear_regression([t for t, _ in samples], [mb for _, mb in samples]).slope * 60


def _minutes(total: float) -> list[int]:
    """The minutes the RSS series is reported at: 1, 5, 10, 15, ... up to `total`."""
    return [m for m in (1, *range(5, int(total) + 1, 5)) if m <= total]


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]
