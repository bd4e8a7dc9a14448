"""`python -m bench.standin_speechkit`: the SpeechKit stand-in (testkit, test/demo only) for the
per-call figures over gRPC, in a process of its own, with one change: its synthesis is labelled
clip audio after a fixed delay instead of espeak-ng.

Why: the figures find the answer's frames by their label (`testkit.fakes.clip`), and espeak-ng
(processes per sentence: 13-19 ms and 12-14 ms of CPU for the answer here, one at a time)
would make the TTS's first audio vary with the machine's load, not the issue's fixed 100 ms. Recognition is the stand-in's own
(webrtcvad segmentation, scripted lines). Its other options are the stand-in's (`--port`,
`--script`); it prints the stand-in's "listening" line with the port. With `VOICEBRIDGE_STT_TRACE`
set to a directory it stamps its recognition (`bench.standin_trace`) and writes them there at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from bench.standin_trace import ServerTrace, trace_dir
from testkit.fakes import clip
from testkit.standins import speechkit_server, speechkit_tts


async def _main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--label", type=int, required=True, help="the sample value of every answer frame")
    ap.add_argument("--delay-s", type=float, default=0.1, help="text -> audio, s")
    ap.add_argument("--s-per-char", type=float, default=0.04, help="audio length per character, s")
    args, rest = ap.parse_known_args()

    async def labelled_pcm(text: str, *, rate: int = 8000, **_: object) -> bytes:
        """What the stand-in's synthesis returns: `len(text) * s_per_char` s of labelled audio."""
        if rate != 8000:
            raise ValueError(f"labelled audio is 8 kHz, {rate} Hz asked for")
        await asyncio.sleep(args.delay_s)
        return clip(args.label, len(text) * args.s_per_char).pcm

    setattr(speechkit_tts, "espeak_pcm", labelled_pcm)  # noqa: B010 - a bench-only substitution
    sys.argv[1:] = rest  # the stand-in's own options (--port, --script) for its own entry point
    trace = ServerTrace() if (directory := trace_dir()) else None
    if trace is not None:
        trace.install()
    try:
        await speechkit_server._main()
    finally:
        if trace is not None and directory is not None:
            trace.write(directory)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
