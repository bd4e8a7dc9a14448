"""YandexTTSManager against the SpeechKit stand-in (espeak-ng audio) on a real socket."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
import pytest

from orchestrator.adapters.speechkit import YandexSettings, speechkit_channel
from orchestrator.adapters.tts.yandex import YandexTTSManager
from orchestrator.audio import rms
from orchestrator.contracts import TtsStreamItem
from orchestrator.domain.errors import TTSConnectionError, TTSError
from orchestrator.domain.models import AudioChunk
from testkit.standins.speechkit_server import SpeechKitStandin

SETTINGS = YandexSettings(api_key="k", tls=False, voice="alena", role="good", speed=1.1)


async def drain(q: asyncio.Queue[TtsStreamItem], timeout: float = 10.0) -> list[TtsStreamItem]:
    items: list[TtsStreamItem] = []
    async with asyncio.timeout(timeout):
        while True:
            item = await q.get()
            items.append(item)
            if item is None:
                return items


async def test_connect_ok_and_unreachable(speechkit_grpc_channel: grpc.aio.Channel) -> None:
    await YandexTTSManager(speechkit_grpc_channel, SETTINGS).connect()
    channel = speechkit_channel("127.0.0.1:1", tls=False)
    try:
        tts = YandexTTSManager(channel, replace(SETTINGS, connect_timeout_s=0.2))
        with pytest.raises(TTSConnectionError, match="not reachable"):
            await tts.connect()
    finally:
        await channel.close()


async def test_utterance_is_8khz_speech_with_the_voice_settings(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    tts = YandexTTSManager(speechkit_grpc_channel, SETTINGS)
    chunks = [c async for c in tts.synthesize("Добрый день! Чем могу помочь?")]
    assert chunks and all(c.sample_rate == 8000 for c in chunks)
    pcm = b"".join(c.pcm for c in chunks)
    assert len(pcm) / 16000 > 1.0 and rms(pcm) > 100  # over a second of real sound
    [req] = speechkit_standin.utterance_requests
    assert req.output_audio_spec.raw_audio.sample_rate_hertz == 8000
    hints = {h.WhichOneof("Hint"): getattr(h, h.WhichOneof("Hint")) for h in req.hints}
    assert hints["voice"] == "alena" and hints["role"] == "good"
    assert hints["speed"] == pytest.approx(1.1)


async def test_long_text_is_split_at_sentences_under_the_limit(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    sentence = "Мы работаем каждый день с восьми утра до десяти вечера без выходных. "
    text = (sentence * 8).strip()  # ~560 chars; the stand-in rejects > 250 like the service
    tts = YandexTTSManager(speechkit_grpc_channel, SETTINGS)
    chunks = [c async for c in tts.synthesize(text)]
    assert chunks
    texts = speechkit_standin.tts_texts
    assert len(texts) >= 3 and all(len(t) <= 250 for t in texts)
    assert all(t.endswith(".") for t in texts)  # cut at sentence ends
    assert " ".join(texts) == text


async def test_utterance_failures_are_tts_errors(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    tts = YandexTTSManager(speechkit_grpc_channel, SETTINGS)
    speechkit_standin.fail_next_tts(1, grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(TTSError, match="UNAVAILABLE") as exc:
        _ = [c async for c in tts.synthesize("Привет.")]
    assert exc.value.retryable
    bad_voice = YandexTTSManager(speechkit_grpc_channel, replace(SETTINGS, voice="nobody"))
    with pytest.raises(TTSError, match="unknown voice") as exc:
        _ = [c async for c in bad_voice.synthesize("Привет.")]
    assert not exc.value.retryable
    with pytest.raises(TTSError, match="empty"):
        _ = [c async for c in tts.synthesize("   ")]


async def test_stream_speaks_the_first_sentence_before_the_rest_arrives(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    tts = YandexTTSManager(speechkit_grpc_channel, SETTINGS)
    text_in, audio_out = await tts.start_llm_stream()
    for piece in ["Здравствуйте", "! Доставка ", "стоит"]:
        text_in.put_nowait(piece)
    async with asyncio.timeout(10):
        first = await audio_out.get()
    assert isinstance(first, AudioChunk) and first.sample_rate == 8000
    assert speechkit_standin.tts_texts == ["Здравствуйте!"]  # nothing else was complete yet
    for rest in [" триста рублей. Что", "-нибудь ещё?", None]:
        text_in.put_nowait(rest)
    items = await drain(audio_out)
    assert items[-1] is None and all(isinstance(i, AudioChunk) for i in items[:-1])
    assert speechkit_standin.tts_texts == [
        "Здравствуйте!",
        "Доставка стоит триста рублей.",
        "Что-нибудь ещё?",
    ]
    reqs = speechkit_standin.stream_requests
    kinds = [r.WhichOneof("Event") for r in reqs]
    assert kinds[0] == "options" and kinds.count("options") == 1
    assert reqs[0].options.voice == "alena"
    assert reqs[0].options.output_audio_spec.raw_audio.sample_rate_hertz == 8000
    inputs = [r.synthesis_input.text for r in reqs if r.WhichOneof("Event") == "synthesis_input"]
    assert all(t.endswith(" ") for t in inputs)
    assert kinds[-1] == "force_synthesis" and "force_synthesis" in kinds[:-1]
    await tts.aclose()


async def test_abort_ends_the_audio_queue_and_is_idempotent(
    speechkit_grpc_channel: grpc.aio.Channel,
) -> None:
    tts = YandexTTSManager(speechkit_grpc_channel, SETTINGS)
    text_in, audio_out = await tts.start_llm_stream()
    text_in.put_nowait("Начинаю длинный ответ. ")
    async with asyncio.timeout(10):
        assert isinstance(await audio_out.get(), AudioChunk)
    await tts.abort_llm_stream()
    await tts.abort_llm_stream()
    items = await drain(audio_out)
    assert items[-1] is None and items.count(None) == 1
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "yandex-tts-stream"]
    await tts.aclose()


async def test_stream_failure_arrives_in_band(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    speechkit_standin.fail_next_tts(1, grpc.StatusCode.RESOURCE_EXHAUSTED)
    tts = YandexTTSManager(speechkit_grpc_channel, SETTINGS)
    text_in, audio_out = await tts.start_llm_stream()
    text_in.put_nowait("Привет. ")
    items = await drain(audio_out)
    assert isinstance(items[0], TTSError) and items[0].retryable
    assert "RESOURCE_EXHAUSTED" in str(items[0])
    assert items[1:] == [None]
    await tts.aclose()


async def test_stalled_stream_is_failed_by_the_watchdog(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    speechkit_standin.stall_next_tts(1)
    tts = YandexTTSManager(speechkit_grpc_channel, replace(SETTINGS, chunk_timeout_s=0.3))
    text_in, audio_out = await tts.start_llm_stream()
    text_in.put_nowait("Привет. ")
    items = await drain(audio_out)
    assert isinstance(items[0], TTSError) and items[0].retryable
    assert "no audio 0.3s after text was sent" in str(items[0])
    assert items[1:] == [None]
    await tts.aclose()


async def test_stalled_utterance_times_out(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    speechkit_standin.stall_next_tts(1)
    tts = YandexTTSManager(speechkit_grpc_channel, replace(SETTINGS, chunk_timeout_s=0.3))
    with pytest.raises(TTSError, match="no audio within 0.3s") as exc:
        _ = [c async for c in tts.synthesize("Привет.")]
    assert exc.value.retryable


@pytest.mark.parametrize("end_input", [False, True])
async def test_watchdog_covers_a_sentence_sent_before_the_first_audio_and_the_half_close(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel, end_input: bool
) -> None:
    # The service answers the first sentence, then goes silent with the call still open. The
    # second sentence went out before the first audio came, so the old watchdog (disarmed by that
    # audio) never watched it, and nothing watched after the half-close: no end marker, ever.
    speechkit_standin.stall_next_tts_streams_after(1)
    tts = YandexTTSManager(speechkit_grpc_channel, replace(SETTINGS, chunk_timeout_s=0.5))
    text_in, audio_out = await tts.start_llm_stream()
    text_in.put_nowait("Первое предложение. ")
    text_in.put_nowait("Второе предложение. ")
    if end_input:
        text_in.put_nowait(None)
    items = await drain(audio_out, timeout=5.0)
    assert isinstance(items[0], AudioChunk)  # the first sentence was spoken
    err = items[-2]
    assert isinstance(err, TTSError) and err.retryable
    what = "after the input ended" if end_input else "after text was sent"
    assert f"no audio 0.5s {what}" in str(err)
    assert items[-1] is None and items.count(None) == 1
    assert all(isinstance(i, AudioChunk) for i in items[:-2])
    assert speechkit_standin.tts_texts == ["Первое предложение."]
    await tts.aclose()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "yandex-tts-stream"]
