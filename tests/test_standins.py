"""The stand-ins behave like the services they replace (raw gRPC / HTTP clients, real sockets)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import grpc
import openai
import pytest
from yandex.cloud.ai.stt.v3 import stt_pb2, stt_service_pb2_grpc
from yandex.cloud.ai.tts.v3 import tts_pb2, tts_service_pb2_grpc

from orchestrator.adapters.speechkit import YandexSettings
from orchestrator.adapters.stt.yandex import streaming_options
from orchestrator.domain.errors import ConfigError
from testkit.standins.openai_server import OpenAIStandin, local_embedding
from testkit.standins.script import SttScript, load_scripts, parse_scripts
from testkit.standins.speechkit_server import SpeechKitStandin

OPTIONS = streaming_options(YandexSettings(tls=False))


async def requests(*items: stt_pb2.StreamingRequest) -> AsyncIterator[stt_pb2.StreamingRequest]:
    for item in items:
        yield item


def audio_requests(pcm: bytes) -> list[stt_pb2.StreamingRequest]:
    return [
        stt_pb2.StreamingRequest(chunk=stt_pb2.AudioChunk(data=pcm[i : i + 1600]))
        for i in range(0, len(pcm), 1600)
    ]


async def recognize(
    channel: grpc.aio.Channel, reqs: list[stt_pb2.StreamingRequest], request_id: str | None = None
) -> list[stt_pb2.StreamingResponse]:
    stub = stt_service_pb2_grpc.RecognizerStub(channel)
    md = (("x-client-request-id", request_id),) if request_id else None
    call = stub.RecognizeStreaming(requests(*reqs), metadata=md)
    async with asyncio.timeout(10):
        return [r async for r in call]


async def test_stt_event_order_and_per_call_scripts_across_streams(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    make_speech: Callable[[str], bytes],
) -> None:
    speechkit_standin.script = SttScript(default=["Общий сценарий."])
    speechkit_standin.script.set_call("call-7", ["Первая фраза.", "Вторая фраза."])
    speech = bytes(8000) + make_speech("Раз два три четыре") + bytes(12000)
    opts = stt_pb2.StreamingRequest(session_options=OPTIONS)
    first = await recognize(speechkit_grpc_channel, [opts, *audio_requests(speech)], "call-7")
    kinds = [r.WhichOneof("Event") for r in first]
    assert kinds[0] == "status_code" and first[0].status_code.code_type == stt_pb2.WORKING
    assert kinds[-3:] == ["final", "final_refinement", "eou_update"]
    assert set(kinds[1:-3]) == {"partial"}
    assert first[-3].final.alternatives[0].text == "первая фраза"  # raw
    assert first[-2].final_refinement.normalized_text.alternatives[0].text == "Первая фраза."
    assert first[-1].session_uuid.user_request_id == "call-7"
    # A new stream of the same call (a renewal) continues its script.
    second = await recognize(speechkit_grpc_channel, [opts, *audio_requests(speech)], "call-7")
    assert second[-2].final_refinement.normalized_text.alternatives[0].text == "Вторая фраза."
    # Any other call gets the default script.
    other = await recognize(speechkit_grpc_channel, [opts, *audio_requests(speech)])
    assert other[-2].final_refinement.normalized_text.alternatives[0].text == "Общий сценарий."
    rec = speechkit_standin.stt_sessions[0]
    assert rec.audio_ms == len(speech) // 16 and rec.ended == "eof"


async def test_silence_is_not_speech(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    speechkit_standin.script = SttScript(default=["Никогда."])
    reqs = [
        stt_pb2.StreamingRequest(session_options=OPTIONS),
        *audio_requests(bytes(32000)),
        stt_pb2.StreamingRequest(silence_chunk=stt_pb2.SilenceChunk(duration_ms=3000)),
    ]
    out = await recognize(speechkit_grpc_channel, reqs)
    assert [r.WhichOneof("Event") for r in out] == ["status_code"]
    assert speechkit_standin.stt_sessions[0].audio_ms == 5000


@pytest.mark.parametrize(
    ("first", "problem"),
    [
        (stt_pb2.StreamingRequest(chunk=stt_pb2.AudioChunk(data=b"\0\0")), "session_options"),
        (
            stt_pb2.StreamingRequest(
                session_options=stt_pb2.StreamingOptions(
                    recognition_model=stt_pb2.RecognitionModelOptions(
                        model="general",
                        audio_format=stt_pb2.AudioFormatOptions(
                            raw_audio=stt_pb2.RawAudio(
                                audio_encoding=stt_pb2.RawAudio.LINEAR16_PCM, sample_rate_hertz=11025
                            )
                        ),
                    )
                )
            ),
            "sample_rate_hertz 11025",
        ),
    ],
)
async def test_bad_session_start_is_invalid_argument(
    speechkit_grpc_channel: grpc.aio.Channel, first: stt_pb2.StreamingRequest, problem: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await recognize(speechkit_grpc_channel, [first])
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and problem in (exc.value.details() or "")


async def test_idle_stream_is_cut() -> None:
    server = SpeechKitStandin(idle_timeout_s=0.2)
    await server.start()
    channel = grpc.aio.insecure_channel(server.endpoint)
    stub = stt_service_pb2_grpc.RecognizerStub(channel)
    never = asyncio.Event()

    async def idle() -> AsyncIterator[stt_pb2.StreamingRequest]:
        yield stt_pb2.StreamingRequest(session_options=OPTIONS)
        await never.wait()

    try:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            async with asyncio.timeout(5):
                _ = [r async for r in stub.RecognizeStreaming(idle())]
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert server.stt_sessions[0].ended == "idle"
    finally:
        never.set()
        await channel.close()
        await server.close()


async def test_tts_rate_and_limits(speechkit_grpc_channel: grpc.aio.Channel) -> None:
    stub = tts_service_pb2_grpc.SynthesizerStub(speechkit_grpc_channel)

    def req(text: str, rate: int) -> tts_pb2.UtteranceSynthesisRequest:
        spec = tts_pb2.AudioFormatOptions(
            raw_audio=tts_pb2.RawAudio(audio_encoding=tts_pb2.RawAudio.LINEAR16_PCM, sample_rate_hertz=rate)
        )
        return tts_pb2.UtteranceSynthesisRequest(text=text, output_audio_spec=spec)

    async def total(rate: int) -> int:
        return sum(
            [len(r.audio_chunk.data) async for r in stub.UtteranceSynthesis(req("Проверка связи.", rate))]
        )

    b8, b16 = await total(8000), await total(16000)
    assert b8 > 8000 and abs(b16 - 2 * b8) < 0.02 * b16
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        _ = [r async for r in stub.UtteranceSynthesis(req("а" * 251, 8000))]
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "too long" in (exc.value.details() or "")


async def test_openai_non_streaming_and_fault_counting(
    openai_standin: OpenAIStandin, openai_client: openai.AsyncOpenAI
) -> None:
    openai_standin.script.add("(?i)часы работы", "С девяти до девяти.")
    resp = await openai_client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Какие часы работы?"}]
    )
    assert resp.choices[0].message.content == "С девяти до девяти."
    openai_standin.inject("http500", 2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await openai_client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
    ok = await openai_client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert ok.choices[0].message.content == openai_standin.script.default


async def test_openai_rejects_bad_bodies(openai_standin: OpenAIStandin) -> None:
    async with aiohttp.ClientSession() as http:
        r = await http.post(f"{openai_standin.base_url}/chat/completions", data=b"{")
        assert r.status == 400 and "invalid JSON" in await r.text()
        r = await http.post(f"{openai_standin.base_url}/embeddings", json={"input": 5})
        assert r.status == 400


def test_local_embedding_is_deterministic() -> None:
    assert local_embedding("привет мир") == local_embedding("Привет, мир!")
    assert local_embedding("привет") != local_embedding("пока")
    assert local_embedding("") == [0.0] * 64


def test_script_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(
        json.dumps(
            {
                "stt": {"default": ["Да."], "calls": {"c1": ["Нет."]}},
                "llm": {"rules": [["(?i)цена", "Сто рублей."]], "default": "Не знаю."},
            }
        ),
        encoding="utf-8",
    )
    stt, llm = load_scripts(path)
    assert stt.next_utterance("c1") == "Нет." and stt.next_utterance("c1") is None
    assert stt.next_utterance("c2") == "Да."
    assert llm.answer("Какая ЦЕНА?") == "Сто рублей." and llm.answer("что?") == "Не знаю."
    with pytest.raises(ConfigError, match=r"llm.rules\[0\]: bad regex"):
        parse_scripts({"llm": {"rules": [["(", "x"]]}}, "f.json")
    with pytest.raises(ConfigError, match="stt.default: expected a list of strings"):
        parse_scripts({"stt": {"default": "Да"}}, "f.json")
    with pytest.raises(ConfigError, match="cannot read script"):
        load_scripts(tmp_path / "missing.json")
