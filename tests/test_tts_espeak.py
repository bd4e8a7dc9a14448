"""EspeakTTS: real espeak-ng subprocesses, 8 kHz output, sentence-by-sentence streaming."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from orchestrator.adapters.tts.espeak import EspeakTTS, parse_wav
from orchestrator.audio import rms
from orchestrator.contracts import TtsStreamItem
from orchestrator.domain.errors import TTSConnectionError, TTSError
from orchestrator.domain.models import AudioChunk

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


async def drain(q: asyncio.Queue[TtsStreamItem]) -> list[TtsStreamItem]:
    items: list[TtsStreamItem] = []
    async with asyncio.timeout(10):
        while (item := await q.get()) is not None:
            items.append(item)
    return [*items, None]


async def test_synthesize_gives_8khz_russian_speech() -> None:
    tts = EspeakTTS()
    await tts.connect()
    chunks = [c async for c in tts.synthesize("Здравствуйте, это служба доставки.")]
    assert chunks and all(c.sample_rate == 8000 for c in chunks)
    assert all(len(c.pcm) <= 3200 for c in chunks)  # 200 ms pieces
    pcm = b"".join(c.pcm for c in chunks)
    assert len(pcm) % 2 == 0 and len(pcm) / 16000 > 1.0 and rms(pcm) > 100


async def test_stream_synthesizes_each_sentence_as_it_completes() -> None:
    tts = EspeakTTS()
    text_in, audio_out = await tts.start_llm_stream()
    text_in.put_nowait("Первое предложение. Второе ещё не")
    async with asyncio.timeout(10):
        first = await audio_out.get()  # arrives although the input is still open
    assert isinstance(first, AudioChunk)
    text_in.put_nowait(" закончено")
    text_in.put_nowait(None)
    items = await drain(audio_out)
    assert items[-1] is None and all(isinstance(i, AudioChunk) for i in items[:-1])
    assert len(items) > 3
    await tts.aclose()


async def test_abort_ends_the_queue_once() -> None:
    tts = EspeakTTS()
    text_in, audio_out = await tts.start_llm_stream()
    await tts.abort_llm_stream()
    await tts.abort_llm_stream()
    assert await drain(audio_out) == [None]
    text_in.put_nowait("никто не слушает. ")  # harmless after the abort
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "espeak-stream"]


async def test_errors() -> None:
    with pytest.raises(TTSConnectionError, match="not found"):
        await EspeakTTS(binary="no-such-espeak").connect()
    with pytest.raises(TTSConnectionError, match="cannot run"):
        _ = [c async for c in EspeakTTS(binary="no-such-espeak").synthesize("привет")]
    with pytest.raises(TTSError, match="empty"):
        _ = [c async for c in EspeakTTS().synthesize("  ")]
    with pytest.raises(TTSError, match="not a WAV"):
        parse_wav(b"garbage")
