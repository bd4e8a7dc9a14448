"""Audio facts every layer shares: the telephony format, levels, and the one resampler.

The line is 8 kHz signed 16-bit little-endian mono (AudioSocket `slin`), in 20 ms frames of
320 bytes. Resampling is libsoxr (`soxr`, "HQ": a proper anti-aliasing low-pass, so a 6 kHz
tone in 16 kHz audio does not fold back to 2 kHz on the line), streamed with its filter state
carried across chunks so a stream split anywhere plays without clicks. Levels are audioop's
(stdlib; `audioop-lts` on 3.13+). Imports nothing of ours.
"""

from __future__ import annotations

import asyncio
import warnings
from collections import deque

import numpy as np
import soxr

with warnings.catch_warnings():
    # Python 3.11/3.12 warn that stdlib audioop goes away in 3.13; there `audioop-lts` provides it.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SAMPLE_RATE = 8000
SAMPLE_WIDTH = 2  # signed 16-bit little-endian
FRAME_MS = 20
FRAME_S = FRAME_MS / 1000
FRAME_BYTES = 320  # 8000 Hz x 20 ms x 2 B
SILENCE_FRAME = bytes(FRAME_BYTES)

_QUALITY = "HQ"  # libsoxr's 20-bit quality: >= 100 dB stop band, pass band to 91 % of Nyquist
_EMPTY = np.zeros(0, dtype=np.int16)


class Resampler:
    """Converts one stream of s16le mono audio to `dst_rate` Hz (8 kHz by default), keeping the
    filter state between chunks (libsoxr's `ResampleStream`, created on the first chunk that
    needs converting: a stream already at the target rate costs nothing).

    The filter delays its output by a few milliseconds: a chunk's last samples come out with
    the next chunk, or with `flush()` at the end of the stream. Chunked output followed by
    `flush()` equals whole-buffer output within 2 LSB. Whole buffers go through `resample()`.
    The only resampler in the project.
    """

    __slots__ = ("_dst", "_rate", "_stream")

    def __init__(self, dst_rate: int = SAMPLE_RATE) -> None:
        if dst_rate <= 0:
            raise ValueError(f"sample rate {dst_rate} Hz: must be positive")
        self._dst = dst_rate
        self._rate = dst_rate
        self._stream: soxr.ResampleStream | None = None

    def convert(self, pcm: bytes, rate: int) -> bytes:
        """Return `pcm` (at `rate` Hz) at the target rate; a change of rate starts a new stream
        (the old one's tail is dropped: call `flush()` first to keep it).

        Raises ValueError for an odd byte count (a stray byte would shift every later sample
        and turn the rest of the call into noise) or a non-positive rate.
        """
        if len(pcm) % SAMPLE_WIDTH:
            raise ValueError(f"odd number of bytes ({len(pcm)}) in 16-bit audio")
        if rate == self._dst:
            return pcm
        if rate <= 0:
            raise ValueError(f"sample rate {rate} Hz: must be positive")
        if rate != self._rate or self._stream is None:
            self._rate = rate
            self._stream = soxr.ResampleStream(rate, self._dst, 1, dtype="int16", quality=_QUALITY)
        out = self._stream.resample_chunk(np.frombuffer(pcm, dtype=np.int16))
        return bytes(out.tobytes())

    def flush(self) -> bytes:
        """The stream's held-back tail (empty when nothing was converted); then a new stream."""
        stream, self._stream = self._stream, None
        self._rate = self._dst
        if stream is None:
            return b""
        return bytes(stream.resample_chunk(_EMPTY, last=True).tobytes())

    def reset(self) -> None:
        """Forget the filter state and the held-back tail (a cut: the audio is dropped)."""
        self._rate, self._stream = self._dst, None


# audioop's own RMS, `(pcm, SAMPLE_WIDTH) -> int`: what `rms` returns, without its Python call
# (for code that measures every frame).
audioop_rms = audioop.rms


def rms(pcm: bytes | bytearray) -> int:
    """Root-mean-square level of s16le audio."""
    return int(audioop.rms(pcm, SAMPLE_WIDTH))


def resample(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """One whole buffer of s16le mono from `src_rate` to `dst_rate` Hz (libsoxr, HQ, no tail lost).

    Raises ValueError like `Resampler.convert`.
    """
    if len(pcm) % SAMPLE_WIDTH:
        raise ValueError(f"odd number of bytes ({len(pcm)}) in 16-bit audio")
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError(f"sample rates {src_rate} -> {dst_rate} Hz: must be positive")
    if src_rate == dst_rate or not pcm:
        return pcm
    x = np.frombuffer(pcm, dtype=np.int16)
    return bytes(soxr.resample(x, src_rate, dst_rate, quality=_QUALITY).tobytes())


class AudioBuffer:
    """The one bounded buffer between the socket and a recognizer, with the one drop counter.

    `push()` is called in the socket callback for every 20 ms frame: it never blocks or awaits,
    and allocates nothing but the deque slot. When `max_frames` are queued the OLDEST frame is
    dropped and counted in `dropped`: a recognizer that fell behind is better served by recent
    speech. The consumer (one task) takes frames with `take()` and sleeps in `wait()`, or, to
    wait together with other futures without a task per wait, on `waiter()`. Both can ask for a
    batch (`min_frames`), so a consumer that sends 100 ms per request is woken once per batch.
    """

    __slots__ = ("_frames", "_max", "_waiter", "_want", "_waiting", "_ended", "pushed", "dropped")

    def __init__(self, max_frames: int) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames={max_frames}: must be >= 1")
        self._frames: deque[bytes] = deque()
        self._max = max_frames
        self._waiter: asyncio.Future[None] | None = None
        self._want = 1  # frames the pending waiter asked for
        self._waiting = False  # a coroutine is inside wait()
        self._ended = False
        self.pushed = 0  # frames offered
        self.dropped = 0  # frames lost because the consumer was behind

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def max_frames(self) -> int:
        """Capacity: frames kept before the oldest is dropped."""
        return self._max

    @property
    def ended(self) -> bool:
        """Whether `end()` was called (frames may still be queued)."""
        return self._ended

    def push(self, frame: bytes) -> None:
        """Queue one frame; ignored after `end()`. The hot path: no call, no allocation but the slot."""
        if self._ended:
            return
        self.pushed += 1
        frames = self._frames
        if len(frames) >= self._max:
            frames.popleft()
            self.dropped += 1
        frames.append(frame)
        waiter = self._waiter
        if waiter is not None and len(frames) >= self._want:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def end(self) -> None:
        """No more audio: a waiting consumer wakes, `take()` drains what is left."""
        self._ended = True
        self._wake()

    def clear(self) -> int:
        """Drop everything queued (not counted as drops); returns how many frames went."""
        n = len(self._frames)
        self._frames.clear()
        return n

    def take(self, max_frames: int) -> list[bytes]:
        """Up to `max_frames` queued frames, oldest first (empty when none are queued)."""
        frames = self._frames
        n = min(max_frames, len(frames))
        return [frames.popleft() for _ in range(n)]

    def waiter(self, min_frames: int = 1) -> asyncio.Future[None] | None:
        """None when `min_frames` are queued or the input has ended; else a future done when so.

        For the one consumer, to wait on it together with other futures (`asyncio.wait`) without
        a task per wait. While it is pending the same future is returned (with the new
        `min_frames`); cancelling it is harmless (the next call makes a new one).
        """
        if len(self._frames) >= min_frames or self._ended:
            return None
        self._want = max(1, min_frames)
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = asyncio.get_running_loop().create_future()
        return waiter

    async def wait(self, min_frames: int = 1) -> None:
        """Return once `min_frames` are queued or the input has ended. One consumer only.

        Raises RuntimeError when another coroutine is already waiting.
        """
        if self._waiting:
            raise RuntimeError("AudioBuffer.wait() is already being awaited")
        waiter = self.waiter(min_frames)
        if waiter is None:
            return
        self._waiting = True
        try:
            await waiter
        finally:
            self._waiting = False

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
