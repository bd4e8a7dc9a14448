"""`AudioCache` on Redis: values are `audio_format` blobs (header + PCM) under `prefix + key`.

Besides the `AudioCache` protocol, `put(..., text=...)` stores the text's hash with the audio and
`get_cached()` returns it, for cache warming (`warm.TextCheckedCache`).

Every command has a socket timeout; any Redis failure or a malformed value becomes `CacheError`
(a timeout or a lost connection is retryable).
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestrator.cache.audio_format import CachedAudio, pack_audio, unpack_cached
from orchestrator.cache.redis_settings import RedisSettings
from orchestrator.domain.errors import CacheError, ConfigError
from orchestrator.domain.models import AudioChunk

PROVIDER = "redis"


class RedisAudioCache:
    """Audio by key in Redis, shared by every call (and every process) using the same prefix."""

    def __init__(
        self, settings: RedisSettings, *, client: aioredis.Redis | None = None, prefix: str = ""
    ) -> None:
        """Connect to `settings.url` (this cache owns and closes that pool), or use `client`
        (the caller's; `settings.url` is ignored then). `settings.timeout_s` bounds every command.

        Raises `ConfigError` with neither a client nor a URL.
        """
        timeout_s = settings.timeout_s
        if client is not None:
            self._redis, self._owns = client, False
        elif settings.url:
            self._redis = aioredis.Redis.from_url(
                settings.url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry_on_timeout=False,
            )
            self._owns = True
        else:
            raise ConfigError("RedisAudioCache: set [redis] url (or pass a client)")
        self._prefix = prefix
        self._timeout = timeout_s

    def _err(self, exc: BaseException, what: str, key: str) -> CacheError:
        retry = isinstance(exc, RedisConnectionError | RedisTimeoutError | TimeoutError)
        return CacheError(f"{what} {key!r}: {type(exc).__name__}: {exc}", provider=PROVIDER, retryable=retry)

    async def get(self, key: str) -> AudioChunk | None:
        """The audio under `key`, or None when absent."""
        cached = await self.get_cached(key)
        return None if cached is None else cached.audio

    async def get_cached(self, key: str) -> CachedAudio | None:
        """The audio under `key` with the hash of its text (if stored), or None when absent."""
        try:
            async with asyncio.timeout(self._timeout):
                data = await self._redis.get(self._prefix + key)
        except (RedisError, TimeoutError, OSError) as exc:
            raise self._err(exc, "get", key) from exc
        if data is None:
            return None
        if isinstance(data, str):
            # A client made with decode_responses=True cannot carry audio.
            raise CacheError(f"get {key!r}: Redis client decodes responses; audio needs bytes")
        return unpack_cached(bytes(data), key=key)

    async def put(self, key: str, audio: AudioChunk, *, text: str | None = None) -> None:
        """Store `audio` under `key` (no expiry: cached prompts live until replaced).

        `text`: what the audio says; its hash is stored with it (see `get_cached`).
        """
        blob = pack_audio(audio, text=text)
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.set(self._prefix + key, blob)
        except (RedisError, TimeoutError, OSError) as exc:
            raise self._err(exc, "put", key) from exc

    async def exists(self, key: str) -> bool:
        """Whether `key` holds a value (without fetching the audio)."""
        try:
            async with asyncio.timeout(self._timeout):
                return bool(await self._redis.exists(self._prefix + key))
        except (RedisError, TimeoutError, OSError) as exc:
            raise self._err(exc, "exists", key) from exc

    async def ping(self) -> None:
        """Raise `CacheError` unless Redis answers."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.ping()
        except (RedisError, TimeoutError, OSError) as exc:
            raise self._err(exc, "ping", "") from exc

    async def aclose(self) -> None:
        """Close the connection pool when this cache created it."""
        if self._owns:
            self._owns = False
            await self._redis.aclose()
