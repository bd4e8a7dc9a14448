"""The TTS half of the SpeechKit stand-in (test/demo only): `Synthesizer` on the real protos.

Answers `UtteranceSynthesis` and `StreamSynthesis` with espeak-ng audio at the requested LPCM rate
(8..48 kHz), in 500 ms responses. Enforces the service's limits: 250 characters per utterance
(unless `unsafe_mode`), 5000 per stream, options first in a stream, known voices only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
from yandex.cloud.ai.tts.v3 import tts_pb2, tts_service_pb2_grpc

from orchestrator.adapters.tts.espeak import espeak_pcm
from orchestrator.text import take_complete_sentences

if TYPE_CHECKING:
    from testkit.standins.speechkit_server import SpeechKitStandin

TTS_VOICES = frozenset(
    [
        "alena",
        "filipp",
        "ermil",
        "jane",
        "omazh",
        "zahar",
        "dasha",
        "julia",
        "lera",
        "masha",
        "marina",
        "alexander",
        "kirill",
        "anton",
    ]
)


class Synthesizer(tts_service_pb2_grpc.SynthesizerServicer):
    def __init__(self, server: SpeechKitStandin) -> None:
        self.server = server

    async def _audio(
        self, text: str, rate: int, cls: Any, context: Any, start_ms: int = 0
    ) -> AsyncIterator[Any]:
        self.server.tts_texts.append(text)
        pcm = await espeak_pcm(text, rate=rate)
        step = rate * 2 // 2  # 500 ms per response
        for i in range(0, len(pcm), step):
            if i and self.server.tts_response_gap_s:
                await asyncio.sleep(self.server.tts_response_gap_s)
            piece = pcm[i : i + step]
            yield cls(
                audio_chunk=tts_pb2.AudioChunk(data=piece),
                text_chunk=tts_pb2.TextChunk(text=text),
                start_ms=start_ms + i // (rate * 2 // 1000),
                length_ms=len(piece) // (rate * 2 // 1000),
            )

    async def _fail(self, code: grpc.StatusCode, context: Any) -> None:
        if code == grpc.StatusCode.OK:
            await self.server._closing.wait()  # a stall: hold the call until the server closes
        await context.abort(code, "stand-in fault injected")

    @staticmethod
    def _rate(spec: tts_pb2.AudioFormatOptions) -> int | str:
        if spec.WhichOneof("AudioFormat") != "raw_audio":
            return "stand-in supports output_audio_spec.raw_audio only"
        raw = spec.raw_audio
        if raw.audio_encoding != tts_pb2.RawAudio.LINEAR16_PCM:
            return "audio_encoding must be LINEAR16_PCM"
        if not 8000 <= raw.sample_rate_hertz <= 48000:
            return f"sample_rate_hertz {raw.sample_rate_hertz} outside 8000..48000"
        return int(raw.sample_rate_hertz)

    async def UtteranceSynthesis(  # noqa: N802
        self, request: tts_pb2.UtteranceSynthesisRequest, context: Any
    ) -> AsyncIterator[tts_pb2.UtteranceSynthesisResponse]:
        self.server.utterance_requests.append(request)
        fault = self.server._take_fault("tts")
        if fault is not None:
            await self._fail(fault.code, context)
        text = request.text
        if not text.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "text is empty")
        if len(text) > 250 and not request.unsafe_mode:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"text too long: {len(text)} > 250")
        for hint in request.hints:
            if hint.WhichOneof("Hint") == "voice" and hint.voice not in TTS_VOICES:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown voice {hint.voice}")
        rate = self._rate(request.output_audio_spec)
        if isinstance(rate, str):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, rate)
        assert isinstance(rate, int)
        async for resp in self._audio(text, rate, tts_pb2.UtteranceSynthesisResponse, context):
            yield resp

    async def StreamSynthesis(  # noqa: N802
        self, request_iterator: AsyncIterator[tts_pb2.StreamSynthesisRequest], context: Any
    ) -> AsyncIterator[tts_pb2.StreamSynthesisResponse]:
        fault = self.server._take_fault("tts")
        stall = self.server._take_fault("tts-stall-after")
        answered = 0  # sentences synthesized (a stall fault stops answering after `after_ms` of them)
        rate: int | str | None = None
        buffer, total, start_ms = "", 0, 0
        self.server.tts_streams += 1
        async for req in request_iterator:
            self.server.stream_requests.append(req)
            kind = req.WhichOneof("Event")
            if rate is None:
                if kind != "options":
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "options must come first")
                rate = self._rate(req.options.output_audio_spec)
                if isinstance(rate, str):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, rate)
                if req.options.voice and req.options.voice not in TTS_VOICES:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, f"unknown voice {req.options.voice}"
                    )
                continue
            if fault is not None:
                await self._fail(fault.code, context)
            sentences: list[str] = []
            if kind == "synthesis_input":
                total += len(req.synthesis_input.text)
                if total > 5000:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "over 5000 chars")
                buffer += req.synthesis_input.text
                sentences, buffer = take_complete_sentences(buffer)
            elif kind == "force_synthesis":
                sentences, buffer = [buffer.strip()], ""
            for sentence in filter(None, sentences):
                assert isinstance(rate, int)
                if stall is not None and answered >= stall.after_ms:
                    continue  # gone silent: the text is taken, no audio comes
                answered += 1
                async for resp in self._audio(
                    sentence, rate, tts_pb2.StreamSynthesisResponse, context, start_ms
                ):
                    start_ms = resp.start_ms + resp.length_ms
                    yield resp
        if stall is not None and answered >= stall.after_ms:
            await self.server._closing.wait()  # silent, but the call stays open
            return
        if buffer.strip() and isinstance(rate, int):
            async for resp in self._audio(
                buffer.strip(), rate, tts_pb2.StreamSynthesisResponse, context, start_ms
            ):
                yield resp
