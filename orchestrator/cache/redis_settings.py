"""Settings of the Redis audio cache (`orchestrator.cache.redis_cache.RedisAudioCache`)."""

from __future__ import annotations

from typing import Annotated

import pydantic.dataclasses
from pydantic import ConfigDict, Field

from orchestrator.domain.addresses import RedisUrl

__all__ = ["RedisSettings"]


@pydantic.dataclasses.dataclass(
    frozen=True, slots=True, config=ConfigDict(extra="forbid", allow_inf_nan=False)
)
class RedisSettings:
    """The shared audio cache (section `[redis]`; `url` is also accepted as the top-level
    `redis_url`, its documented name before the section existed)."""

    url: RedisUrl | None = None  # e.g. redis://127.0.0.1:6379/0; None: the in-memory cache
    # Bound on one command (and on connecting), s; past it the command fails as a retryable
    # CacheError. A call's own wait for a clip is bounded by `[call] cache_timeout_s` too.
    timeout_s: Annotated[float, Field(gt=0)] = 2.0
