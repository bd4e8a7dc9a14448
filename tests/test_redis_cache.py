"""RedisAudioCache on a real redis-server (session fixture), and the audio value format."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from bridge.providers import build_audio_cache
from bridge.settings import Settings
from orchestrator.cache.audio_format import (
    HEADER_SIZE,
    HEADER_SIZE_TEXT,
    CachedAudio,
    pack_audio,
    text_digest,
    unpack_audio,
    unpack_cached,
)
from orchestrator.cache.redis_cache import RedisAudioCache
from orchestrator.cache.redis_settings import RedisSettings
from orchestrator.domain.errors import CacheError
from orchestrator.domain.models import AudioChunk

AUDIO = AudioChunk(bytes(range(256)) * 25, 8000)  # 6400 bytes = 400 ms


def test_pack_unpack_round_trip_and_header() -> None:
    blob = pack_audio(AUDIO)
    assert blob[:4] == b"VBA1" and len(blob) == HEADER_SIZE + len(AUDIO.pcm)
    assert int.from_bytes(blob[10:14], "little") == 400  # duration ms
    assert unpack_audio(blob) == AUDIO
    assert unpack_audio(pack_audio(AudioChunk(b"", 16000))) == AudioChunk(b"", 16000)


@pytest.mark.parametrize(
    ("blob", "problem"),
    [
        (b"VBA1", "shorter than the header"),
        (b"RIFF" + pack_audio(AUDIO)[4:], "bad magic"),
        (pack_audio(AUDIO)[:4] + b"\x03" + pack_audio(AUDIO)[5:], "unsupported version 3"),
        (pack_audio(AUDIO, text="x")[:30], "shorter than the header"),
        (pack_audio(AUDIO, text="x")[:-320], "truncated"),
        (pack_audio(AUDIO)[:5] + b"\x09" + pack_audio(AUDIO)[6:], "unknown audio format code 9"),
        (pack_audio(AUDIO)[:-320], "truncated"),
        (pack_audio(AUDIO) + b"\x00", "odd PCM length"),
    ],
)
def test_bad_values_are_named(blob: bytes, problem: str) -> None:
    with pytest.raises(CacheError, match=problem) as exc:
        unpack_audio(blob, key="static:greeting")
    assert "static:greeting" in str(exc.value)


def test_version_2_carries_the_text_hash_and_version_1_is_still_read() -> None:
    blob = pack_audio(AUDIO, text="Здравствуйте!")
    assert blob[4] == 2 and len(blob) == HEADER_SIZE_TEXT + len(AUDIO.pcm)
    assert unpack_cached(blob) == CachedAudio(AUDIO, text_digest("Здравствуйте!"))
    assert unpack_audio(blob) == AUDIO
    assert unpack_cached(pack_audio(AUDIO)) == CachedAudio(AUDIO, None)  # version 1: no text


def test_odd_audio_is_refused() -> None:
    with pytest.raises(CacheError, match="odd number of bytes"):
        pack_audio(AudioChunk(b"\x00", 8000))


async def test_round_trip_on_real_redis(redis_url: str) -> None:
    cache = RedisAudioCache(RedisSettings(url=redis_url), prefix="t1:")
    try:
        await cache.ping()
        assert await cache.get("static:greeting") is None
        await cache.put("static:greeting", AUDIO)
        assert await cache.get("static:greeting") == AUDIO
        assert await cache.exists("static:greeting")
        await cache.put("static:greeting", AUDIO, text="Добрый день.")
        assert await cache.get_cached("static:greeting") == CachedAudio(AUDIO, text_digest("Добрый день."))
        assert await cache.get("static:greeting") == AUDIO
        # Another process (another client) sees the same value under the same prefix only.
        other = RedisAudioCache(RedisSettings(), client=aioredis.Redis.from_url(redis_url), prefix="t1:")
        assert await other.get("static:greeting") == AUDIO
        assert (
            await RedisAudioCache(RedisSettings(url=redis_url), prefix="t2:").get("static:greeting") is None
        )
    finally:
        await cache.aclose()


async def test_foreign_value_is_a_clear_error(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    await client.set("t3:static:x", b"not audio at all")
    cache = RedisAudioCache(RedisSettings(), client=client, prefix="t3:")
    with pytest.raises(CacheError, match="'static:x': bad magic"):
        await cache.get("static:x")
    await client.aclose()


async def test_redis_down_is_a_retryable_cache_error() -> None:
    cache = RedisAudioCache(RedisSettings(url="redis://127.0.0.1:1/0", timeout_s=0.5))
    with pytest.raises(CacheError, match="get 'static:greeting'") as exc:
        await cache.get("static:greeting")
    assert exc.value.retryable and exc.value.provider == "redis"
    with pytest.raises(CacheError, match="put"):
        await cache.put("static:greeting", AUDIO)
    await cache.aclose()


async def test_the_command_timeout_comes_from_the_redis_settings() -> None:
    # A server that accepts connections and never answers: only the timeout ends the wait.
    server = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    cache = build_audio_cache(Settings(redis=RedisSettings(url=url, timeout_s=0.3)))
    assert isinstance(cache, RedisAudioCache)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(CacheError) as exc:
            await cache.get("static:greeting")
        assert exc.value.retryable
        assert 0.25 <= loop.time() - started < 1.5  # [redis] timeout_s, not the 2 s default
    finally:
        await cache.aclose()
        server.close()
