"""What freezing live calls would buy: a full collection's time with N live bench calls, frozen or not.

`python -m bench.gc_freeze [--calls 250,500,1000] [--repeat 5]`. In one process, as the service
runs: start-up objects frozen (`gc.collect(); gc.freeze()`), then N calls of the capacity bench's
bridge side (`BridgeCall`: a `TelephonyGateway` with its VAD, echo gate and playout on the shared
`Pacer`, a `BenchRecognizer` and its two tasks), each on an in-memory transport that drops what
it is sent (no sockets: the collector walks objects, not descriptors). After 1 s of the pacer
ticking, per N:
- `full_ms`: `gc.collect()` timed directly, the calls not frozen (min and median of `--repeat`);
- `freeze_ms`: `gc.collect(1)` then `gc.freeze()`, the step that would freeze them (1 s after
  the full collections: the young generations as the running calls left them);
- `frozen_full_ms`: `gc.collect()` again, the calls frozen;
- `left_frozen`: objects still frozen once every call was closed (the calls' objects freed by
  reference counting leave the frozen set; what stays is alive or leaked): measured, the VAD
  batch's pool of shared Silero sessions (one per call at the peak, kept for reuse);
  `left_garbage`: how many of them a collection finds to be garbage after `gc.unfreeze()`: the
  leak a frozen cycle would be.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable

from bench.bridge_side import BridgeCall
from bench.common import table
from bridge.audiosocket.connection import AudioSocketConnection
from bridge.pacer import Pacer
from orchestrator.audio import SAMPLE_RATE

SETTLE_S = 1.0  # the pacer ticks and the speakers start before anything is timed
LINGER_S = 0.1  # after the last close: the closed calls' last callbacks run


class _Drop(asyncio.Transport):
    """Takes the playout's writes and drops them; closing it ends the connection a loop turn
    later, as a socket's would."""

    def __init__(self) -> None:
        super().__init__()
        self.conn: AudioSocketConnection | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        return None

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            asyncio.get_running_loop().call_soon(conn._connection_lost)

    def abort(self) -> None:
        self.close()


def _connection() -> AudioSocketConnection:
    transport = _Drop()
    conn = transport.conn = AudioSocketConnection(uuid.uuid4(), transport, "bench")
    return conn


def _clip() -> bytes:
    """A 1 s 440 Hz tone as s16le at 8 kHz (what the speakers play does not matter here)."""
    return b"".join(
        int(8000 * math.sin(2 * math.pi * 440 * i / SAMPLE_RATE)).to_bytes(2, "little", signed=True)
        for i in range(SAMPLE_RATE)
    )


def _timed(step: Callable[[], object]) -> float:
    """Run `step`; its wall time in ms."""
    t0 = time.perf_counter()
    step()
    return 1000 * (time.perf_counter() - t0)


def _freeze_young() -> None:
    """The step that would freeze a call once set up: collect the young generations, freeze."""
    gc.collect(1)
    gc.freeze()


async def _step(n: int, repeat: int, clip: bytes) -> dict[str, float | int | str]:
    pacer = Pacer()
    frozen0 = gc.get_freeze_count()
    calls = [BridgeCall(_connection(), pacer, clip, i % 50 / 25) for i in range(n)]
    await asyncio.sleep(SETTLE_S)
    full = [_timed(gc.collect) for _ in range(repeat)]
    tracked = len(gc.get_objects())
    await asyncio.sleep(SETTLE_S)  # the young generations fill again, as between two set-ups
    freeze = _timed(_freeze_young)
    frozen = [_timed(gc.collect) for _ in range(repeat)]
    per_call = (gc.get_freeze_count() - frozen0) / n
    for c in calls:
        await c.close()
    del calls
    await asyncio.sleep(LINGER_S)
    left = gc.get_freeze_count() - frozen0
    # What stayed frozen: unfreeze and see which of it a collection finds to be garbage.
    gc.unfreeze()
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    gc.set_debug(0)
    kinds = Counter(type(o).__qualname__ for o in gc.garbage)
    garbage = len(gc.garbage)
    gc.garbage.clear()
    gc.collect()
    gc.freeze()  # the start-up objects again, as before the step
    return {
        "calls": n,
        "tracked": tracked,
        "frozen_per_call": round(per_call),
        "full_ms_min": min(full),
        "full_ms_median": statistics.median(full),
        "freeze_ms": freeze,
        "frozen_full_ms_min": min(frozen),
        "frozen_full_ms_median": statistics.median(frozen),
        "left_frozen": left,
        "left_garbage": garbage,
        "left_garbage_kinds": ", ".join(f"{k} {v}" for k, v in kinds.most_common(6)),
    }


async def _run(steps: list[int], repeat: int) -> list[dict[str, float | int | str]]:
    clip = _clip()
    await _step(10, 1, clip)  # what the first calls of a process make once (the VAD batch, caches)
    return [await _step(n, repeat, clip) for n in steps]


def main() -> None:
    """Print the table (one row per number of calls)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--calls", default="250,500,1000", help="numbers of live calls, comma-separated")
    ap.add_argument("--repeat", type=int, default=5, help="timed collections per figure")
    args = ap.parse_args()
    steps = [int(x) for x in args.calls.split(",")]
    gc.collect()
    gc.freeze()  # as the service does after start-up
    rows = asyncio.run(_run(steps, args.repeat))
    headers = list(rows[0])
    print(
        table(headers, [[r[h] for h in headers] for r in rows], title="full collection, calls frozen or not")
    )


if __name__ == "__main__":
    main()
