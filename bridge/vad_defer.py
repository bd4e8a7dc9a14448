"""A call's frames waiting for its batched Silero window's answer (`[vad] batch_across_calls`).

With a `SileroBatch` (bridge/vad_batch.py), a frame that completes a Silero window cannot be
judged until the batch's flush has run the window. So that the batched path decides exactly as
the immediate one (the frame judged with its own window's probability, not the previous one's),
the detector's work on a frame is split in three (bridge/vad.py):

- arrival (the first part of `process`): the echo gate's part (the residual, its level, the gate's verdicts on
  it: the gate moves on as the bot's frames go out, so this cannot wait);
- `_feed`: the energy gate and the classifier (its window queued in the batch, maybe);
- `_decide`: the frame's class from the probability, the onset/start/end/reject state machine.

`DeferredFrames` holds a call's frames from the one whose window is queued on: their arrival
fields, the residual audio of those not fed yet (copied into preallocated buffers), their arrival
times. When the batch answers (`SileroClassifier.on_answer`, called from the flush), the waiting
frame is decided, then the queued ones are fed and decided in order until one queues a window
again (the flush runs it in its next round, with the other calls' windows) or none is left.
Their events go to `on_event` with the arrival times the immediate path would give them.

No per-frame allocation: the queue is a ring of `capacity` preallocated slots. A full ring
(frames of a call arriving while its window waits, about 0.6 s of them) has the batch flushed
at once; `close()` drops the queue (the batch then writes nothing back to the call).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.vad import VadEvent, VoiceActivityDetector
    from bridge.vad_silero import SileroClassifier

__all__ = ["DeferredFrames"]

log = logging.getLogger(__name__)

_CAPACITY = 32  # frames a call may queue behind a window: more than one socket read brings
_FRAME = 320  # bytes: 20 ms of 8 kHz slin, the gateway's frames


class DeferredFrames:
    """The frames of `vad` (whose classifier `cls` runs its windows in a batch) from the one
    waiting for an answer on; their events go to `on_event`. Loop thread only."""

    __slots__ = (
        "_audible",
        "_audio",
        "_cls",
        "_head",
        "_level",
        "_masked",
        "_maybe",
        "_ms",
        "_n",
        "_now",
        "_on_event",
        "_paths",
        "_vad",
        "dropped",
    )

    def __init__(
        self,
        vad: VoiceActivityDetector,
        cls: SileroClassifier,
        on_event: Callable[[VadEvent], None],
        capacity: int = _CAPACITY,
    ) -> None:
        self._vad = vad
        self._cls = cls
        self._on_event = on_event
        cls.on_answer = self._resume
        # A slot's buffer has its frame's length (webrtcvad takes the length as the frame's);
        # made again only if the frame length changes (never on a call: 20 ms frames).
        self._audio = [bytearray(_FRAME) for _ in range(capacity)]
        self._ms = [0] * capacity  # frame length, ms
        self._now = [0.0] * capacity  # arrival time
        self._level = [0] * capacity  # the vad's arrival fields (set on arrival in `process`)
        self._masked = [False] * capacity
        self._maybe = [False] * capacity
        self._audible = [False] * capacity
        self._paths = [0] * capacity
        self._head = 0  # the oldest frame's slot: the one whose window is queued
        self._n = 0  # frames held
        self.dropped = 0  # frames lost to a full queue that a flush could not empty (re-entry)

    @property
    def waiting(self) -> int:
        """Frames held (the first one's window queued in the batch); 0: frames are judged at once."""
        return self._n

    def push(self, audio: bytes | bytearray, ms: int, now: float) -> VadEvent | None:
        """The vad's frame after its arrival part (its residual `audio`, `ms` long, arrived at `now`): its
        event if judged at once, None if it waits (then its event goes to `on_event`)."""
        vad = self._vad
        if self._n == len(self._audio):
            # Full: answer the queued windows now (this call's frames are judged meanwhile, which
            # overwrites the vad's arrival fields: this frame's are put back after).
            fields = (vad._level, vad._masked, vad._maybe_echo, vad._audible, vad._paths_now)
            batch = self._cls._batch
            if batch is not None:
                batch.flush()
            vad._level, vad._masked, vad._maybe_echo, vad._audible, vad._paths_now = fields
            if self._n == len(self._audio):
                self.dropped += 1
                return None
        if self._n:
            self._store(audio, ms, now)
            return None
        p = vad._feed(audio)
        if self._cls._slot < 0:  # not `pending`: a property call per frame
            return vad._decide(p, ms, now)
        self._store(None, ms, now)  # fed already: it waits for the answer
        return None

    def _store(self, audio: bytes | bytearray | None, ms: int, now: float) -> None:
        vad = self._vad
        cap = len(self._audio)
        i = (self._head + self._n) % cap
        if audio is not None:
            slot = self._audio[i]
            if len(slot) != len(audio):
                slot = self._audio[i] = bytearray(len(audio))
            slot[:] = audio  # the same length: copied in place
        self._ms[i] = ms
        self._now[i] = now
        self._level[i] = vad._level
        self._masked[i] = vad._masked
        self._maybe[i] = vad._maybe_echo
        self._audible[i] = vad._audible
        self._paths[i] = vad._paths_now
        self._n += 1

    def _load(self, i: int) -> None:
        vad = self._vad
        vad._level = self._level[i]
        vad._masked = self._masked[i]
        vad._maybe_echo = self._maybe[i]
        vad._audible = self._audible[i]
        vad._paths_now = self._paths[i]

    def _resume(self) -> None:
        """The batch answered the waiting frame's window: judge it and the frames behind it."""
        if not self._n:
            return  # closed meanwhile
        vad, cls, emit = self._vad, self._cls, self._on_event
        cap = len(self._audio)
        i = self._head
        self._load(i)
        # A frame below the energy gate fed the classifier only to keep its window continuous.
        p = 0.0 if vad._level < vad._gate else cls.answer
        while True:
            self._head = (i + 1) % cap
            self._n -= 1
            event = vad._decide(p, self._ms[i], self._now[i])
            if event is not None:
                try:
                    emit(event)
                except Exception:
                    # The frames behind it must still be judged: a raise here would leave them
                    # queued with no window pending, and the call deaf for good.
                    log.exception("VAD listener failed on %s (deferred frame)", event.kind.value)
            if not self._n:
                return
            i = self._head
            self._load(i)
            p = vad._feed(self._audio[i])
            if cls.pending:
                return  # it waits at the head, fed: the flush's next round answers it

    def close(self) -> None:
        """Drop the frames held (the call is over). Idempotent."""
        self._n = 0
        self._cls.on_answer = None
