"""The service's audio cache: the map's phrases in process memory as well as in Redis, and live
TTS behind both, so a Redis that dies, freezes or comes back empty never leaves a caller in silence.

`get(key)` looks in this order:

1. Process memory. The map's vital phrases (emergency, non-secure, error playlists, every filler,
   the goodbyes of END_CALL states) are always held; the others while they fit in
   `[redis] memory_max_mb` (the example maps need 0.7 and 1.5 MB for all of their phrases, espeak-ng voice).
2. Redis, unless it is known to be down. One command is bounded by `[redis] timeout_s`; a failure
   marks Redis down (one warning) and every later read skips it until it answers a ping again,
   so a frozen Redis costs one read that bound, once.
3. Live synthesis of the phrase's text from the map (`synthesize`), the result held in memory
   while it fits. Concurrent reads of one key share one synthesis.

One background task, `audio-cache:redis-watch` (`start()`; ended by `aclose()`), keeps Redis
filled: while Redis is down it pings it every `[redis] probe_every_s`; when Redis answers again,
when a read misses a phrase the map plays, or when the emergency phrase is gone from Redis
(checked every `[redis] check_every_s`: Redis restarted empty), it writes every phrase missing or
stale in Redis (its text hash differs) back, from memory, else synthesized; one re-warm is
bounded by `[redis] rewarm_timeout_s`. Without a Redis URL the cache is memory and live TTS only.

Errors: `get` raises `CacheError` only when neither memory, Redis nor synthesis can produce a
phrase the map knows (a key the map does not know is None, as for any `AudioCache`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from orchestrator.cache.audio_format import CachedAudio, CacheValueError, text_digest
from orchestrator.cache.redis_cache import RedisAudioCache
from orchestrator.cache.redis_settings import RedisSettings
from orchestrator.contracts import Clock
from orchestrator.dialogue_map.models import DialogueMap, TtsItem
from orchestrator.domain.errors import CacheError, ProviderError
from orchestrator.domain.models import AudioChunk
from orchestrator.tasks import TaskOwner

__all__ = ["CacheStats", "ResilientAudioCache", "Synthesize", "vital_keys"]

log = logging.getLogger(__name__)

# text -> 8 kHz audio; raises ProviderError (e.g. TTS down, or its circuit open).
Synthesize = Callable[[str], Awaitable[AudioChunk]]
_MB = 1024 * 1024


def vital_keys(dialogue_map: DialogueMap) -> list[str]:
    """The phrases a call must be able to say whatever fails: the emergency and non-secure
    phrases, the error playlists, every filler, the goodbyes (END_CALL states), in that order."""
    m = dialogue_map
    s = m.settings
    keys = [s.emergency_filler_key, s.non_secure_response_key]
    playlists = [s.error_playlist] + [st.error_playlist for st in m.states.values() if st.error_playlist]
    playlists += [st.system_response.playlist for st in m.states.values() if st.action == "END_CALL"]
    keys += [item.key for pl in playlists for item in pl if not isinstance(item, TtsItem)]
    keys += s.neutral_filler_keys
    keys += [k for st in m.states.values() for k in st.fillers]
    for pl in [st.system_response.playlist for st in m.states.values()]:
        keys += [item.key for item in pl if item.type == "filler"]
    return list(dict.fromkeys(keys))


@dataclass(slots=True)
class CacheStats:
    """Counters since start, for tests, logs and metrics."""

    memory_hits: int = 0
    redis_hits: int = 0
    redis_misses: int = 0  # a key the map plays, absent from Redis
    redis_failures: int = 0  # a read or write that failed (the breaker opened)
    synthesized: int = 0  # live syntheses (none of the two tiers had it)
    rewarms: int = 0  # re-warm runs finished
    rewarmed_keys: int = 0  # phrases written back to Redis by them


class ResilientAudioCache:
    """`AudioCache` (and `warm.TextCheckedCache`) over memory, Redis and live TTS; see the module
    docstring. Owns the Redis cache it is given and its recovery task: `aclose()` ends both."""

    def __init__(
        self,
        *,
        texts: Mapping[str, str],
        vital: Iterable[str],
        settings: RedisSettings,
        clock: Clock,
        redis: RedisAudioCache | None = None,
        synthesize: Synthesize | None = None,
    ) -> None:
        """`texts`: key -> text of every phrase the map plays (its `audio` section); `vital`:
        the keys always held in memory (`vital_keys`); `synthesize`: live TTS (None: none)."""
        self._texts = dict(texts)
        vital_order = list(vital)
        self._vital = set(vital_order)
        self._redis = redis
        self._synthesize = synthesize
        self._settings = settings
        self._clock = clock
        self._budget = int(settings.memory_max_mb * _MB)
        self._memory: dict[str, AudioChunk] = {}
        self._digests: dict[str, bytes | None] = {}  # key -> hash of the text its audio says
        self._held_bytes = 0  # non-vital audio held
        self._inflight: dict[str, asyncio.Future[AudioChunk]] = {}
        self._redis_up = True
        self._stale = False  # Redis lacks (or holds a stale) phrase: re-warm it
        self._rewarming = False
        self._sentinel = next(iter(vital_order), next(iter(self._texts), ""))
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._tasks = TaskOwner("audio-cache")
        self._watch: asyncio.Task[None] | None = None
        self.down_since = 0.0  # clock time Redis was last marked down
        self.last_rewarm_s = 0.0  # how long the last re-warm took
        self.stats = CacheStats()

    @classmethod
    def for_map(
        cls,
        dialogue_map: DialogueMap,
        *,
        settings: RedisSettings,
        clock: Clock,
        redis: RedisAudioCache | None = None,
        synthesize: Synthesize | None = None,
    ) -> ResilientAudioCache:
        """The cache for one loaded map (its `audio` texts, its vital keys)."""
        return cls(
            texts=dialogue_map.audio,
            vital=vital_keys(dialogue_map),
            settings=settings,
            clock=clock,
            redis=redis,
            synthesize=synthesize,
        )

    # ------------------------------------------------------------------ reading
    async def get(self, key: str) -> AudioChunk | None:
        """The audio under `key`: memory, else Redis (when up), else synthesized from the map's
        text; None for a key the map does not know. Raises `CacheError` when nothing works."""
        clip = self._memory.get(key)
        if clip is not None:
            self.stats.memory_hits += 1
            return clip
        if self._redis is not None and self._redis_up:
            try:
                cached = await self._redis.get_cached(key)
            except CacheValueError as exc:
                log.warning("audio cache: %s; serving it from elsewhere and re-warming Redis", exc)
                cached = None
                self._start_recovery()
            except CacheError as exc:
                self._redis_failed(exc)
                cached = None
            if cached is not None:
                self.stats.redis_hits += 1
                self._hold(key, cached.audio, cached.text_sha256)
                return cached.audio
            if key in self._texts and self._redis_up:
                self.stats.redis_misses += 1
                self._start_recovery()
        text = self._texts.get(key)
        if text is None:
            return None
        return await self._synthesized(key, text)

    async def _synthesized(self, key: str, text: str) -> AudioChunk:
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        if self._synthesize is None:
            raise CacheError(f"audio {key!r}: not in memory, Redis unavailable, no TTS", provider="cache")
        fut: asyncio.Future[AudioChunk] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            audio = await self._synthesize(text)
        except ProviderError as exc:
            err = CacheError(f"audio {key!r}: not cached and synthesis failed: {exc}", provider="cache")
            fut.set_exception(err)
            fut.exception()  # retrieved: waiters re-raise it, nobody else must log it
            raise err from exc
        except BaseException as exc:  # a bug, or this reader cancelled: the others must not hang
            err = CacheError(f"audio {key!r}: synthesis failed: {exc!r}", provider="cache")
            fut.set_exception(err)
            fut.exception()
            if isinstance(exc, Exception):
                raise err from exc
            raise
        finally:
            del self._inflight[key]
        fut.set_result(audio)
        self.stats.synthesized += 1
        self._hold(key, audio, text_digest(text))
        return audio

    async def get_cached(self, key: str) -> CachedAudio | None:
        """The audio with the hash of its text (for warming): Redis's view while Redis is up
        (held in memory too), else memory's. Never raises for Redis being down."""
        if self._redis is not None and self._redis_up:
            try:
                cached = await self._redis.get_cached(key)
            except CacheValueError:
                raise  # warming replaces it
            except CacheError as exc:
                self._redis_failed(exc)
            else:
                if cached is not None:
                    self._hold(key, cached.audio, cached.text_sha256)
                    return cached
                return None
        clip = self._memory.get(key)
        return None if clip is None else CachedAudio(clip, self._digests.get(key))

    # ------------------------------------------------------------------ writing
    async def put(self, key: str, audio: AudioChunk, *, text: str | None = None) -> None:
        """Hold `audio` in memory (vital, or while it fits) and store it in Redis when Redis is
        up; a Redis failure marks Redis down (recovery writes it later), never raises."""
        self._hold(key, audio, None if text is None else text_digest(text))
        if self._redis is None or not self._redis_up:
            return
        try:
            await self._redis.put(key, audio, text=text)
        except CacheError as exc:
            self._redis_failed(exc)

    def _hold(self, key: str, audio: AudioChunk, digest: bytes | None) -> None:
        old = self._memory.get(key)
        vital = key in self._vital
        if not vital:
            size = len(audio.pcm) - (len(old.pcm) if old is not None else 0)
            if old is None and self._held_bytes + size > self._budget:
                return  # over the budget: Redis (or TTS) serves it
            self._held_bytes += size
        self._memory[key] = audio
        self._digests[key] = digest

    # ------------------------------------------------------------------ Redis health
    @property
    def redis_up(self) -> bool:
        """Whether Redis is read (False between a failure and its next answered ping)."""
        return self._redis is not None and self._redis_up

    @property
    def memory_bytes(self) -> int:
        """PCM bytes held in process memory (vital and the rest)."""
        return sum(len(a.pcm) for a in self._memory.values())

    def held(self, key: str) -> bool:
        """Whether `key` is in process memory."""
        return key in self._memory

    def _redis_failed(self, exc: CacheError) -> None:
        self.stats.redis_failures += 1
        if self._redis_up:
            self._redis_up = False
            self.down_since = self._clock.now()
            log.warning(
                "audio cache: Redis unavailable (%s); serving phrases from memory and TTS, "
                "pinging it every %.1f s",
                exc,
                self._settings.probe_every_s,
            )
            self._wake.set()

    def _start_recovery(self) -> None:
        """Redis lacks a phrase (or holds a broken one): the watch re-warms it soon."""
        if not self._stale:
            self._stale = True
            self._wake.set()

    def start(self) -> None:
        """Start watching Redis (the task `audio-cache:redis-watch`); a no-op without Redis."""
        if self._redis is not None and self._watch is None:
            self._watch = self._tasks.spawn(self._watch_redis(), "redis-watch")

    async def wait_idle(self) -> None:
        """Return once Redis is up and holds the map's phrases (tests, tools). Never returns
        while Redis stays down; bound it."""
        while not (self.redis_up and not self._stale and self._rewarming is False):
            self._idle.clear()
            await self._idle.wait()

    async def _watch_redis(self) -> None:
        """Ping Redis while it is down; once it answers, or when it lacks a phrase (checked every
        `check_every_s` on the emergency phrase, and on each miss), write back what it lacks."""
        assert self._redis is not None
        s = self._settings
        while True:
            quick = not self._redis_up or self._stale
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(s.probe_every_s if quick else s.check_every_s):
                    await self._wake.wait()
            self._wake.clear()
            if not self._redis_up:
                try:
                    await self._redis.ping()
                except CacheError:
                    continue
                self._redis_up, self._stale = True, True
                log.info(
                    "audio cache: Redis answers again after %.1f s; re-warming it in the background",
                    self._clock.now() - self.down_since,
                )
            if not self._stale:
                try:
                    self._stale = not await self._redis.exists(self._sentinel)
                except CacheError as exc:
                    self._redis_failed(exc)
                    continue
                if self._stale:
                    log.warning("audio cache: Redis lost the map's phrases (restarted empty?); re-warming it")
            if self._stale:
                await self._rewarm_bounded()
            self._idle.set()

    async def _rewarm_bounded(self) -> None:
        s = self._settings
        self._rewarming = True
        started = self._clock.now()
        try:
            async with asyncio.timeout(s.rewarm_timeout_s):
                written = await self._rewarm()
        except TimeoutError:
            log.warning("audio cache: re-warming Redis took over %.0f s; trying again", s.rewarm_timeout_s)
            return
        finally:
            self._rewarming = False
        if written is None:
            return  # Redis failed again mid-way: back to pinging
        self._stale = False
        self.stats.rewarms += 1
        self.stats.rewarmed_keys += written
        self.last_rewarm_s = self._clock.now() - started
        log.info("audio cache: Redis re-warmed: %d phrase(s) written in %.2f s", written, self.last_rewarm_s)

    async def _rewarm(self) -> int | None:
        """Write every phrase Redis lacks (or holds for another text); how many were written,
        or None when Redis failed meanwhile (it is then marked down)."""
        assert self._redis is not None
        written = 0
        for key, text in self._texts.items():
            try:
                try:
                    cached = await self._redis.get_cached(key)
                except CacheValueError:
                    cached = None
                if cached is not None and cached.text_sha256 == text_digest(text):
                    continue
                audio = self._memory.get(key)
                if audio is None or self._digests.get(key) != text_digest(text):
                    try:
                        audio = await self._synthesized(key, text)
                    except CacheError as exc:
                        log.warning("audio cache: cannot re-warm %r: %s", key, exc)
                        continue
                await self._redis.put(key, audio, text=text)
                written += 1
            except CacheError as exc:
                self._redis_failed(exc)
                return None
        return written

    async def aclose(self) -> None:
        """Stop the recovery task (bounded) and close the Redis cache. Idempotent."""
        await self._tasks.aclose()
        if self._redis is not None:
            await self._redis.aclose()
