"""Cache warming: synthesize every phrase a dialogue map plays into the audio cache.

The map's `audio` section says which text each cache key stands for. Warming is idempotent:
keys already cached with the same text are skipped unless `force`. With a cache that stores the
text's hash with the audio (`TextCheckedCache`, e.g. Redis), a key whose text changed in the map
since it was cached, or whose value cannot be decoded, or that was stored without a hash, is
synthesized again and reported as `changed`. A plain `AudioCache` (the in-process dict) can only
tell present from absent (and an undecodable value). The old audio stays until the new one is
made. The report also lists what could not be produced: keys the map plays that have no text
in `audio`, and keys whose synthesis or storage failed.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from orchestrator.audio import SAMPLE_RATE, Resampler
from orchestrator.cache.audio_format import CachedAudio, CacheValueError, text_digest
from orchestrator.contracts import AudioCache, TTSManager
from orchestrator.dialogue_map.loader import audio_key_uses
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.domain.errors import ProviderError, TTSError
from orchestrator.domain.models import AudioChunk


@runtime_checkable
class TextCheckedCache(Protocol):
    """An `AudioCache` that keeps the hash of each phrase's text with its audio."""

    async def get_cached(self, key: str) -> CachedAudio | None:
        """The audio and its text hash (None if stored without), or None when absent."""
        ...

    async def put(self, key: str, audio: AudioChunk, *, text: str | None = None) -> None:
        """Store `audio` (what `text` says) under `key`."""
        ...


# progress(done, total, key): called before each key and once at the end (key "").
ProgressFn = Callable[[int, int, str], None]


def stderr_progress(done: int, total: int, key: str) -> None:
    """A one-line progress bar on stderr, no dependency."""
    width = 30
    filled = width * done // total if total else width
    bar = "#" * filled + "-" * (width - filled)
    end = "\n" if done >= total else ""
    sys.stderr.write(f"\r[{bar}] {done}/{total} {key[:40]:<40}{end}")
    sys.stderr.flush()


@dataclass
class WarmReport:
    """What a warming run did."""

    synthesized: list[str] = field(default_factory=list)  # absent before (or forced)
    changed: list[str] = field(default_factory=list)  # text changed / value unreadable: redone
    skipped: list[str] = field(default_factory=list)  # already cached, same text
    missing_text: list[str] = field(default_factory=list)  # played by the map, absent from `audio`
    failed: dict[str, str] = field(default_factory=dict)  # key -> why

    @property
    def ok(self) -> bool:
        """Whether every key the map plays is now in the cache."""
        return not self.missing_text and not self.failed

    def summary(self) -> str:
        """Human-readable summary, one problem per line."""
        lines = [
            f"cache warm: {len(self.synthesized)} synthesized, {len(self.changed)} changed, "
            f"{len(self.skipped)} already cached, "
            f"{len(self.missing_text)} without text, {len(self.failed)} failed"
        ]
        lines += [f"  changed (synthesized again): {k}" for k in self.changed]
        lines += [f"  missing text in $.audio: {k}" for k in self.missing_text]
        lines += [f"  failed: {k}: {why}" for k, why in self.failed.items()]
        return "\n".join(lines)


def _used_keys(dialogue_map: DialogueMap) -> list[str]:
    """Every audio key the map plays, in order of first use."""
    return list(dict.fromkeys(key for _path, key in audio_key_uses(dialogue_map)))


async def _synthesize(tts: TTSManager, text: str) -> AudioChunk:
    resampler = Resampler()
    parts: list[bytes] = []
    async for chunk in tts.synthesize(text):
        parts.append(resampler.convert(chunk.pcm, chunk.sample_rate))
    parts.append(resampler.flush())
    pcm = b"".join(parts)
    if not pcm:
        raise ValueError("synthesis produced no audio")
    return AudioChunk(pcm, SAMPLE_RATE)


def live_synthesis(
    tts_factory: Callable[[str], TTSManager], *, name: str = "audio-cache"
) -> Callable[[str], Awaitable[AudioChunk]]:
    """text -> 8 kHz audio through a fresh TTS manager from `tts_factory(name)` each time (connect,
    synthesize, close): the audio cache's last resort. Raises `ProviderError` (`TTSError` when
    the synthesis produced no audio)."""

    async def synthesize(text: str) -> AudioChunk:
        tts = tts_factory(name)
        try:
            await tts.connect()
            return await _synthesize(tts, text)
        except ValueError as exc:
            raise TTSError(str(exc), provider="tts") from exc
        finally:
            await tts.aclose()

    return synthesize


async def _state(cache: AudioCache, key: str, text: str) -> Literal["fresh", "absent", "changed"]:
    """Whether `key` holds audio for `text` (`changed`: another text, no hash, or unreadable)."""
    try:
        if isinstance(cache, TextCheckedCache):
            cached = await cache.get_cached(key)
            if cached is None:
                return "absent"
            return "fresh" if cached.text_sha256 == text_digest(text) else "changed"
        return "absent" if await cache.get(key) is None else "fresh"
    except CacheValueError:
        return "changed"  # a broken value is replaced, not reported as a failure


async def warm_cache(
    dialogue_map: DialogueMap,
    tts: TTSManager,
    cache: AudioCache,
    *,
    force: bool = False,
    progress: ProgressFn | bool | None = True,
) -> WarmReport:
    """Synthesize every key of the map's `audio` section into `cache` (8 kHz slin).

    `progress`: True for the stderr bar, False/None for none, or a callable(done, total, key).
    """
    if progress is True:
        progress = stderr_progress
    elif progress is False:
        progress = None
    audio = dict(dialogue_map.audio)
    report = WarmReport()
    report.missing_text = [k for k in _used_keys(dialogue_map) if k not in audio]
    keys = list(audio)
    for i, key in enumerate(keys):
        if progress is not None:
            progress(i, len(keys), key)
        text = audio[key]
        try:
            state = "absent" if force else await _state(cache, key, text)
            if state == "fresh":
                report.skipped.append(key)
                continue
            chunk = await _synthesize(tts, text)
            if isinstance(cache, TextCheckedCache):
                await cache.put(key, chunk, text=text)
            else:
                await cache.put(key, chunk)
            (report.changed if state == "changed" else report.synthesized).append(key)
        except (ProviderError, ValueError) as exc:
            report.failed[key] = f"{type(exc).__name__}: {exc}"
    if progress is not None:
        progress(len(keys), len(keys), "")
    return report
