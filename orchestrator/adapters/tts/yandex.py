"""Speech synthesis over SpeechKit v3 (gRPC): `UtteranceSynthesis` and bidirectional `StreamSynthesis`.

Output is raw LINEAR16 at 8 kHz, so no resampling is needed for the phone.

- `synthesize(text)`: texts over 250 characters (the service limit) are cut at sentence ends
  and synthesized piece by piece, one `UtteranceSynthesis` each; audio is yielded as it arrives.
  Each wait for the next response is bounded by `chunk_timeout_s`, and each piece's whole call
  by `synthesis_timeout_s` from its request (a retryable `TTSError` either way). The deadline is
  per piece, not per text, and counts the consumer's pauses between chunks too: consumers take
  chunks as they come (the player's background job queues them, warming stores them).
- `open_stream()` -> `YandexSynthesisStream`: options first, then `synthesis_input` pieces as
  the LLM text is pushed (each cut at a space and ending with one, as the docs ask) and
  `force_synthesis` after each sentence end (and on `flush()`), so the first sentence is spoken
  without waiting for the rest. `async for` yields `AudioChunk`s and raises `TTSError` on a
  failure. A watchdog fails the stream (retryable `TTSError`) when nothing moves for
  `chunk_timeout_s` once text has been sent or the input has ended: it is restarted by each text
  sent and each response, until the stream finishes. Without text alignment we cannot tell which
  sentence a response belongs to, so a sentence sent before the previous one's audio arrived is
  only watched this way; the price is that an LLM silent for `chunk_timeout_s` mid-answer, after
  all audio so far arrived, also ends the stream. A dead connection is caught by the gRPC keepalive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from yandex.cloud.ai.tts.v3 import tts_pb2, tts_service_pb2_grpc

from orchestrator.adapters.speechkit import YandexSettings, map_rpc_error
from orchestrator.adapters.tts.streaming import Marker, QueuedSynthesisStream
from orchestrator.domain.errors import TTSConnectionError, TTSError
from orchestrator.domain.models import AudioChunk
from orchestrator.tasks import TaskOwner
from orchestrator.text import chunk_text, complete_sentences_end

__all__ = ["MAX_UTTERANCE_CHARS", "PROVIDER", "YandexSynthesisStream", "YandexTTSManager"]

PROVIDER = "yandex-tts"
RATE = 8000
MAX_UTTERANCE_CHARS = 250


def _audio_spec() -> tts_pb2.AudioFormatOptions:
    return tts_pb2.AudioFormatOptions(
        raw_audio=tts_pb2.RawAudio(audio_encoding=tts_pb2.RawAudio.LINEAR16_PCM, sample_rate_hertz=RATE)
    )


class YandexSynthesisStream(QueuedSynthesisStream):
    """One open StreamSynthesis (`SynthesisStream`): a request generator fed by the text, and its reader.

    Started by `YandexTTSManager.open_stream()`; the reader task is "<name>:stream".
    """

    def __init__(
        self,
        stub: tts_service_pb2_grpc.SynthesizerStub,
        settings: YandexSettings,
        *,
        metadata: tuple[tuple[str, str], ...] = (),
        name: str = "tts",
    ) -> None:
        super().__init__()
        self._settings = settings
        self._watchdog: asyncio.TimerHandle | None = None
        self._watching = False  # text went out or the input ended: audio or the end is owed
        self._half_closed = False
        self._call: grpc.aio.StreamStreamCall[Any, Any] = stub.StreamSynthesis(
            self._requests(), metadata=metadata
        )
        self._tasks = TaskOwner(name)
        self._tasks.spawn(self._read(), "stream")

    async def aclose(self) -> None:
        """Abandon the synthesis now (bounded); iteration ends. Idempotent."""
        self._call.cancel()
        await self._tasks.aclose()
        self.finish()

    # --- requests ---
    async def _requests(self) -> AsyncIterator[tts_pb2.StreamSynthesisRequest]:
        s = self._settings
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
        unforced = False  # text went out that no force_synthesis followed yet
        while True:
            piece = await self.next_input()
            if isinstance(piece, str):
                buffer += piece
                cut = max(buffer.rfind(" "), buffer.rfind("\n")) + 1
                send, buffer = buffer[:cut], buffer[cut:]
                # Force synthesis right after the last sentence end, not after the words that
                # follow it, so a half-said next sentence is not spoken early.
                cut = complete_sentences_end(send)
            else:  # flush or end: everything so far is spoken
                send, buffer = (buffer.strip() + " ") if buffer.strip() else "", ""
                cut = len(send)
            # A sentence end was sent (or flush/end asks for everything): force what went out.
            ask = cut > 0 or not isinstance(piece, str)
            for text, force in ((send[:cut], ask), (send[cut:], False)):
                if text.strip():
                    self._restart_watchdog()
                    yield tts_pb2.StreamSynthesisRequest(synthesis_input=tts_pb2.SynthesisInput(text=text))
                    unforced = True
                if force and unforced:
                    unforced = False
                    yield tts_pb2.StreamSynthesisRequest(force_synthesis=tts_pb2.ForceSynthesisEvent())
            if piece is Marker.EOF:
                # Half-close: the service finishes the audio and ends the stream; watch for that.
                self._half_closed = True
                self._restart_watchdog()
                return

    # --- stall watchdog ---
    def _restart_watchdog(self) -> None:
        """Text sent or input ended: from now on, `chunk_timeout_s` without progress is a stall."""
        self._watching = True
        self._on_progress()

    def _on_progress(self) -> None:
        self._disarm()
        if self._watching and not self.finished:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(self._settings.chunk_timeout_s, self._stall)

    def _disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _stall(self) -> None:
        self._watchdog = None
        t = self._settings.chunk_timeout_s
        what = "after the input ended" if self._half_closed else "after text was sent"
        self.finish(TTSError(f"no audio {t}s {what}", provider=PROVIDER, retryable=True))
        self._call.cancel()  # the reader then ends; the output has its error already

    def finish(self, error: TTSError | None = None) -> None:
        """End the output (see `QueuedSynthesisStream.finish`) and stop watching."""
        self._disarm()
        super().finish(error)

    # --- responses ---
    async def _read(self) -> None:
        try:
            async for resp in self._call:
                self._on_progress()
                data = resp.audio_chunk.data
                if data:
                    self.emit(AudioChunk(bytes(data), RATE))  # dropped after the watchdog's end
        except grpc.aio.AioRpcError as exc:
            err = map_rpc_error(exc, TTSError, "StreamSynthesis", PROVIDER)
            self.finish(err if isinstance(err, TTSError) else None)
            return
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # aclose(): ours
            # The call was cancelled under us: by the watchdog (already finished), or elsewhere.
            self.finish(TTSError("StreamSynthesis was cancelled", provider=PROVIDER, retryable=True))
            return
        self.finish()


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
        self._name = f"tts-{request_id}" if request_id else "tts"
        self._stream: YandexSynthesisStream | None = None

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
        gap, whole = self._settings.chunk_timeout_s, self._settings.synthesis_timeout_s
        loop = asyncio.get_running_loop()
        for piece in pieces:
            deadline = loop.time() + whole  # this piece's UtteranceSynthesis, first chunk to last
            call = self._stub.UtteranceSynthesis(self._request(piece), metadata=self._metadata)
            try:
                while True:
                    try:
                        async with asyncio.timeout_at(min(loop.time() + gap, deadline)):
                            resp = await call.read()
                    except TimeoutError:
                        what = (
                            f"not done within {whole}s"
                            if loop.time() >= deadline
                            else f"no audio within {gap}s"
                        )
                        raise TTSError(
                            f"UtteranceSynthesis: {what}", provider=PROVIDER, retryable=True
                        ) from None
                    if resp is grpc.aio.EOF:
                        break
                    if resp.audio_chunk.data:
                        yield AudioChunk(bytes(resp.audio_chunk.data), RATE)
            except grpc.aio.AioRpcError as exc:
                raise map_rpc_error(exc, TTSError, "UtteranceSynthesis", PROVIDER) from exc
            finally:
                call.cancel()  # no-op when it ended; stops synthesis when the consumer left early

    async def open_stream(self) -> YandexSynthesisStream:
        """Open a StreamSynthesis (closing the previous one, if open); `TTSConnectionError` if unreachable."""
        await self._close_stream()
        await self.connect()
        stream = YandexSynthesisStream(self._stub, self._settings, metadata=self._metadata, name=self._name)
        self._stream = stream
        return stream

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()

    async def aclose(self) -> None:
        """Abandon the open streaming synthesis, if any. Idempotent; the channel belongs to the caller."""
        await self._close_stream()
