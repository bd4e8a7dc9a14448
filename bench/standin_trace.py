"""Bench-only STT timeline on both sides of the gRPC stream (`VOICEBRIDGE_STT_TRACE=DIR python -m
bench --only standins`, read with `python -m bench.standin_trace DIR`): where the time from a
caller's pause to the adapter's final goes.

Both processes stamp with `time.monotonic()` (CLOCK_MONOTONIC, one clock for the machine, and
what asyncio's loop time is), so their stamps compare directly:
- the adapter (this process, `ClientTrace`): when the gateway pushed each frame into a call's
  buffer, when the request generator handed gRPC each audio request (and the call's audio ms
  sent up to its end), when each final and refinement response was read;
- the stand-in (`bench.standin_speechkit`, `ServerTrace`): when it took each audio request off
  the stream (and its audio cursor after it), when it yielded each final.
`lags` joins them per call for the question's final (the first one): its audio end F (the
stand-in's final_time_ms), and, s: push -> sent (the frame completing F waited in the buffer and
for the generator), sent -> received (gRPC, both processes' loops), received -> final yielded (the
stand-in's processing), yielded -> read (gRPC back, the adapter's read loop).
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import percentile

__all__ = ["ENV", "ClientTrace", "ServerTrace", "lags"]

ENV = "VOICEBRIDGE_STT_TRACE"  # a directory: the stand-in writes server.json there at exit


class ServerTrace:
    """The stand-in's stamps (installed in its own process by `bench.standin_speechkit`)."""

    def __init__(self) -> None:
        # request id -> [(monotonic s, audio cursor ms after the request)]
        self.received: dict[str, list[tuple[float, int]]] = defaultdict(list)
        # request id -> [(monotonic s, final_time_ms)]
        self.finals: dict[str, list[tuple[float, int]]] = defaultdict(list)

    def install(self) -> None:
        from testkit.standins import speechkit_server as sk

        seg_cls = sk._Segmenter
        audio, silence, end = seg_cls.audio, seg_cls.silence, seg_cls.end
        trace = self

        def t_audio(seg: Any, pcm: bytes) -> Any:
            out = audio(seg, pcm)
            trace.received[seg.rec.request_id].append((time.monotonic(), seg.cursor_ms))
            return out

        def t_silence(seg: Any, ms: int) -> Any:
            out = silence(seg, ms)
            trace.received[seg.rec.request_id].append((time.monotonic(), seg.cursor_ms))
            return out

        def t_end(seg: Any, out: list[Any]) -> None:
            n = len(out)
            end(seg, out)
            if len(out) > n:
                trace.finals[seg.rec.request_id].append((time.monotonic(), seg.final_ms))

        setattr(seg_cls, "audio", t_audio)  # noqa: B010 - bench-only stamps
        setattr(seg_cls, "silence", t_silence)  # noqa: B010
        setattr(seg_cls, "end", t_end)  # noqa: B010

    def write(self, directory: str) -> None:
        data = {"received": self.received, "finals": self.finals}
        (Path(directory) / "server.json").write_text(json.dumps(data))


class ClientTrace:
    """The adapter's stamps, in the bench's process (`with ClientTrace() as t:`)."""

    def __init__(self) -> None:
        self.pushed: dict[str, list[float]] = defaultdict(list)  # call id -> frame push times
        self.sent: dict[str, list[tuple[float, int]]] = defaultdict(list)  # (s, ms sent after it)
        self.read: dict[str, list[tuple[float, str, int]]] = defaultdict(list)  # (s, event, final ms)

    def __enter__(self) -> ClientTrace:
        from orchestrator.adapters.stt.yandex import YandexRecognitionStream
        from orchestrator.adapters.stt.yandex_call import RecognizeCall

        self._saved = (YandexRecognitionStream.push_audio, RecognizeCall._count, RecognizeCall.handle)
        push, count, handle = self._saved
        trace = self

        def t_push(stream: YandexRecognitionStream, frame: bytes) -> None:
            trace.pushed[stream._call_id].append(time.monotonic())
            push(stream, frame)

        def t_count(call: RecognizeCall, req: Any) -> None:
            count(call, req)
            if req.WhichOneof("Event") == "chunk":
                trace.sent[call.shared.call_id].append((time.monotonic(), call.base_ms + call.ms_sent))

        def t_handle(call: RecognizeCall, resp: Any) -> None:
            event = resp.WhichOneof("Event")
            if event in ("final", "final_refinement"):
                at = time.monotonic()
                trace.read[call.shared.call_id].append((at, event, resp.audio_cursors.final_time_ms))
            handle(call, resp)

        setattr(YandexRecognitionStream, "push_audio", t_push)  # noqa: B010 - bench-only stamps
        setattr(RecognizeCall, "_count", t_count)  # noqa: B010
        setattr(RecognizeCall, "handle", t_handle)  # noqa: B010
        return self

    def write(self, directory: str, levels: list[tuple[str, float, float]]) -> None:
        """client.json: the stamps and the levels (label, start, end; monotonic s)."""
        data = {"pushed": self.pushed, "sent": self.sent, "read": self.read, "levels": levels}
        (Path(directory) / "client.json").write_text(json.dumps(data))

    def __exit__(self, *exc: object) -> None:
        from orchestrator.adapters.stt.yandex import YandexRecognitionStream
        from orchestrator.adapters.stt.yandex_call import RecognizeCall

        push, count, handle = self._saved
        setattr(YandexRecognitionStream, "push_audio", push)  # noqa: B010
        setattr(RecognizeCall, "_count", count)  # noqa: B010
        setattr(RecognizeCall, "handle", handle)  # noqa: B010


def lags(
    client: dict[str, Any], server: dict[str, Any], *, since: float = 0.0, until: float = float("inf")
) -> list[dict[str, float]]:
    """Per call (its first final read in [since, until), monotonic s): the question's final's way, ms.

    `client`, `server`: what `ClientTrace.write` and `ServerTrace.write` wrote.

    Keys: push_to_sent, sent_to_received, received_to_yielded, yielded_to_read, refinement_gap
    (the final read -> its refinement read), total (the push of the frame completing the final's
    audio -> the final read).
    """
    out: list[dict[str, float]] = []
    for cid, reads in client["read"].items():
        finals = [(t, ms) for t, ev, ms in reads if ev == "final"]
        if not finals or not since <= finals[0][0] < until:
            continue
        srv_finals = [tuple(f) for f in server["finals"].get(cid, [])]
        if not finals or not srv_finals:
            continue
        read_at, _ = finals[0]
        # The server's final this read is: the last one yielded before it was read.
        yielded_at, final_ms = max((f for f in srv_finals if f[0] <= read_at), default=srv_finals[0])
        received_at = next((t for t, cur in server["received"].get(cid, []) if cur >= final_ms), None)
        sent_at = next((t for t, ms in client["sent"][cid] if ms >= final_ms), None)
        pushes = client["pushed"][cid]
        frame = final_ms // 20 - 1  # the 20 ms frame that completes the final's audio (one call: no renewal)
        if received_at is None or sent_at is None or not 0 <= frame < len(pushes):
            continue
        pushed_at = pushes[frame]
        refinement = next((t for t, ev, _ in reads if ev == "final_refinement" and t >= read_at), None)
        row = {
            "push_to_sent": (sent_at - pushed_at) * 1000,
            "sent_to_received": (received_at - sent_at) * 1000,
            "received_to_yielded": (yielded_at - received_at) * 1000,
            "yielded_to_read": (read_at - yielded_at) * 1000,
            "total": (read_at - pushed_at) * 1000,
        }
        if refinement is not None:
            row["refinement_gap"] = (refinement - read_at) * 1000
        out.append(row)
    return out


def trace_dir() -> str | None:
    """The trace directory from the environment (None: no trace)."""
    return os.environ.get(ENV) or None


def main(directory: str) -> None:
    """Print p50/p95/p99/max of each part, per level, from DIR's client.json and server.json."""
    client = json.loads((Path(directory) / "client.json").read_text())
    server = json.loads((Path(directory) / "server.json").read_text())
    keys = (
        "push_to_sent",
        "sent_to_received",
        "received_to_yielded",
        "yielded_to_read",
        "refinement_gap",
        "total",
    )
    for label, start, end in client["levels"]:
        rows = lags(client, server, since=start, until=end)
        print(f"{label}: {len(rows)} calls")
        for k in keys:
            v = [r[k] for r in rows if k in r]
            q = " ".join(f"{percentile(v, p):8.1f}" for p in (50, 95, 99)) if v else "-"
            print(f"  {k:22s} p50/p95/p99 {q}  max {max(v) if v else 0:8.1f}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1])
