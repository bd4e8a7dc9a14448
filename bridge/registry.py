"""The node registry in the shared Redis: each node of a cluster says every few seconds that it is
there, how many calls it carries and whether it is draining (section `[registry]`).

One Redis hash per node, `<prefix><node>`, fields:

    node          the node's name ([registry] node; default the host name)
    calls_active  calls in progress (int)
    draining      "1" while the node drains, else "0"
    last_seen     Unix time of this write, s (float)
    ari           the ARI URL the node serves (without credentials)

The key expires `ttl_s` after the last write, so a node that died (SIGKILL, power) disappears by
itself; a node that stops cleanly deletes its key. The registry is for operators and tooling
(`cluster/cluster.sh status`, `read_nodes`); the SIP proxy does not need it (it probes the
nodes itself and a draining node answers 503).

Only written when `[redis] url` is set. A Redis failure is logged (once per outage) and retried at
the next interval: the registry never stops a node from taking calls.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated

import pydantic.dataclasses
import redis.asyncio as aioredis
from pydantic import ConfigDict, Field
from redis.exceptions import RedisError

__all__ = ["NodeRegistry", "NodeStatus", "RegistrySettings", "read_nodes"]

log = logging.getLogger(__name__)


@pydantic.dataclasses.dataclass(
    frozen=True, slots=True, config=ConfigDict(extra="forbid", allow_inf_nan=False)
)
class RegistrySettings:
    """The node registry (section `[registry]`); used only with `[redis] url`."""

    enabled: bool = True
    # This node's name in the registry; "" uses the host name. Unique per node.
    node: str = ""
    # How often the node writes its entry, s.
    interval_s: Annotated[float, Field(gt=0)] = 3.0
    # The entry expires this long after the last write, s (more than the interval: a missed
    # write or two does not make a live node disappear).
    ttl_s: Annotated[float, Field(gt=0)] = 10.0
    prefix: str = "voicebridge:node:"
    # Bound on one write, s.
    timeout_s: Annotated[float, Field(gt=0)] = 1.0

    def node_name(self) -> str:
        return self.node or socket.gethostname()


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node's entry, as written and as read back."""

    node: str
    calls_active: int
    draining: bool
    last_seen: float  # Unix time, s
    ari: str = ""

    def fields(self) -> dict[str, str]:
        return {
            "node": self.node,
            "calls_active": str(self.calls_active),
            "draining": "1" if self.draining else "0",
            "last_seen": f"{self.last_seen:.3f}",
            "ari": self.ari,
        }

    @classmethod
    def from_fields(cls, raw: Mapping[bytes | str, bytes | str]) -> NodeStatus:
        """Raises KeyError/ValueError on an entry not written by `NodeRegistry`."""
        f = {_text(k): _text(v) for k, v in raw.items()}
        return cls(
            node=f["node"],
            calls_active=int(f["calls_active"]),
            draining=f["draining"] == "1",
            last_seen=float(f["last_seen"]),
            ari=f.get("ari", ""),
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NodeRegistry:
    """Writes this node's entry every `interval_s` until cancelled; `aclose()` removes it.

    `status()` is called on the event loop at each write (cheap: counters only).
    """

    def __init__(
        self,
        settings: RegistrySettings,
        redis_url: str,
        status: Callable[[], tuple[int, bool]],
        *,
        ari: str = "",
    ) -> None:
        """`status()` returns (calls in progress, draining)."""
        if settings.ttl_s <= settings.interval_s:
            raise ValueError(
                f"[registry] ttl_s ({settings.ttl_s}) must be longer than interval_s ({settings.interval_s})"
            )
        self._s = settings
        self._status = status
        self._ari = ari
        self.node = settings.node_name()
        self.key = settings.prefix + self.node
        self._redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=settings.timeout_s, socket_connect_timeout=settings.timeout_s
        )
        self._failing = False
        self.writes = 0

    async def write_once(self) -> None:
        """Write the entry now (and its expiry); raises RedisError/OSError/TimeoutError."""
        calls, draining = self._status()
        entry = NodeStatus(self.node, calls, draining, time.time(), self._ari)
        async with asyncio.timeout(self._s.timeout_s), self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key, mapping=entry.fields())  # type: ignore[arg-type]
            pipe.pexpire(self.key, int(self._s.ttl_s * 1000))
            await pipe.execute()
        self.writes += 1

    async def run(self) -> None:
        """Write every `interval_s` until cancelled; failures are logged, never raised."""
        while True:
            try:
                await self.write_once()
                if self._failing:
                    log.info("node registry: writing %s again", self.key)
                self._failing = False
            except (RedisError, OSError, TimeoutError) as exc:
                if not self._failing:
                    log.warning("node registry: cannot write %s (%s); retrying", self.key, type(exc).__name__)
                self._failing = True
            await asyncio.sleep(self._s.interval_s)

    async def aclose(self) -> None:
        """Remove this node's entry (best effort, bounded) and close the connection."""
        try:
            async with asyncio.timeout(self._s.timeout_s):
                await self._redis.delete(self.key)
        except (RedisError, OSError, TimeoutError) as exc:
            log.info("node registry: %s left to expire (%s)", self.key, type(exc).__name__)
        await self._redis.aclose()


async def read_nodes(client: aioredis.Redis, prefix: str = "voicebridge:node:") -> list[NodeStatus]:
    """Every live node's entry, sorted by name (entries not in the registry's format are skipped)."""
    nodes: list[NodeStatus] = []
    async for key in client.scan_iter(match=prefix + "*"):
        raw = await client.hgetall(key)
        try:
            nodes.append(NodeStatus.from_fields(raw))
        except (KeyError, ValueError):
            continue
    return sorted(nodes, key=lambda n: n.node)
