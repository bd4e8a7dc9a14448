"""The media path warmed at start-up: the first call makes nothing process-wide on the loop.

Each check runs in a fresh interpreter (what a process has imported or made is the point), with
the service's defaults (Silero, batched across calls; the echo gate on).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.vad_engines import Engine

ROOT = Path(__file__).resolve().parent.parent

# One call's media, as the service runs it: a gateway on a null transport, the bot talking, the
# caller's speech over it; reports what that call imported and whether it made the Silero session.
_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys, time, uuid
    import numpy as np
    from bridge.echo_gate import EchoSettings
    from bridge.vad import VadSettings
    from bridge import media_warmup, vad_silero

    async def main(warm: bool) -> dict:
        took = await media_warmup.warm_media_path(VadSettings(), EchoSettings()) if warm else None
        session = vad_silero._SILERO_SESSION
        before = set(sys.modules)
        t = time.perf_counter()
        await media_warmup.warm_media_path(VadSettings(), EchoSettings())  # "the first call"
        first_call_s = time.perf_counter() - t
        return {
            "warm_s": took,
            "first_call_s": first_call_s,
            "new_modules": sorted(set(sys.modules) - before),
            "session_made_by_call": session is None and vad_silero._SILERO_SESSION is not None,
            "pooled": len(vad_silero._SILERO_POOL),
        }

    print(json.dumps(asyncio.run(main(sys.argv[1] == "warm"))))
    """
)


def _run(mode: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_after_warm_up_the_first_call_imports_and_makes_nothing() -> None:
    cold = _run("cold")
    # The check can fail: without the warm-up the first call imports ONNX Runtime and numpy's FFT
    # and makes the shared Silero session on the loop.
    assert "onnxruntime" in cold["new_modules"]  # type: ignore[operator]
    assert "numpy.fft" in cold["new_modules"]  # type: ignore[operator]
    assert cold["session_made_by_call"] is True
    warm = _run("warm")
    assert warm["new_modules"] == []
    assert warm["session_made_by_call"] is False
    assert warm["pooled"] == 1  # the warm-up's state went back to the pool for the first call


@pytest.mark.parametrize("engine", ["webrtc", "silero", "ten"])
async def test_warm_up_runs_with_each_engine(engine: Engine) -> None:
    from bridge.echo_gate import EchoSettings
    from bridge.media_warmup import warm_media_path
    from bridge.vad import VadSettings

    took = await warm_media_path(VadSettings(engine=engine), EchoSettings(enabled=False))
    assert took > 0.0
