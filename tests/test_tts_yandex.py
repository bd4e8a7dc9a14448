"""YandexTTSManager against the SpeechKit stand-in (espeak-ng audio) on a real socket."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
import pytest

from orchestrator.adapters.speechkit import YandexSettings, speechkit_channel
from orchestrator.adapters.tts.yandex import YandexTTSManager
from orchestrator.audio import rms
from orchestrator.contracts import SynthesisStream, TTSManager
from orchestrator.domain.errors import TTSConnectionError, TTSError
from orchestrator.domain.models import AudioChunk
from testkit.standins.speechkit_server import SpeechKitStandin

SETTINGS = YandexSettings(api_key="k", tls=False, voice="alena", role="good", speed=1.1)


async def drain(stream: SynthesisStream, timeout: float = 10.0) -> tuple[list[AudioChunk], TTSError | None]:
    """Every chunk until the iteration ends, and the `TTSError` it raised (None: a clean end)."""
    chunks: list[AudioChunk] = []
    async with asyncio.timeout(timeout):
        try:
            async for chunk in stream:
                chunks.append(chunk)
        except TTSError as exc:
            return chunks, exc
    return chunks, None


def stream_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("tts")]


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
    tts: TTSManager = YandexTTSManager(speechkit_grpc_channel, SETTINGS)
    stream = await tts.open_stream()
    for piece in ["Здравствуйте", "! Доставка ", "стоит"]:
        stream.push_text(piece)
    async with asyncio.timeout(10):
        first = await anext(aiter(stream))
    assert first.sample_rate == 8000
    assert speechkit_standin.tts_texts == ["Здравствуйте!"]  # nothing else was complete yet
    for rest in [" триста рублей. Что", "-нибудь ещё?"]:
        stream.push_text(rest)
    stream.end_input()
    chunks, err = await drain(stream)
    assert err is None and chunks
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


async def test_flush_speaks_an_unfinished_sentence_now(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    tts = YandexTTSManager(speechkit_grpc_channel, SETTINGS)
    stream = await tts.open_stream()
    stream.push_text("Одну минуту, я ")
    stream.push_text("уточню")  # no sentence end, no trailing space: nothing would be spoken yet
    stream.flush()
    async with asyncio.timeout(10):
        first = await anext(aiter(stream))
    assert first.pcm
    assert speechkit_standin.tts_texts == ["Одну минуту, я уточню"]
    kinds = [r.WhichOneof("Event") for r in speechkit_standin.stream_requests]
    assert kinds[-1] == "force_synthesis"
    stream.flush()  # nothing new: no extra request
    stream.end_input()
    _chunks, err = await drain(stream)
    assert err is None
    assert [r.WhichOneof("Event") for r in speechkit_standin.stream_requests] == kinds
    await tts.aclose()


async def test_aclose_ends_the_iteration_and_is_idempotent(
    speechkit_grpc_channel: grpc.aio.Channel,
) -> None:
    tts = YandexTTSManager(speechkit_grpc_channel, SETTINGS)
    stream = await tts.open_stream()
    stream.push_text("Начинаю длинный ответ. ")
    async with asyncio.timeout(10):
        assert (await anext(aiter(stream))).pcm
    await stream.aclose()
    await stream.aclose()
    assert await drain(stream) == ([], None)  # ended, no error
    stream.push_text("никто не слушает. ")  # harmless after the close
    assert not stream_tasks()
    await tts.aclose()


async def test_opening_a_stream_closes_the_previous_one_and_aclose_closes_the_last(
    speechkit_grpc_channel: grpc.aio.Channel,
) -> None:
    tts = YandexTTSManager(speechkit_grpc_channel, SETTINGS)
    first = await tts.open_stream()
    first.push_text("Первый ответ. ")
    second = await tts.open_stream()
    assert await drain(first) == ([], None)  # the first was abandoned before any audio
    second.push_text("Второй ответ. ")
    async with asyncio.timeout(10):
        assert (await anext(aiter(second))).pcm
    await tts.aclose()
    await tts.aclose()
    _chunks, err = await drain(second)
    assert err is None and not stream_tasks()


async def test_stream_failure_is_raised_by_the_iteration(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    speechkit_standin.fail_next_tts(1, grpc.StatusCode.RESOURCE_EXHAUSTED)
    tts = YandexTTSManager(speechkit_grpc_channel, SETTINGS)
    stream = await tts.open_stream()
    stream.push_text("Привет. ")
    chunks, err = await drain(stream)
    assert chunks == [] and err is not None and err.retryable
    # gRPC Python reports a server abort that races our write as INTERNAL (see speechkit.py).
    assert "RESOURCE_EXHAUSTED" in str(err) or "INTERNAL" in str(err)
    assert await drain(stream) == ([], None)  # raised once, then the iteration is over
    await tts.aclose()


async def test_open_stream_on_an_unreachable_service_raises() -> None:
    channel = speechkit_channel("127.0.0.1:1", tls=False)
    try:
        tts = YandexTTSManager(channel, replace(SETTINGS, connect_timeout_s=0.2))
        with pytest.raises(TTSConnectionError, match="not reachable"):
            await tts.open_stream()
    finally:
        await channel.close()


async def test_stalled_stream_is_failed_by_the_watchdog(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    speechkit_standin.stall_next_tts(1)
    tts = YandexTTSManager(speechkit_grpc_channel, replace(SETTINGS, chunk_timeout_s=0.3))
    stream = await tts.open_stream()
    stream.push_text("Привет. ")
    chunks, err = await drain(stream)
    assert chunks == [] and err is not None and err.retryable
    assert "no audio 0.3s after text was sent" in str(err)
    await tts.aclose()


async def test_stalled_utterance_times_out(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    speechkit_standin.stall_next_tts(1)
    tts = YandexTTSManager(speechkit_grpc_channel, replace(SETTINGS, chunk_timeout_s=0.3))
    with pytest.raises(TTSError, match="no audio within 0.3s") as exc:
        _ = [c async for c in tts.synthesize("Привет.")]
    assert exc.value.retryable


async def test_an_utterance_that_streams_too_slowly_fails_at_synthesis_timeout_s(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    # Every response comes within chunk_timeout_s, but the whole call outlasts synthesis_timeout_s.
    speechkit_standin.tts_response_gap_s = 0.3
    settings = replace(SETTINGS, chunk_timeout_s=1.0, synthesis_timeout_s=0.5)
    tts = YandexTTSManager(speechkit_grpc_channel, settings)
    chunks: list[AudioChunk] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TTSError, match=r"UtteranceSynthesis: not done within 0\.5s") as exc:
        async for chunk in tts.synthesize("Добрый день, стоимость уборки составит шесть тысяч рублей."):
            chunks.append(chunk)
    assert exc.value.retryable
    assert len(chunks) <= 2  # the audio is 3 s: most of it never came
    assert loop.time() - started == pytest.approx(0.5, abs=0.2)


async def test_a_slow_but_steady_utterance_within_synthesis_timeout_s_completes(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    speechkit_standin.tts_response_gap_s = 0.1
    tts = YandexTTSManager(
        speechkit_grpc_channel, replace(SETTINGS, chunk_timeout_s=1.0, synthesis_timeout_s=5.0)
    )
    chunks = [c async for c in tts.synthesize("Добрый день, стоимость уборки составит шесть тысяч рублей.")]
    assert len(chunks) >= 3


@pytest.mark.parametrize("end_input", [False, True])
async def test_watchdog_covers_a_sentence_sent_before_the_first_audio_and_the_half_close(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel, end_input: bool
) -> None:
    # The service answers the first sentence, then goes silent with the call still open. The
    # second sentence went out before the first audio came, so the old watchdog (disarmed by that
    # audio) never watched it, and nothing watched after the half-close: no end marker, ever.
    speechkit_standin.stall_next_tts_streams_after(1)
    tts = YandexTTSManager(speechkit_grpc_channel, replace(SETTINGS, chunk_timeout_s=0.5))
    stream = await tts.open_stream()
    stream.push_text("Первое предложение. ")
    stream.push_text("Второе предложение. ")
    if end_input:
        stream.end_input()
    chunks, err = await drain(stream, timeout=5.0)
    assert chunks  # the first sentence was spoken
    assert err is not None and err.retryable
    what = "after the input ended" if end_input else "after text was sent"
    assert f"no audio 0.5s {what}" in str(err)
    assert speechkit_standin.tts_texts == ["Первое предложение."]
    await tts.aclose()
    assert not stream_tasks()
