"""Speech synthesis over SpeechKit v3 (gRPC): `UtteranceSynthesis` and bidirectional `StreamSynthesis`.

Output is raw LINEAR16 at 8 kHz, so no resampling is needed for the phone.

- `synthesize(text)`: texts over 250 characters (the service limit) are cut at sentence ends
  and synthesized piece by piece; audio is yielded as it arrives. Each wait for the next
  response is bounded by `chunk_timeout_s` (a deadline on the whole call would expire while a
  real-time consumer is still playing a long answer).
- `start_llm_stream()`: options first, then `synthesis_input` pieces as the LLM text arrives
  (each cut at a space and ending with one, as the docs ask) and `force_synthesis` after each
  sentence end, so the first sentence is spoken without waiting for the rest. Audio goes to the
  audio queue as `AudioChunk`s, then None; a failure goes in-band as `TTSError` before the None.
  A watchdog fails the stream (retryable `TTSError`, then None) when nothing moves for
  `chunk_timeout_s` once text has been sent or the input has ended: it is restarted by each text
  sent and each response, until the stream finishes. Without text alignment we cannot tell which
  sentence a response belongs to, so a sentence sent before the previous one's audio arrived is
  only watched this way; the price is that an LLM silent for `chunk_timeout_s` mid-answer, after
  all audio so far arrived, also ends the stream. A dead connection is caught by the gRPC keepalive.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import grpc
from yandex.cloud.ai.tts.v3 import tts_pb2, tts_service_pb2_grpc

from orchestrator.adapters.speechkit import YandexSettings, map_rpc_error
from orchestrator.contracts import TtsStreamItem
from orchestrator.domain.errors import TTSConnectionError, TTSError
from orchestrator.domain.models import AudioChunk
from orchestrator.text import chunk_text

PROVIDER = "yandex-tts"
RATE = 8000
MAX_UTTERANCE_CHARS = 250
_SENTENCE_END = re.compile(r"[.!?…][\"»)\]]*\s")


def _audio_spec() -> tts_pb2.AudioFormatOptions:
    return tts_pb2.AudioFormatOptions(
        raw_audio=tts_pb2.RawAudio(audio_encoding=tts_pb2.RawAudio.LINEAR16_PCM, sample_rate_hertz=RATE)
    )


class _LlmStream:
    """One open StreamSynthesis: a request generator fed by the text queue, and its reader."""

    def __init__(self, owner: YandexTTSManager) -> None:
        self.owner = owner
        self.text_in: asyncio.Queue[str | None] = asyncio.Queue()
        self.audio_out: asyncio.Queue[TtsStreamItem] = asyncio.Queue()
        self.call: grpc.aio.StreamStreamCall | None = None
        self.reader: asyncio.Task[None] | None = None
        self.watchdog: asyncio.TimerHandle | None = None
        self.finished = False
        self.watching = False  # text went out or the input ended: audio or the end is owed
        self.input_ended = False

    async def requests(self) -> AsyncIterator[tts_pb2.StreamSynthesisRequest]:
        s = self.owner._settings
        yield tts_pb2.StreamSynthesisRequest(
            options=tts_pb2.SynthesisOptions(
                model=s.tts_model,
                voice=s.voice,
                role=s.role or "",
                speed=s.speed,
                output_audio_spec=_audio_spec(),
            )
        )
        buffer = ""
        while True:
            piece = await self.text_in.get()
            if piece is not None:
                buffer += piece
                cut = max(buffer.rfind(" "), buffer.rfind("\n")) + 1
                send, buffer = buffer[:cut], buffer[cut:]
            else:
                send, buffer = (buffer.strip() + " ") if buffer.strip() else "", ""
            # Force synthesis right after the last sentence end, not after the words that follow
            # it, so a half-said next sentence is not spoken early.
            ends = list(_SENTENCE_END.finditer(send))
            cut = len(send) if piece is None else (ends[-1].end() if ends else 0)
            for text, force in ((send[:cut], True), (send[cut:], False)):
                if not text.strip():
                    continue
                self._restart_watchdog()
                yield tts_pb2.StreamSynthesisRequest(synthesis_input=tts_pb2.SynthesisInput(text=text))
                if force:
                    yield tts_pb2.StreamSynthesisRequest(force_synthesis=tts_pb2.ForceSynthesisEvent())
            if piece is None:
                # Half-close: the service finishes the audio and ends the stream; watch for that.
                self.input_ended = True
                self._restart_watchdog()
                return

    def _restart_watchdog(self) -> None:
        """Text sent or input ended: from now on, `chunk_timeout_s` without progress is a stall."""
        self.watching = True
        self._on_progress()

    def _on_progress(self) -> None:
        self._disarm()
        if self.watching and not self.finished:
            loop = asyncio.get_running_loop()
            self.watchdog = loop.call_later(self.owner._settings.chunk_timeout_s, self._stall)

    def _disarm(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None

    def _stall(self) -> None:
        self.watchdog = None
        t = self.owner._settings.chunk_timeout_s
        what = "after the input ended" if self.input_ended else "after text was sent"
        self._finish(TTSError(f"no audio {t}s {what}", provider=PROVIDER, retryable=True))
        if self.call is not None:
            self.call.cancel()  # the reader then ends; the queue has its error and None already

    def _finish(self, error: TTSError | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        self._disarm()
        if error is not None:
            self.audio_out.put_nowait(error)
        self.audio_out.put_nowait(None)

    async def read(self) -> None:
        assert self.call is not None
        try:
            async for resp in self.call:
                self._on_progress()
                data = resp.audio_chunk.data
                if data and not self.finished:  # nothing after the watchdog's end marker
                    self.audio_out.put_nowait(AudioChunk(bytes(data), RATE))
        except grpc.aio.AioRpcError as exc:
            err = map_rpc_error(exc, TTSError, "StreamSynthesis", PROVIDER)
            self._finish(err if isinstance(err, TTSError) else None)
            return
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # aborted by us or our owner
            # The call was cancelled under us: by the watchdog (already finished), or elsewhere.
            self._finish(TTSError("StreamSynthesis was cancelled", provider=PROVIDER, retryable=True))
            return
        self._finish()


class YandexTTSManager:
    """`TTSManager` for one call over SpeechKit v3."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        settings: YandexSettings,
        *,
        request_id: str | None = None,
        iam_token: str | None = None,
    ) -> None:
        self._channel = channel
        self._stub = tts_service_pb2_grpc.SynthesizerStub(channel)
        self._settings = settings
        self._metadata = settings.metadata(request_id, iam_token=iam_token)
        self._stream: _LlmStream | None = None

    async def connect(self) -> None:
        """Wait until the channel is ready; `TTSConnectionError` after `connect_timeout_s`."""
        t = self._settings.connect_timeout_s
        try:
            async with asyncio.timeout(t):
                await self._channel.channel_ready()
        except TimeoutError:
            raise TTSConnectionError(
                f"SpeechKit TTS not reachable within {t}s", provider=PROVIDER, retryable=True
            ) from None

    def _request(self, text: str) -> tts_pb2.UtteranceSynthesisRequest:
        s = self._settings
        hints = [tts_pb2.Hints(voice=s.voice)]
        if s.role:
            hints.append(tts_pb2.Hints(role=s.role))
        if s.speed != 1.0:
            hints.append(tts_pb2.Hints(speed=s.speed))
        return tts_pb2.UtteranceSynthesisRequest(
            model=s.tts_model, text=text, hints=hints, output_audio_spec=_audio_spec()
        )

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """Synthesize `text` (any length; cut into <= 250-char pieces at sentence ends)."""
        pieces = chunk_text(text, MAX_UTTERANCE_CHARS)
        if not pieces:
            raise TTSError("nothing to synthesize: empty text", provider=PROVIDER)
        timeout = self._settings.chunk_timeout_s
        for piece in pieces:
            call = self._stub.UtteranceSynthesis(self._request(piece), metadata=self._metadata)
            try:
                while True:
                    try:
                        async with asyncio.timeout(timeout):
                            resp = await call.read()
                    except TimeoutError:
                        raise TTSError(
                            f"UtteranceSynthesis: no audio within {timeout}s",
                            provider=PROVIDER,
                            retryable=True,
                        ) from None
                    if resp is grpc.aio.EOF:
                        break
                    if resp.audio_chunk.data:
                        yield AudioChunk(bytes(resp.audio_chunk.data), RATE)
            except grpc.aio.AioRpcError as exc:
                raise map_rpc_error(exc, TTSError, "UtteranceSynthesis", PROVIDER) from exc
            finally:
                call.cancel()  # no-op when it ended; stops synthesis when the consumer left early

    async def start_llm_stream(
        self,
    ) -> tuple[asyncio.Queue[str | None], asyncio.Queue[TtsStreamItem]]:
        """Open a StreamSynthesis; text pieces in (None ends the input), audio out (None at the end)."""
        await self.abort_llm_stream()
        await self.connect()
        stream = _LlmStream(self)
        stream.call = self._stub.StreamSynthesis(stream.requests(), metadata=self._metadata)
        stream.reader = asyncio.get_running_loop().create_task(stream.read(), name="yandex-tts-stream")
        self._stream = stream
        return stream.text_in, stream.audio_out

    async def abort_llm_stream(self) -> None:
        """Cancel the open streaming synthesis, if any; its audio queue gets the end marker."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        if stream.call is not None:
            stream.call.cancel()
        if stream.reader is not None and not stream.reader.done():
            stream.reader.cancel()
            await asyncio.wait({stream.reader})  # our caller's own cancellation still propagates
        stream._finish()

    async def aclose(self) -> None:
        """Abort any streaming synthesis. Idempotent; the channel belongs to the caller."""
        await self.abort_llm_stream()
