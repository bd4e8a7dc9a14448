"""EspeakTTS: real espeak-ng subprocesses, 8 kHz output, sentence-by-sentence streaming."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from orchestrator.adapters.tts.espeak import EspeakTTS, parse_wav
from orchestrator.adapters.tts.espeak_settings import EspeakSettings
from orchestrator.audio import rms
from orchestrator.contracts import SynthesisStream, TTSManager
from orchestrator.domain.errors import TTSConnectionError, TTSError
from orchestrator.domain.models import AudioChunk

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


async def drain(stream: SynthesisStream) -> list[AudioChunk]:
    async with asyncio.timeout(10):
        return [chunk async for chunk in stream]


def stream_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("espeak")]


async def test_synthesize_gives_8khz_russian_speech() -> None:
    tts = EspeakTTS()
    await tts.connect()
    chunks = [c async for c in tts.synthesize("Здравствуйте, это служба доставки.")]
    assert chunks and all(c.sample_rate == 8000 for c in chunks)
    assert all(len(c.pcm) <= 3200 for c in chunks)  # 200 ms pieces
    pcm = b"".join(c.pcm for c in chunks)
    assert len(pcm) % 2 == 0 and len(pcm) / 16000 > 1.0 and rms(pcm) > 100


async def test_stream_synthesizes_each_sentence_as_it_completes() -> None:
    tts: TTSManager = EspeakTTS()
    stream = await tts.open_stream()
    stream.push_text("Первое предложение. Второе ещё не")
    async with asyncio.timeout(10):
        first = await anext(aiter(stream))  # arrives although the input is still open
    assert first.sample_rate == 8000
    stream.push_text(" закончено")
    stream.end_input()
    chunks = await drain(stream)
    assert len(chunks) > 2 and all(c.sample_rate == 8000 for c in chunks)
    await tts.aclose()
    assert not stream_tasks()


async def test_flush_speaks_the_unfinished_sentence() -> None:
    tts = EspeakTTS()
    stream = await tts.open_stream()
    stream.push_text("Одну минуту")  # no sentence end
    stream.flush()
    async with asyncio.timeout(10):
        first = await anext(aiter(stream))  # spoken although nothing ended the sentence
    assert first.pcm
    await stream.aclose()


async def test_aclose_ends_the_iteration_once() -> None:
    tts = EspeakTTS()
    stream = await tts.open_stream()
    await stream.aclose()
    await stream.aclose()
    assert await drain(stream) == []
    stream.push_text("никто не слушает. ")  # harmless after the close
    assert not stream_tasks()
    again = await tts.open_stream()  # a new stream closes the old one; aclose() the last
    await tts.aclose()
    await tts.aclose()
    assert await drain(again) == [] and not stream_tasks()


async def test_a_failing_synthesis_is_raised_by_the_stream() -> None:
    stream = await EspeakTTS(EspeakSettings(binary="no-such-espeak")).open_stream()
    stream.push_text("Привет. ")
    with pytest.raises(TTSConnectionError, match="cannot run"):
        await drain(stream)
    assert await drain(stream) == []  # raised once, then over


async def test_errors() -> None:
    with pytest.raises(TTSConnectionError, match="not found"):
        await EspeakTTS(EspeakSettings(binary="no-such-espeak")).connect()
    with pytest.raises(TTSConnectionError, match="cannot run"):
        _ = [c async for c in EspeakTTS(EspeakSettings(binary="no-such-espeak")).synthesize("привет")]
    with pytest.raises(TTSError, match="empty"):
        _ = [c async for c in EspeakTTS().synthesize("  ")]
    with pytest.raises(TTSError, match="not a WAV"):
        parse_wav(b"garbage")
