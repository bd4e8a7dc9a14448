"""The default audio cache: a dict in the process (used when no Redis URL is set, and in tests)."""

from __future__ import annotations

from orchestrator.domain.models import AudioChunk


class InMemoryAudioCache:
    """`AudioCache` held in a dict; shared by every call of the process, read-only in practice."""

    def __init__(self, items: dict[str, AudioChunk] | None = None) -> None:
        self._items: dict[str, AudioChunk] = dict(items or {})

    async def get(self, key: str) -> AudioChunk | None:
        """The audio under `key`, or None."""
        return self._items.get(key)

    async def put(self, key: str, audio: AudioChunk) -> None:
        """Store `audio` under `key`."""
        self._items[key] = audio

    def keys(self) -> list[str]:
        """Every key held."""
        return list(self._items)
