"""An STT stand-in for real-socket tests of the bridge: it "recognises" the next scripted line
each time the caller's audio turns voiced and then quiet again, whatever was said.

Unlike `testkit.fakes.FakeSTT` (driven by `FakeInbound`'s labelled timeline), it takes its audio
from whatever pushes frames into it, e.g. the real `TelephonyGateway` fed by a `FakeAsterisk`
over AudioSocket. No network, no timers: a final is queued inside `push_audio`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from orchestrator.contracts import SttEvent
from orchestrator.domain.models import SttResult

__all__ = ["VoicedLineRecognition", "VoicedLineSTT"]

VOICED_FRAMES = 5  # a run of this many non-silent frames is speech ...
QUIET_FRAMES = 10  # ... and this many silent frames after it end the utterance (200 ms)


class VoicedLineRecognition:
    """One call's `RecognitionStream`: a final per spoken stretch, the lines in order."""

    def __init__(self, lines: Sequence[str]) -> None:
        self._lines = list(lines)
        self._results: asyncio.Queue[SttResult | None] = asyncio.Queue()
        self._voiced = 0
        self._quiet = 0
        self._ended = False
        self.answered_at: float | None = None  # its last final (it says nothing else)

    def push_audio(self, frame: bytes) -> None:
        if self._ended:
            return
        if any(frame):
            self._voiced += 1
            self._quiet = 0
            return
        self._quiet += 1
        if self._voiced >= VOICED_FRAMES and self._quiet >= QUIET_FRAMES:
            self._voiced = 0
            if self._lines:
                loop = asyncio.get_running_loop()
                text = self._lines.pop(0)
                self.answered_at = loop.time()
                self._results.put_nowait(SttResult(text, True, 0.9, "final", received_at=loop.time()))

    @property
    def frames_dropped(self) -> int:
        return 0

    def end_input(self) -> None:
        self._end()

    async def aclose(self) -> None:
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._results.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[SttEvent]:
        while (result := await self._results.get()) is not None:
            yield result


class VoicedLineSTT:
    """`STTStreamer` whose streams recognise `lines` in order, one per stretch of speech."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)

    def open_stream(self) -> VoicedLineRecognition:
        return VoicedLineRecognition(self.lines)
