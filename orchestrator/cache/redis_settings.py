"""Settings of the audio cache: Redis (`RedisAudioCache`) behind process memory
(`ResilientAudioCache`)."""

from __future__ import annotations

from typing import Annotated

import pydantic.dataclasses
from pydantic import ConfigDict, Field

__all__ = ["RedisSettings"]


@pydantic.dataclasses.dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class RedisSettings:
    """The shared audio cache (section `[redis]`; `url` is also accepted as the top-level
    `redis_url`, its documented name before the section existed)."""

    url: str | None = None  # e.g. redis://127.0.0.1:6379/0; None: the in-memory cache only
    # Bound on one command (and on connecting), s; past it the command fails as a retryable
    # CacheError and Redis is skipped until it answers a ping again: a frozen Redis costs one
    # call at most this much, once. A call's own wait for a clip is bounded by
    # `[call] cache_timeout_s` too.
    timeout_s: Annotated[float, Field(gt=0)] = 0.3
    # While Redis is down, how often it is pinged (s); when it answers, every phrase of the map
    # missing or stale in it is written back (from memory, else synthesized) in the background.
    probe_every_s: Annotated[float, Field(gt=0)] = 0.5
    # While Redis is up, how often it is checked for the map's emergency phrase (s): a Redis
    # restarted empty (no persistence) is re-warmed within this.
    check_every_s: Annotated[float, Field(gt=0)] = 2.0
    # Bound on one background re-warm of Redis (s); an unfinished one is tried again later.
    rewarm_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    # Process memory for the map's phrases besides Redis, MB. The emergency, error, non-secure
    # phrases, the fillers and the goodbyes are always held; the other phrases while they fit.
    memory_max_mb: Annotated[float, Field(ge=0)] = 64.0
