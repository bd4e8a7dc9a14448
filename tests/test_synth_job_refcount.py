"""A synthesis job's failure, raised to its reader, leaves no reference cycle (the reader's frames,
up to the Orchestrator's, would wait for a full collection: bridge/gc_policy.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import AsyncIterator

import pytest

from orchestrator.domain.errors import TTSError
from orchestrator.domain.models import AudioChunk
from orchestrator.playback import SynthJob
from orchestrator.tasks import TaskOwner


class _FailingTTS:
    """A TTSManager whose synthesis fails before any audio."""

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        raise TTSError("down", provider="tts")
        yield AudioChunk(b"")  # an async generator


async def test_a_failed_synthesis_raised_to_its_reader_leaves_no_cycle() -> None:
    tasks = TaskOwner("call")
    gc.collect()
    gc.disable()
    try:
        job = SynthJob(_FailingTTS(), "текст", tasks=tasks, on_first=lambda: None)  # type: ignore[arg-type]
        await job.ready
        with pytest.raises(TTSError) as raised:
            await job.next()
        error = weakref.ref(raised.value)
        gone = weakref.ref(job)
        del job, raised
        await tasks.aclose()
        assert gone() is None and error() is None
    finally:
        gc.enable()
