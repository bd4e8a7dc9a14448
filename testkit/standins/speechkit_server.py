"""SpeechKit v3 stand-in (test/demo only): a grpc.aio server on the real protos.

STT (`Recognizer.RecognizeStreaming`): checks the session options like the service would, runs
webrtcvad on the audio it really receives (20 ms frames; speech starts after `min_speech_ms`,
ends after `end_silence_ms` of silence; `silence_chunk` counts as silence), releases the next
scripted utterance (see `script.py`) per speech segment: partials with growing prefixes of its
words while the speech lasts, then `final` (raw: lower case, no punctuation, or `raw_texts`), `final_refinement`
(the script's text) and `eou_update`. It sends `status_code` WORKING first, counts the audio ms
received, and aborts a stream that gets no data for `idle_timeout_s` (5 s, like the service;
the status code the real service uses for that is not documented, we use DEADLINE_EXCEEDED).

TTS (`Synthesizer.UtteranceSynthesis`, `StreamSynthesis`): espeak-ng audio at the requested LPCM
rate; the 250-char (utterance) and 5000-char (stream) limits are enforced.

Faults for tests: `fail_next_streams(n, code, after_ms, unheard_ms)` aborts the next n recognition
streams once they have received `after_ms` of audio (with `unheard_ms`, only after taking that much
more, or everything up to the client's half-close, without hearing it: audio in flight when the
service failed, deterministically); `fail_next_tts(n, code)` fails the next n syntheses;
`stall_next_tts_streams_after(sentences, n)` makes streamed synthesis go silent after some sentences.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import webrtcvad
from yandex.cloud.ai.stt.v3 import stt_pb2, stt_service_pb2_grpc
from yandex.cloud.ai.tts.v3 import tts_pb2, tts_service_pb2_grpc

from orchestrator.tasks import TaskOwner
from testkit.standins import Progress, serve_until_signal, start_grpc_server
from testkit.standins.script import SttScript
from testkit.standins.speechkit_tts import Synthesizer

FRAME_BYTES = 320  # 20 ms at 8 kHz s16le
FRAME_MS = 20
_END = object()  # end of the request stream


@dataclass
class SttSessionRecord:
    """What one recognition stream received (for tests and the demo log)."""

    request_id: str
    options: stt_pb2.StreamingOptions | None = None
    audio_ms: int = 0  # audio + silence_chunk ms received
    audio_bytes: int = 0  # audio heard
    unheard_bytes: int = 0  # audio taken after a fault's point without hearing it (`unheard_ms`)
    silence_ms: int = 0
    chunks: int = 0
    chunk_ms: list[int] = field(default_factory=list)  # each audio request's length as sent, ms
    utterances: list[str] = field(default_factory=list)
    ended: str = ""  # "eof", "idle", "fault", "cancelled", "invalid"
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Fault:
    count: int
    code: grpc.StatusCode
    after_ms: int = 0
    unheard_ms: int | None = 0  # STT: taken unheard before the abort (None: up to the half-close)


def _raw(text: str) -> str:
    """What the recognizer says before normalization: lower case, no punctuation."""
    return " ".join(re.sub(r"[^\w\s-]", " ", text.lower()).split())


class _Segmenter:
    """VAD segmentation of one stream; returns the responses each piece of audio causes."""

    def __init__(self, server: SpeechKitStandin, rec: SttSessionRecord) -> None:
        self.server, self.rec = server, rec
        self.vad = webrtcvad.Vad(server.vad_mode)
        self.buf = bytearray()
        self.cursor_ms = 0
        self.in_speech = False
        self.voiced_run = 0
        self.silence_run = 0
        self.start_ms = 0
        self.words: list[str] = []
        self.text: str | None = None
        self.shown = 0
        self.final_index = 0
        self.final_ms = 0  # audio_cursors.final_time_ms: recognition up to here will not change

    def _resp(self, **event: Any) -> stt_pb2.StreamingResponse:
        return stt_pb2.StreamingResponse(
            session_uuid=stt_pb2.SessionUuid(uuid=self.server_uuid, user_request_id=self.rec.request_id),
            audio_cursors=stt_pb2.AudioCursors(
                received_data_ms=self.cursor_ms,
                final_index=self.final_index,
                partial_time_ms=self.cursor_ms,
                final_time_ms=self.final_ms,
            ),
            response_wall_time_ms=self.cursor_ms,
            **event,
        )

    server_uuid = ""

    def _alt(self, text: str) -> stt_pb2.AlternativeUpdate:
        return stt_pb2.AlternativeUpdate(
            alternatives=[
                stt_pb2.Alternative(
                    text=text,
                    start_time_ms=self.start_ms,
                    end_time_ms=self.cursor_ms,
                    confidence=0.9,
                )
            ]
        )

    def audio(self, pcm: bytes) -> list[stt_pb2.StreamingResponse]:
        out: list[stt_pb2.StreamingResponse] = []
        self.buf += pcm
        while len(self.buf) >= FRAME_BYTES:
            frame = bytes(self.buf[:FRAME_BYTES])
            del self.buf[:FRAME_BYTES]
            self.cursor_ms += FRAME_MS
            self._frame(self.vad.is_speech(frame, 8000), out)
        return out

    def silence(self, ms: int) -> list[stt_pb2.StreamingResponse]:
        out: list[stt_pb2.StreamingResponse] = []
        for _ in range(ms // FRAME_MS):
            self.cursor_ms += FRAME_MS
            self._frame(False, out)
        self.cursor_ms += ms % FRAME_MS
        return out

    def _frame(self, voiced: bool, out: list[stt_pb2.StreamingResponse]) -> None:
        srv = self.server
        if not self.in_speech:
            self.voiced_run = self.voiced_run + FRAME_MS if voiced else 0
            if self.voiced_run >= srv.min_speech_ms:
                self.in_speech = True
                self.start_ms = self.cursor_ms - self.voiced_run
                self.silence_run = 0
                self.text = srv.script.next_utterance(self.rec.request_id)
                self.words = srv.raw_text(self.text).split() if self.text else []
                self.shown = 0
                if self.text is not None:
                    self.rec.utterances.append(self.text)
            return
        self.silence_run = 0 if voiced else self.silence_run + FRAME_MS
        if self.silence_run >= srv.end_silence_ms:
            self.end(out)
            return
        if voiced and self.words:
            # Reveal one more word per `word_ms` of speech, never the whole before the pause.
            k = min(len(self.words) - 1, 1 + (self.cursor_ms - self.start_ms) // srv.word_ms)
            k = max(k, 1)
            if k > self.shown:
                self.shown = k
                out.append(self._resp(partial=self._alt(" ".join(self.words[:k]))))

    def end(self, out: list[stt_pb2.StreamingResponse]) -> None:
        """Close the current speech segment (pause, or end of input)."""
        if not self.in_speech:
            return
        self.in_speech = False
        self.voiced_run = 0
        if self.text is None:
            return
        text = self.text
        self.text = None
        self.final_ms = self.cursor_ms
        out.append(self._resp(final=self._alt(" ".join(self.words))))
        if self.server.send_refinement:
            out.append(
                self._resp(
                    final_refinement=stt_pb2.FinalRefinement(
                        final_index=self.final_index, normalized_text=self._alt(text)
                    )
                )
            )
        if self.server.send_eou:
            out.append(self._resp(eou_update=stt_pb2.EouUpdate(time_ms=self.cursor_ms)))
        self.final_index += 1


def _check_options(opts: stt_pb2.StreamingOptions) -> str | None:
    """What is wrong with the session options, if anything (the stand-in only takes raw 8 kHz)."""
    model = opts.recognition_model
    if not model.model:
        return "recognition_model.model is empty"
    if model.audio_format.WhichOneof("AudioFormat") != "raw_audio":
        return "stand-in supports raw_audio only"
    raw = model.audio_format.raw_audio
    if raw.audio_encoding != stt_pb2.RawAudio.LINEAR16_PCM:
        return "audio_encoding must be LINEAR16_PCM"
    if raw.sample_rate_hertz not in (8000, 16000, 48000):
        return f"sample_rate_hertz {raw.sample_rate_hertz} not supported (8000, 16000, 48000)"
    if raw.sample_rate_hertz != 8000:
        return "stand-in VAD handles 8000 Hz only"
    if raw.audio_channel_count not in (0, 1):
        return "audio_channel_count must be 1"
    return None


class _Recognizer(stt_service_pb2_grpc.RecognizerServicer):
    def __init__(self, server: SpeechKitStandin) -> None:
        self.server = server

    async def RecognizeStreaming(  # noqa: N802 - the generated servicer's name
        self, request_iterator: AsyncIterator[stt_pb2.StreamingRequest], context: Any
    ) -> AsyncIterator[stt_pb2.StreamingResponse]:
        srv = self.server
        md = dict(context.invocation_metadata())
        rid = md.get("x-client-request-id") or f"anon-{uuid.uuid4()}"
        rec = SttSessionRecord(request_id=rid)
        srv.stt_sessions.append(rec)
        srv._notify()
        srv.last_metadata = md
        requests: asyncio.Queue[object] = asyncio.Queue()

        async def pull() -> None:
            try:
                async for r in request_iterator:
                    requests.put_nowait(r)
            finally:
                requests.put_nowait(_END)

        tasks = TaskOwner(f"standin-stt-{rid}")
        tasks.spawn(pull(), "pull")
        fault = srv._take_fault("stt")
        seg = _Segmenter(srv, rec)
        seg.server_uuid = str(uuid.uuid4())
        rec.ended = "cancelled"
        try:
            first = await self._next(requests, context, rec)
            if first is _END:
                rec.ended = "eof"
                return
            assert isinstance(first, stt_pb2.StreamingRequest)
            problem = (
                "first message must be session_options"
                if first.WhichOneof("Event") != "session_options"
                else _check_options(first.session_options)
            )
            if problem:
                rec.ended = "invalid"
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
            rec.options = first.session_options
            if fault is not None and fault.after_ms <= 0:
                rec.ended = "fault"
                await context.abort(fault.code, "stand-in fault injected")
            yield seg._resp(status_code=stt_pb2.StatusCode(code_type=stt_pb2.WORKING, message=""))
            while True:
                req = await self._next(requests, context, rec)
                if req is _END:
                    break
                assert isinstance(req, stt_pb2.StreamingRequest)
                kind = req.WhichOneof("Event")
                # A fault hears exactly `after_ms` whatever the request sizes: the rest of the
                # request that reaches it is taken unheard (the first of `unheard_ms`).
                room = fault.after_ms - rec.audio_ms if fault is not None else None
                unheard_ms = 0
                if kind == "chunk":
                    data = req.chunk.data
                    rec.chunks += 1
                    rec.chunk_ms.append(len(data) // 16)
                    if room is not None and len(data) // 16 > room:
                        rec.unheard_bytes += len(data) - room * 16
                        unheard_ms = len(data) // 16 - room
                        data = data[: room * 16]
                    rec.audio_bytes += len(data)
                    rec.audio_ms += len(data) // 16
                    out = seg.audio(data)
                elif kind == "silence_chunk":
                    ms = req.silence_chunk.duration_ms
                    if room is not None and ms > room:
                        ms, unheard_ms = room, ms - room
                    rec.silence_ms += ms
                    rec.audio_ms += ms
                    out = seg.silence(ms)
                else:
                    rec.ended = "invalid"
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unexpected {kind}")
                srv._notify()
                for resp in out:
                    if srv.refinement_delay_s and resp.WhichOneof("Event") == "final_refinement":
                        await asyncio.sleep(srv.refinement_delay_s)  # a slow normalizer
                    yield resp
                if fault is not None and rec.audio_ms >= fault.after_ms:
                    more = None if fault.unheard_ms is None else fault.unheard_ms - unheard_ms
                    await self._unheard(requests, context, rec, more)
                    rec.ended = "fault"
                    await context.abort(fault.code, "stand-in fault injected")
            out = []
            seg.end(out)
            for resp in out:
                yield resp
            rec.ended = "eof"
        finally:
            await tasks.aclose()
            rec.done.set()
            srv._notify()

    async def _unheard(
        self, requests: asyncio.Queue[object], context: Any, rec: SttSessionRecord, ms: int | None
    ) -> None:
        """Take `ms` more audio (None: all, up to the half-close) without hearing it (`unheard_ms`)."""
        taken = 0
        while ms is None or taken < ms:  # (ms <= 0: nothing more)
            req = await self._next(requests, context, rec)
            if req is _END:
                return
            assert isinstance(req, stt_pb2.StreamingRequest)
            if req.WhichOneof("Event") == "chunk":
                taken += len(req.chunk.data) // 16
                rec.unheard_bytes += len(req.chunk.data)
            else:
                taken += req.silence_chunk.duration_ms
            self.server._notify()

    async def _next(self, requests: asyncio.Queue[object], context: Any, rec: SttSessionRecord) -> object:
        try:
            async with asyncio.timeout(self.server.idle_timeout_s):
                return await requests.get()
        except TimeoutError:
            rec.ended = "idle"
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no audio for {self.server.idle_timeout_s}s: stream closed",
            )
            raise  # abort() raises; this is never reached


class SpeechKitStandin(Progress):
    """A local SpeechKit v3 (STT + TTS) on 127.0.0.1, for tests and the demo."""

    def __init__(
        self,
        script: SttScript | None = None,
        *,
        port: int = 0,
        idle_timeout_s: float = 5.0,
        vad_mode: int = 2,
        min_speech_ms: int = 200,
        end_silence_ms: int = 500,
        word_ms: int = 250,
        send_refinement: bool = True,
        send_eou: bool = True,
        max_concurrent_streams: int | None = None,
    ) -> None:
        self.script = script or SttScript()
        self.idle_timeout_s = idle_timeout_s
        self.vad_mode = vad_mode
        self.min_speech_ms = min_speech_ms
        self.end_silence_ms = end_silence_ms
        self.word_ms = word_ms
        # Switches for testing the adapter's handling of a final without its refinement.
        self.send_refinement = send_refinement
        self.send_eou = send_eou
        # The normalized text this long after its final, s (the real service's is not specified).
        self.refinement_delay_s = 0.0
        # What the recognizer hears of a script line before normalization, where that is more
        # than the line in lower case without punctuation: a number in words ("2" -> "две").
        self.raw_texts: dict[str, str] = {}
        # Per connection; a call beyond it waits (its headers are not even sent): a hung stream.
        self.max_concurrent_streams = max_concurrent_streams
        self.stt_sessions: list[SttSessionRecord] = []
        self.tts_texts: list[str] = []  # every text synthesized, in order
        # Pause before each synthesis response after the first, s: a slow service that still
        # streams (each gap under the client's chunk timeout, the whole call past its deadline).
        self.tts_response_gap_s = 0.0
        self.utterance_requests: list[tts_pb2.UtteranceSynthesisRequest] = []
        self.stream_requests: list[tts_pb2.StreamSynthesisRequest] = []  # all streams, in order
        self.tts_streams = 0
        self.last_metadata: dict[str, str] = {}
        self._faults: dict[str, _Fault] = {}
        self._tick = asyncio.Event()
        self._closing = asyncio.Event()
        self._port = port
        self._server: grpc.aio.Server | None = None

    def raw_text(self, line: str) -> str:
        """A script line as the raw `final` says it (`raw_texts`, else lower case, no punctuation)."""
        return self.raw_texts.get(line) or _raw(line)

    def fail_next_streams(
        self,
        n: int = 1,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        after_ms: int = 0,
        *,
        unheard_ms: int | None = 0,
    ) -> None:
        """Abort the next `n` recognition streams with `code` after `after_ms` of audio.

        A stream hears exactly `after_ms` (the rest of a request that reaches it is not heard),
        then takes `unheard_ms` more of audio, counting that rest (None: everything up to the
        client's half-close), and does nothing with it: what a real failure does to requests in
        flight, without depending on how fast the client writes or how much a request carries. (Only after audio: with
        `after_ms=0` the abort comes right after the session options, as before.)
        """
        self._faults["stt"] = _Fault(n, code, after_ms, unheard_ms)

    def fail_next_tts(self, n: int = 1, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        """Fail the next `n` synthesis calls with `code` (OK: take the text, never answer)."""
        self._faults["tts"] = _Fault(n, code)

    def stall_next_tts(self, n: int = 1) -> None:
        """The next `n` synthesis calls take their text and never answer."""
        self.fail_next_tts(n, grpc.StatusCode.OK)

    def stall_next_tts_streams_after(self, sentences: int, n: int = 1) -> None:
        """The next `n` StreamSynthesis calls answer `sentences` sentences, then go silent.

        They keep reading text and hold the call open (a healthy connection) until the server closes.
        """
        self._faults["tts-stall-after"] = _Fault(n, grpc.StatusCode.OK, sentences)

    def _take_fault(self, kind: str) -> _Fault | None:
        fault = self._faults.get(kind)
        if fault is None or fault.count <= 0:
            return None
        fault.count -= 1
        return fault

    async def start(self) -> int:
        """Listen on 127.0.0.1; returns the port."""
        options = []
        if self.max_concurrent_streams is not None:
            options.append(("grpc.max_concurrent_streams", self.max_concurrent_streams))

        def register(server: grpc.aio.Server) -> None:
            stt_service_pb2_grpc.add_RecognizerServicer_to_server(_Recognizer(self), server)
            tts_service_pb2_grpc.add_SynthesizerServicer_to_server(Synthesizer(self), server)

        self._server, self._port = await start_grpc_server(register, self._port, options=options)
        return self._port

    @property
    def endpoint(self) -> str:
        """host:port to give `speechkit_channel(..., tls=False)`."""
        return f"127.0.0.1:{self._port}"

    async def close(self) -> None:
        """Stop serving (open streams are cancelled)."""
        self._closing.set()
        if self._server is not None:
            await self._server.stop(grace=0.5)
            self._server = None


async def _main() -> None:
    import argparse

    from testkit.standins.script import load_scripts

    ap = argparse.ArgumentParser(description="SpeechKit v3 stand-in (test/demo only)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--script", help="JSON script file (see testkit/standins/script.py)")
    args = ap.parse_args()
    stt = load_scripts(args.script)[0] if args.script else SttScript()
    server = SpeechKitStandin(stt, port=args.port)
    port = await server.start()
    print(f"speechkit stand-in listening on 127.0.0.1:{port}", flush=True)
    await serve_until_signal(server.close)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
