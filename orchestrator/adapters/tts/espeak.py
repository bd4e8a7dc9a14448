"""Local speech synthesis with espeak-ng: for offline runs, the demo, cache warming and the stand-ins.

espeak-ng writes a 22050 Hz mono s16le WAV to stdout; we resample it (audioop `ratecv`) to the rate
asked for, 8 kHz for the phone. Text goes in on stdin, so a text starting with "-" is not an option.
`open_stream()` synthesizes each sentence as soon as it is complete (one espeak-ng run per
sentence, one at a time, in task "<name>:synth"); `flush()` and `end_input()` speak the rest.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
from collections.abc import AsyncIterator

from orchestrator.adapters.tts.espeak_settings import EspeakSettings
from orchestrator.adapters.tts.streaming import Marker, QueuedSynthesisStream
from orchestrator.audio import resample
from orchestrator.domain.errors import TTSConnectionError, TTSError
from orchestrator.domain.models import AudioChunk
from orchestrator.tasks import TaskOwner
from orchestrator.text import take_complete_sentences

__all__ = ["PROVIDER", "EspeakSynthesisStream", "EspeakTTS", "espeak_pcm", "espeak_pcm_sync", "parse_wav"]

PROVIDER = "espeak-ng"
CHUNK_MS = 200  # audio is handed out in pieces this long


def parse_wav(data: bytes) -> tuple[bytes, int]:
    """PCM and sample rate of a mono s16le WAV (the data size in the header may be bogus on a pipe)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise TTSError("espeak-ng output is not a WAV file", provider=PROVIDER)
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt ":
            fmt, channels, rate = struct.unpack_from("<HHI", data, body)
            bits = struct.unpack_from("<H", data, body + 14)[0]
            if fmt != 1 or channels != 1 or bits != 16:
                raise TTSError(
                    f"espeak-ng WAV is format {fmt}, {channels} ch, {bits} bit; want PCM mono 16",
                    provider=PROVIDER,
                )
        elif cid == b"data":
            if not rate:
                raise TTSError("espeak-ng WAV has data before fmt", provider=PROVIDER)
            pcm = data[body:]
            return pcm[: len(pcm) - len(pcm) % 2], rate
        pos = body + size + (size & 1)
    raise TTSError("espeak-ng WAV has no data chunk", provider=PROVIDER)


def espeak_pcm_sync(
    text: str, *, voice: str = "ru", rate: int = 8000, speed_wpm: int | None = None, timeout_s: float = 30.0
) -> bytes:
    """Blocking `espeak_pcm` for tools, tests and benchmarks (never on the event loop).

    Raises `TTSConnectionError` when espeak-ng is missing (install it with `make system-deps`).
    """
    args = ["espeak-ng", "-v", voice, "--stdout", "--stdin"]
    if speed_wpm:
        args += ["-s", str(speed_wpm)]
    try:
        proc = subprocess.run(args, input=text.encode(), capture_output=True, timeout=timeout_s, check=False)
    except FileNotFoundError as exc:
        raise TTSConnectionError("espeak-ng is not installed (make system-deps)", provider=PROVIDER) from exc
    if proc.returncode != 0:
        raise TTSError(f"espeak-ng exited {proc.returncode}: {proc.stderr.decode(errors='replace').strip()}")
    pcm, src_rate = parse_wav(proc.stdout)
    return resample(pcm, src_rate, rate)


async def espeak_pcm(
    text: str,
    *,
    voice: str = "ru",
    rate: int = 8000,
    speed_wpm: int | None = None,
    timeout_s: float = 15.0,
    binary: str = "espeak-ng",
) -> bytes:
    """Synthesize `text` with espeak-ng; s16le mono PCM at `rate` Hz."""
    args = [binary, "-v", voice, "--stdout", "--stdin"]
    if speed_wpm:
        args += ["-s", str(speed_wpm)]
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise TTSConnectionError(f"cannot run {binary}: {exc}", provider=PROVIDER) from exc
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate(text.encode())
    except TimeoutError:
        raise TTSError(
            f"espeak-ng took over {timeout_s}s for {len(text)} chars", provider=PROVIDER, retryable=True
        ) from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise TTSError(
            f"espeak-ng exited {proc.returncode}: {err.decode(errors='replace').strip()}",
            provider=PROVIDER,
        )
    pcm, src_rate = parse_wav(out)
    return resample(pcm, src_rate, rate)


class EspeakSynthesisStream(QueuedSynthesisStream):
    """One streaming synthesis on espeak-ng (`SynthesisStream`); started by `EspeakTTS.open_stream()`."""

    def __init__(self, tts: EspeakTTS, *, name: str = "espeak") -> None:
        super().__init__()
        self._tts = tts
        self._tasks = TaskOwner(name)
        self._tasks.spawn(self._run(), "synth")

    async def aclose(self) -> None:
        """Stop synthesizing now (bounded); iteration ends. Idempotent."""
        await self._tasks.aclose()
        self.finish()

    async def _run(self) -> None:
        buffer = ""
        error: TTSError | None = None
        try:
            while True:
                piece = await self.next_input()
                if isinstance(piece, str):
                    buffer += piece
                    sentences, buffer = take_complete_sentences(buffer)
                else:  # flush or end: the rest too, sentence by sentence
                    sentences, rest = take_complete_sentences(buffer + " ")
                    sentences += [rest.strip()] if rest.strip() else []
                    buffer = ""
                for sentence in sentences:
                    async for chunk in self._tts.synthesize(sentence):
                        self.emit(chunk)
                if piece is Marker.EOF:
                    break
        except TTSError as exc:
            error = exc
        except Exception as exc:  # a bug must not leave the consumer waiting forever
            error = TTSError(f"espeak stream failed: {type(exc).__name__}: {exc}", provider=PROVIDER)
        self.finish(error)


class EspeakTTS:
    """`TTSManager` on espeak-ng (section `[espeak]`: Russian voice `ru` by default), output at
    `rate` Hz (8 kHz for the phone)."""

    def __init__(self, settings: EspeakSettings | None = None, *, rate: int = 8000) -> None:
        s = settings if settings is not None else EspeakSettings()
        self._voice = s.voice
        self._speed = s.speed_wpm
        self._rate = rate
        self._timeout = s.timeout_s
        self._binary = s.binary
        self._stream: EspeakSynthesisStream | None = None

    async def connect(self) -> None:
        """Check that the espeak-ng binary is there."""
        if shutil.which(self._binary) is None:
            raise TTSConnectionError(f"{self._binary} not found on PATH", provider=PROVIDER)

    async def _pcm(self, text: str) -> bytes:
        return await espeak_pcm(
            text,
            voice=self._voice,
            rate=self._rate,
            speed_wpm=self._speed,
            timeout_s=self._timeout,
            binary=self._binary,
        )

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """Synthesize `text`; the audio comes in 200 ms pieces."""
        if not text.strip():
            raise TTSError("nothing to synthesize: empty text", provider=PROVIDER)
        pcm = await self._pcm(text)
        step = self._rate * 2 * CHUNK_MS // 1000
        for i in range(0, len(pcm), step):
            yield AudioChunk(pcm[i : i + step], self._rate)

    async def open_stream(self) -> EspeakSynthesisStream:
        """Start a streaming synthesis (closing the previous one, if open)."""
        await self._close_stream()
        stream = self._stream = EspeakSynthesisStream(self)
        return stream

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()

    async def aclose(self) -> None:
        """Stop any streaming synthesis. Idempotent."""
        await self._close_stream()
