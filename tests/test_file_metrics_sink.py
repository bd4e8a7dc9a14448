"""`FileMetricsSink`: one open, line-buffered handle; each record on disk as it is written."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bridge.metrics_sinks import FileMetricsSink
from orchestrator.metrics import MetricsRecord


def test_records_reach_the_file_at_once_through_one_handle_closed_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "turns.jsonl"
    logged: list[MetricsRecord] = []
    sink = FileMetricsSink(str(path), log_to=logged.append)
    fds = len(os.listdir("/proc/self/fd"))
    sink({"event": "turn", "text": "да"})
    sink({"event": "call_end", "reason": "end_call"})
    assert len(os.listdir("/proc/self/fd")) == fds  # no open per record
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [{"event": "turn", "text": "да"}, {"event": "call_end", "reason": "end_call"}]
    assert path.stat().st_mode & 0o777 == 0o600
    sink.close()
    sink({"event": "late"})  # after close: logged only, never raises
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2 and len(logged) == 3
