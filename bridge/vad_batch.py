"""Silero VAD windows of many calls in one ONNX Runtime run (`[vad] batch_across_calls`).

A `SileroClassifier` made with a `SileroBatch` does not run its completed 256-sample window: it
copies the window (with its 32 samples of context) into the batch's input row and its recurrent
state into the batch's state rows (`enqueue`). `flush()` runs the model once on every queued
window (input [n, 288], state [2, n, 128]), writes each call's probability and new state back,
then calls each call's `on_answer`: its detector judges the frame that completed the window with
that window's probability, and the call's frames queued behind it (bridge/vad_defer.py), until one
completes another window, which the flush runs in its next round with the other calls' next
windows. Bound to an event loop, the first window queued in an iteration schedules the flush with
`call_soon`: the sockets' callbacks of that iteration are already queued before it, so one run
holds every call whose audio arrived together. The decisions are the immediate path's; only the
events come later (at the flush, with their frames' arrival times).

Measured here (2 cores, onnxruntime 1.32, one intra-op thread), per window: batch 1 ~134 us,
8 ~53 us, 16 and more ~45 us; the runtime's fixed cost per run is what a batch shares.

The arrays grow by doubling when more calls queue at once than they hold, never per frame; the
io bindings are made once per batch size and kept (views of those arrays, no copies).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Any

import numpy as np
import numpy.typing as npt

from bridge.vad_silero import (
    _SILERO_CONTEXT,
    _SILERO_SR,
    _SILERO_WINDOW,
    SileroClassifier,
    _SharedSileroModel,
    _silero_session,
)

__all__ = ["SileroBatch", "running_batch"]

log = logging.getLogger(__name__)

_ROW = _SILERO_CONTEXT + _SILERO_WINDOW  # 288 samples
_STATE = 128  # per layer and call
_LOG_EVERY_S = 60.0  # a failing run is logged at most this often

# The process-wide batch and the loop it flushes on (a new loop, as in tests, gets a new batch).
_BATCHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SileroBatch] = weakref.WeakKeyDictionary()


class SileroBatch:
    """Windows queued by calls' `SileroClassifier`s, run together at `flush()`.

    `loop`: where `flush` is scheduled (`call_soon`) when the first window of a batch is queued;
    None: the owner calls `flush()` itself. `capacity`: rows preallocated (doubled as needed).
    Raises `RuntimeError` if onnxruntime does not import. Not thread-safe: the loop's thread only.
    """

    __slots__ = (
        "_bindings",
        "_cap",
        "_done",
        "_failed_at",
        "_flushing",
        "_input",
        "_loop",
        "_members",
        "_n",
        "_out",
        "_session",
        "_stage",
        "_state_in",
        "_state_out",
        "failures",
        "run_s",
        "runs",
        "windows",
    )
    _input: npt.NDArray[np.float32]  # [cap, 288]: each queued call's context and window
    _stage: npt.NDArray[np.float32]  # [cap, 2, 128]
    _members: list[SileroClassifier | None]  # the queued calls by row; None: closed since

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, capacity: int = 16) -> None:
        session = _silero_session()
        if session is None:
            raise RuntimeError("onnxruntime does not import: no batched Silero VAD")
        self._session = session
        # Weak: the per-loop registry is keyed by the loop, and a batch holding it would keep
        # every finished loop (and its arrays) alive.
        self._loop = None if loop is None else weakref.ref(loop)
        self._n = 0  # windows queued
        self._flushing = False  # in flush(): windows queued meanwhile run in its next round
        self._failed_at = -_LOG_EVERY_S
        self.runs = 0  # session runs (a flush takes a round per window a call has queued or held)
        self.windows = 0  # windows they ran
        self.failures = 0  # runs that raised
        # Wall-clock seconds inside the session's runs (time.perf_counter around each run: with
        # one intra-op thread about this thread's CPU there, plus any time it was descheduled;
        # a run that raised is not counted). The clock is read twice per flush round, not per
        # window; the bench splits a call's cost by it.
        self.run_s = 0.0
        self._alloc(max(1, capacity))

    def _alloc(self, cap: int) -> None:
        n = self._n
        if n:
            old_input, old_stage, old_members = self._input, self._stage, self._members
            old_done = self._done
        self._cap = cap
        self._input = np.zeros((cap, _ROW), np.float32)
        # Each call's state is gathered per row here ([cap, 2, 128]) and transposed into the
        # model's [2, n, 128] layout at the flush, when n is known (one copy for the batch).
        self._stage = np.zeros((cap, 2, _STATE), np.float32)
        self._state_in = np.zeros(2 * cap * _STATE, np.float32)
        self._state_out = np.zeros(2 * cap * _STATE, np.float32)
        self._out = np.zeros((cap, 1), np.float32)
        self._members = [None] * cap
        self._done: list[SileroClassifier | None] = [None] * cap  # a round's answered calls
        self._bindings: dict[int, Any] = {}  # batch size -> io binding on the arrays above
        if n:
            self._input[:n] = old_input[:n]
            self._stage[:n] = old_stage[:n]
            self._members[:n] = old_members[:n]
            self._done[: len(old_done)] = old_done

    @property
    def pending(self) -> int:
        """Windows queued for the next flush."""
        return self._n

    def enqueue(self, cls: SileroClassifier) -> None:
        """Queue `cls`'s completed window (its model's `input_row`, [288] float32) and state;
        `cls` has no window queued."""
        i = self._n
        if i == self._cap:
            self._alloc(2 * i)
        model: _SharedSileroModel = cls._model  # type: ignore[assignment]  # a batch needs one
        row = model.input_row
        self._input[i] = row
        self._stage[i] = model.state[:, 0]
        row[:_SILERO_CONTEXT] = row[-_SILERO_CONTEXT:]  # the next window's context
        self._members[i] = cls
        cls._slot = i
        self._n = i + 1
        loop = None if self._loop is None else self._loop()
        if i == 0 and self._loop is not None and not self._flushing:
            if loop is None or asyncio._get_running_loop() is not loop:
                self.flush()  # not on its loop (a call outliving it): answer at once, never late
                return
            try:
                loop.call_soon(self.flush)
            except RuntimeError:  # the loop is closed: answer at once
                self.flush()

    def cancel(self, cls: SileroClassifier) -> None:
        """`cls` is closing with a window queued: nothing is written back to it and its
        `on_answer` is not called (its model goes back to the pool reset; the window still runs,
        its answer unused)."""
        slot = cls._slot
        if slot >= 0 and self._members[slot] is cls:
            self._members[slot] = None
        cls._slot = -1

    def _binding(self, n: int) -> Any:
        io = self._bindings.get(n)
        if io is None:
            import onnxruntime as ort

            size = 2 * n * _STATE
            io = self._session.io_binding()
            io.bind_cpu_input("input", self._input[:n])
            io.bind_cpu_input("state", self._state_in[:size].reshape(2, n, _STATE))
            io.bind_cpu_input("sr", _SILERO_SR)
            io.bind_ortvalue_output("output", ort.OrtValue.ortvalue_from_numpy(self._out[:n]))
            state = self._state_out[:size].reshape(2, n, _STATE)
            io.bind_ortvalue_output("stateN", ort.OrtValue.ortvalue_from_numpy(state))
            self._bindings[n] = io
        return io

    def flush(self) -> None:
        """Run every queued window in one session run; write each live call's probability and
        state back, then call its `on_answer`; windows queued by those run in a next round, until
        none is left. No-op when empty (or called from within a flush).

        Never raises: a failing run (or `on_answer`) is logged (at most once a minute); a failed
        run's calls get probability 0 and keep their states (the window is lost); the next round
        tries again."""
        if self._n == 0 or self._flushing:
            return
        self._flushing = True
        try:
            while self._n:  # each round judges a frame of each call queued: it ends
                self._round()
        finally:
            self._flushing = False
            loop = None if self._loop is None else self._loop()
            if self._n and loop is not None and not loop.is_closed():
                # A round raised with windows queued: nothing else would schedule them.
                loop.call_soon(self.flush)

    def _round(self) -> None:
        """One session run over the queued windows; then each answered call's `on_answer` (its
        detector judges its frames, and may queue its next window: the next round's)."""
        n = self._n
        self._n = 0
        members, done = self._members, self._done
        size = 2 * n * _STATE
        ok = True
        try:
            io = self._binding(n)
            np.copyto(self._state_in[:size].reshape(2, n, _STATE), self._stage[:n].transpose(1, 0, 2))
            t0 = time.perf_counter()
            self._session.run_with_iobinding(io)
            self.run_s += time.perf_counter() - t0
        except Exception:
            ok = False
            self.failures += 1
            now = time.monotonic()
            if now - self._failed_at >= _LOG_EVERY_S:
                self._failed_at = now
                log.exception("Silero VAD batch of %d windows failed: their calls hear silence", n)
        if ok:
            self.runs += 1
            self.windows += n
        out = self._out
        state = self._state_out[:size].reshape(2, n, _STATE)
        m = 0
        for i in range(n):
            cls = members[i]
            if cls is None:
                continue  # closed while queued
            members[i] = None
            cls._slot = -1
            if ok:
                cls._model.state[:, 0] = state[:, i]  # type: ignore[union-attr]
                cls._prob = float(out[i, 0])
            else:
                cls._prob = 0.0  # the window is lost; the state stays as it was
            done[m] = cls
            m += 1
        # All written back before any call goes on: a call's `on_answer` may queue its next
        # window (rows from 0 again: this round is done with them) or close another call.
        fatal: BaseException | None = None
        for k in range(m):
            cls = done[k]
            done[k] = None
            callback = None if cls is None else cls.on_answer  # None: closed, or used alone
            if callback is None:
                continue
            try:
                callback()
            except Exception:
                now = time.monotonic()
                if now - self._failed_at >= _LOG_EVERY_S:
                    self._failed_at = now
                    log.exception("Silero VAD batch: a call's detector failed on its answer")
            except BaseException as exc:  # (cancellation, exit): the other calls still answered
                fatal = fatal or exc
        if fatal is not None:
            raise fatal


def running_batch() -> SileroBatch | None:
    """The process-wide batch flushed on the running event loop (made on first use; a new one
    if the loop changed), or None outside a running loop or without onnxruntime: then windows
    run at once."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    batch = _BATCHES.get(loop)
    if batch is None:
        if _silero_session() is None:
            return None
        # One per loop: a loop's flush must never run another loop's calls (threads, tests).
        _BATCHES[loop] = batch = SileroBatch(loop)
    return batch
