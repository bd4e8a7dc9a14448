"""The admin port's /debug/ endpoints (bridge/admin_debug.py): off by default; on, they report
live tasks by name, live object counts by type, and where allocations grew between two reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bridge.admin import AdminServer, AdminSettings, Readiness


class Hoard:
    """Objects of a type of its own, so its count is the test's alone."""


async def _admin(debug: bool) -> AdminServer:
    admin = AdminServer(
        AdminSettings(port=0, debug=debug),
        exposition=lambda: b"",
        readiness=Readiness,
        drain=lambda: None,
    )
    await admin.start()
    return admin


@pytest.fixture
async def debug_admin() -> AsyncIterator[str]:
    admin = await _admin(debug=True)
    try:
        yield f"http://127.0.0.1:{admin.port}"
    finally:
        await admin.close()


async def test_debug_endpoints_are_off_by_default() -> None:
    admin = await _admin(debug=False)
    try:
        async with aiohttp.ClientSession() as http:
            for method, path in (
                ("GET", "/debug/tasks"),
                ("GET", "/debug/objects"),
                ("POST", "/debug/tracemalloc"),
            ):
                async with http.request(method, f"http://127.0.0.1:{admin.port}{path}") as r:
                    assert r.status == 404, path
    finally:
        await admin.close()


async def test_tasks_are_counted_by_name_with_ids_collapsed(debug_admin: str) -> None:
    release = asyncio.Event()
    names = ["call-3f2b6c1e-7d4a-4e2b-9c1d-0a1b2c3d4e5f", "call-0a1b2c3d-7d4a-4e2b-9c1d-3f2b6c1e4e5f"]
    held = [asyncio.create_task(release.wait(), name=n) for n in names]
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{debug_admin}/debug/tasks") as r:
            tasks = (await r.json())["tasks"]
        assert tasks["call-#"] == 2
    finally:
        release.set()
        await asyncio.wait_for(asyncio.gather(*held), 5)


async def test_objects_count_live_ones_only_and_tracemalloc_names_where_memory_grew(debug_admin: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{debug_admin}/debug/tracemalloc") as r:
            assert r.status == 200
        try:
            cycles = [Hoard() for _ in range(3000)]
            for h in cycles:
                h.self = h  # type: ignore[attr-defined]  # a cycle: only the collector frees it
            hoard = [Hoard() for _ in range(5000)]  # this line is what grew
            del cycles, h  # garbage now, though not yet collected: not counted
            async with http.get(f"{debug_admin}/debug/objects") as r:
                assert (await r.json())["objects"].get("Hoard") == 5000
            async with http.get(f"{debug_admin}/debug/tracemalloc") as r:
                top = (await r.json())["top"]
            assert any("test_admin_debug.py" in p["where"] and p["size_diff_kb"] > 100 for p in top[:5]), top[
                :5
            ]
            assert len(hoard) == 5000
        finally:
            async with http.delete(f"{debug_admin}/debug/tracemalloc") as r:
                assert r.status == 200
        async with http.get(f"{debug_admin}/debug/tracemalloc") as r:
            assert r.status == 409  # stopped
