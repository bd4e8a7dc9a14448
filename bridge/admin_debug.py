"""Diagnostics on the admin port, off by default (`[admin] debug = true`): what a soak, or an
operator hunting a leak, reads from the running service without stopping it.

    GET  /debug/tasks        200 {"tasks": {name: count}}: live asyncio tasks by name, digits and
                             UUIDs in a name replaced by "#" (`ari-call-<uuid>` -> `ari-call-#`)
    GET  /debug/objects      200 {"objects": {type: count}}: the 40 most numerous types of live
                             objects the garbage collector tracks, after a full collection (so
                             cyclic garbage not yet collected does not count; stalls the loop
                             for tens of ms at a few 100k objects)
    POST /debug/tracemalloc  200 {"tracing": true}: start tracing allocations (10 frames deep) and
                             take the first snapshot
    GET  /debug/tracemalloc  200 {"traced_mb": float, "top": [{"where": "file:line", "size_kb":
                             float, "size_diff_kb": float, "count_diff": int}, ...]}: a snapshot,
                             the 25 places whose allocations grew most since the previous one;
                             409 while not tracing
    DELETE /debug/tracemalloc 200 {"tracing": false}: stop tracing, drop the snapshots

Off by default because tracing costs CPU and memory on every allocation, and a gc walk stalls the
loop; the admin port is loopback by default.
"""

from __future__ import annotations

import asyncio
import gc
import re
import tracemalloc
from collections import Counter

from aiohttp import web

__all__ = ["DebugEndpoints", "task_names"]

_ID = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}|[0-9]+")
_TOP_TYPES = 40
_TOP_PLACES = 25
_FRAMES = 10


def task_names() -> Counter[str]:
    """The running loop's live tasks by name, ids replaced by "#"."""
    return Counter(_ID.sub("#", task.get_name()) for task in asyncio.all_tasks())


class DebugEndpoints:
    """The routes above; holds the previous tracemalloc snapshot between requests."""

    def __init__(self) -> None:
        self._snapshot: tracemalloc.Snapshot | None = None

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/debug/tasks", self._tasks),
            web.get("/debug/objects", self._objects),
            web.post("/debug/tracemalloc", self._trace_start),
            web.get("/debug/tracemalloc", self._trace_diff),
            web.delete("/debug/tracemalloc", self._trace_stop),
        ]

    async def _tasks(self, _request: web.Request) -> web.Response:
        return web.json_response({"tasks": dict(task_names())})

    async def _objects(self, _request: web.Request) -> web.Response:
        gc.collect()
        counts = Counter(type(o).__qualname__ for o in gc.get_objects())
        return web.json_response({"objects": dict(counts.most_common(_TOP_TYPES))})

    async def _trace_start(self, _request: web.Request) -> web.Response:
        if not tracemalloc.is_tracing():
            tracemalloc.start(_FRAMES)
        self._snapshot = tracemalloc.take_snapshot()
        return web.json_response({"tracing": True})

    async def _trace_diff(self, _request: web.Request) -> web.Response:
        if not tracemalloc.is_tracing() or self._snapshot is None:
            return web.json_response({"error": "not tracing: POST /debug/tracemalloc first"}, status=409)
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        diff = snapshot.compare_to(self._snapshot, "lineno")
        self._snapshot = snapshot
        top = [
            {
                "where": f"{s.traceback[0].filename}:{s.traceback[0].lineno}",
                "size_kb": round(s.size / 1024, 1),
                "size_diff_kb": round(s.size_diff / 1024, 1),
                "count_diff": s.count_diff,
            }
            for s in diff[:_TOP_PLACES]
        ]
        traced, _peak = tracemalloc.get_traced_memory()
        return web.json_response({"traced_mb": round(traced / 2**20, 2), "top": top})

    async def _trace_stop(self, _request: web.Request) -> web.Response:
        tracemalloc.stop()
        self._snapshot = None
        return web.json_response({"tracing": False})
