"""What every streaming synthesis shares: text in through a queue, audio out through another.

`QueuedSynthesisStream` implements the `SynthesisStream` contract's plumbing: `push_text`,
`flush` and `end_input` put items on an unbounded input queue (they never block: the LLM's text
is a few hundred characters per answer), the provider's worker takes them with `next_input()`,
and hands audio, a failure and the end to `emit` / `finish`. `async for` reads them: audio chunks,
then StopAsyncIteration, or the `TTSError` raised once. Subclasses implement `aclose()`.
"""

from __future__ import annotations

import asyncio
import enum

from orchestrator.domain.errors import TTSError
from orchestrator.domain.models import AudioChunk

__all__ = ["Marker", "QueuedSynthesisStream"]


class Marker(enum.Enum):
    """Input items other than text."""

    FLUSH = "flush"  # synthesize what came so far without waiting for a sentence end
    EOF = "eof"  # no more text


class _End:
    """The end marker on the output queue."""


_END = _End()


class QueuedSynthesisStream:
    """Input and output queues of one streaming synthesis, and the `SynthesisStream` methods on them."""

    def __init__(self) -> None:
        self._text_in: asyncio.Queue[str | Marker] = asyncio.Queue()
        self._audio_out: asyncio.Queue[AudioChunk | TTSError | _End] = asyncio.Queue()
        self._input_ended = False  # end_input() or aclose() was called
        self.finished = False  # the output's end is queued: nothing more goes out
        self._exhausted = False  # the consumer has seen the end

    # --- SynthesisStream: input ---
    def push_text(self, text: str) -> None:
        """Queue a piece of text; ignored when empty or after `end_input()`/`aclose()`."""
        if text and not self._input_ended:
            self._text_in.put_nowait(text)

    def flush(self) -> None:
        """Synthesize what was pushed so far now, without waiting for a sentence end."""
        if not self._input_ended:
            self._text_in.put_nowait(Marker.FLUSH)

    def end_input(self) -> None:
        """No more text: the rest is synthesized and iteration ends after its audio. Idempotent."""
        if not self._input_ended:
            self._input_ended = True
            self._text_in.put_nowait(Marker.EOF)

    # --- SynthesisStream: output ---
    def __aiter__(self) -> QueuedSynthesisStream:
        return self

    async def __anext__(self) -> AudioChunk:
        """The next audio chunk; raises the stream's `TTSError` once, then StopAsyncIteration."""
        if self._exhausted:
            raise StopAsyncIteration
        item = await self._audio_out.get()
        if isinstance(item, AudioChunk):
            return item
        self._exhausted = True
        if isinstance(item, TTSError):
            try:
                raise item
            finally:
                del item  # its traceback holds this frame: naming it here would be a cycle
        raise StopAsyncIteration

    # --- for the provider's worker ---
    async def next_input(self) -> str | Marker:
        """The next piece of text, or a marker."""
        return await self._text_in.get()

    def emit(self, chunk: AudioChunk) -> None:
        """Hand out audio (dropped once the stream has finished)."""
        if not self.finished:
            self._audio_out.put_nowait(chunk)

    def finish(self, error: TTSError | None = None) -> None:
        """End the output, with `error` if it failed. Only the first call counts."""
        if self.finished:
            return
        self.finished = True
        self._input_ended = True
        self._audio_out.put_nowait(error if error is not None else _END)
