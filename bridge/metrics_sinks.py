"""Where the metrics records go: the log (`logged_metrics_sink`) and, with `metrics_file`, a
JSON-lines file as well (`FileMetricsSink`), both built by the composition root
(`bridge.composition`); in the running service, the Prometheus counters first and each call's
recording named in its `call_end` record (`service_metrics_sink`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from orchestrator.metrics import TRANSCRIPT_FIELDS, MetricsRecord, MetricsSink, log_sink

__all__ = ["FileMetricsSink", "logged_metrics_sink", "service_metrics_sink"]

log = logging.getLogger(__name__)


def logged_metrics_sink(*, transcripts: bool) -> MetricsSink:
    """Each metrics record on the log (`orchestrator.metrics.log_sink`); unless `transcripts`,
    what the caller said (`TRANSCRIPT_FIELDS`) is left out of the INFO line and logged at DEBUG."""
    if transcripts:
        return log_sink

    def sink(record: MetricsRecord) -> None:
        said = {k: record[k] for k in TRANSCRIPT_FIELDS if record.get(k) is not None}
        if not said:
            log_sink(record)
            return
        log_sink({k: v for k, v in record.items() if k not in said})
        log.debug("turn %s transcript: %s", record.get("turn_index"), said)

    return sink


class FileMetricsSink:
    """A `MetricsSink` that appends each record as one JSON line to `path` (created 0600: it
    holds what callers said) and hands it to `log_to`.

    One handle, opened once and line-buffered (each record reaches the file as it is written,
    without an open/close per record on the event loop); `close()` closes it. Idempotent.
    """

    def __init__(self, path: str, *, log_to: MetricsSink = log_sink) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8", buffering=1)
        if target.stat().st_mode & 0o077:
            log.warning("%s: readable by others (it holds transcripts); chmod 600 it", path)
        self._log_to = log_to

    def __call__(self, record: MetricsRecord) -> None:
        self._log_to(record)
        if not self._file.closed:
            self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")

    def close(self) -> None:
        """Close the file; later records only go to `log_to`."""
        self._file.close()


def service_metrics_sink(
    forward: MetricsSink, observe: MetricsSink, recording_of: Callable[[str], str | None]
) -> MetricsSink:
    """Each record to `observe` (the service's metrics), then `forward`; a `call_end` record
    gains `recording` (the call's WAV, `recording_of(trace id)`) when the call was recorded."""

    def sink(record: MetricsRecord) -> None:
        if record.get("event") == "call_end":
            wav = recording_of(str(record.get("trace_id")))
            if wav is not None:
                record["recording"] = wav
        observe(record)
        forward(record)

    return sink
