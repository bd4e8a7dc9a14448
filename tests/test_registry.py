"""The node registry (bridge/registry.py) on a real redis-server: entries written and read back,
expiring after a node dies, removed on a clean stop, and written again after a Redis outage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from bridge.registry import NodeRegistry, NodeStatus, RegistrySettings, read_nodes
from orchestrator.tasks import cancel_and_wait
from testkit.redis_server import RedisProcess

T = 10.0  # bound on any one wait, s


@pytest.fixture
async def client(redis_proc: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_proc.url)
    try:
        yield c
    finally:
        await c.aclose()


async def _until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    try:
        async with asyncio.timeout(T):
            while not await check():  # noqa: ASYNC110 - Redis and TTLs are not events of ours
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {T} s") from None


async def test_two_nodes_write_their_entries_and_a_clean_stop_removes_one(
    redis_proc: RedisProcess, client: aioredis.Redis
) -> None:
    state = {"a": (3, False), "b": (0, True)}
    regs = [
        NodeRegistry(
            RegistrySettings(node=name, interval_s=0.05, ttl_s=5), redis_proc.url, _status_of(state, name)
        )
        for name in ("a", "b")
    ]
    tasks = [asyncio.create_task(r.run(), name=f"test-registry-{r.node}") for r in regs]
    try:
        await _until("both entries", lambda: _count(client, 2))
        nodes = await read_nodes(client)
        assert [(n.node, n.calls_active, n.draining) for n in nodes] == [("a", 3, False), ("b", 0, True)]
        state["a"] = (1, True)  # node a begins its drain
        await _until("a's new state", lambda: _node_is(client, "a", 1, True))
    finally:
        for t in tasks:
            await cancel_and_wait(t, timeout=T)
    await regs[0].aclose()
    assert [n.node for n in await read_nodes(client)] == ["b"]
    await regs[1].aclose()
    assert await read_nodes(client) == []


async def test_an_entry_expires_when_its_node_stops_writing(
    redis_proc: RedisProcess, client: aioredis.Redis
) -> None:
    reg = NodeRegistry(
        RegistrySettings(node="dead", interval_s=0.1, ttl_s=0.3), redis_proc.url, lambda: (0, False)
    )
    await reg.write_once()  # then the node dies: no more writes, no clean stop
    assert [n.node for n in await read_nodes(client)] == ["dead"]
    ttl_ms = await client.pttl(reg.key)
    assert 0 < ttl_ms <= 300
    await _until("the dead node's entry expiring", lambda: _count(client, 0))
    await reg._redis.aclose()


async def test_a_redis_outage_is_survived_and_the_entry_comes_back(redis_proc: RedisProcess) -> None:
    reg = NodeRegistry(
        RegistrySettings(node="n", interval_s=0.05, ttl_s=5, timeout_s=0.2),
        redis_proc.url,
        lambda: (2, False),
    )
    task = asyncio.create_task(reg.run(), name="test-registry")
    try:
        await _until("first write", _async(lambda: reg.writes > 0))
        redis_proc.kill()
        await _until("the failure noticed", _async(lambda: reg._failing))
        assert not task.done()  # an outage never ends the writer
        await redis_proc.start()  # a fresh, empty Redis on the same URL
        c = aioredis.Redis.from_url(redis_proc.url)
        try:
            await _until("the entry written again", lambda: _count(c, 1))
        finally:
            await c.aclose()
    finally:
        await cancel_and_wait(task, timeout=T)
        await reg.aclose()


def test_ttl_must_outlast_the_interval() -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        NodeRegistry(RegistrySettings(interval_s=5, ttl_s=5), "redis://127.0.0.1:1/0", lambda: (0, False))


def test_entry_fields_round_trip() -> None:
    s = NodeStatus("x", 7, True, 1234.5, "http://h:8088/")
    assert NodeStatus.from_fields({k.encode(): v.encode() for k, v in s.fields().items()}) == s


def _status_of(state: dict[str, tuple[int, bool]], name: str) -> Callable[[], tuple[int, bool]]:
    return lambda: state[name]


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def wrapped() -> bool:
        return bool(check())

    return wrapped


async def _count(client: aioredis.Redis, n: int) -> bool:
    return len(await read_nodes(client)) == n


async def _node_is(client: aioredis.Redis, name: str, calls: int, draining: bool) -> bool:
    return any(
        x.node == name and x.calls_active == calls and x.draining == draining
        for x in await read_nodes(client)
    )
