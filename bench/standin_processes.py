"""The stand-ins of `bench.standin_figures` as child processes (`Standins`): the OpenAI stand-in
(`testkit.standins.openai_server`) and the SpeechKit one (`bench.standin_speechkit`), each told
the bench's script, SCHED_FIFO where allowed, and gone with the bench even when it is killed."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.call_figures import ANSWER, LLM_DELAY_S, QUESTION, ROOT, TTS_DELAY_S, T
from bench.call_probes import ANSWER_LABEL

__all__ = ["Standins"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child between fork and exec only calls it
_PR_SET_PDEATHSIG = 1


def _fifo() -> None:
    with contextlib.suppress(OSError):  # without the right to it: the default scheduling
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))


def _child_setup(parent: int, realtime: bool) -> Callable[[], None]:
    """What a stand-in runs between fork and exec: SIGTERM when the thread that started it dies
    (a SIGTERM or SIGKILL to the bench runs no `__exit__`, and the stand-ins, SCHED_FIFO, stayed
    on), then SCHED_FIFO with `realtime`."""

    def setup() -> None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the bench died before the prctl: nobody will signal us
            os._exit(1)
        if realtime:
            _fifo()

    return setup


class Standins:
    """The OpenAI and SpeechKit stand-ins as child processes (`with Standins() as s:`).

    They stand for remote services, which the bridge's process cannot starve: with `realtime`
    they run SCHED_FIFO (set in the child before exec, so their threads have it too) next to the
    SCHED_FIFO bench, else the default scheduling, where the bench's process (most of a core at
    200 calls, on 2 cores) delays them: in a trial at 200 paced calls the final -> refinement
    wait was p50 45 / p99 300 ms that way, 3 / 137 ms with SCHED_FIFO. `scheduling` says which
    they got. They get SIGTERM if the thread that entered this dies (the bench killed), so
    enter it on a thread that lives as long as the block. `OSError`/`RuntimeError` when one
    does not come up (or has not said it listens within `start_timeout_s`, s).
    """

    def __init__(self, *, realtime: bool = False, start_timeout_s: float = T) -> None:
        self._realtime = realtime  # SCHED_FIFO (as the bench's process), where allowed
        self._start_timeout_s = start_timeout_s  # for each one's "listening" line
        self._dir = tempfile.TemporaryDirectory(prefix="bench-standins-")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.llm_url = ""
        self.speechkit = ""
        self.scheduling = ""  # what the stand-ins got: "SCHED_FIFO" or "default"

    def __enter__(self) -> Standins:
        script = Path(self._dir.name) / "script.json"
        script.write_text(
            json.dumps(
                {"stt": {"default": [QUESTION, "нет, спасибо"]}, "llm": {"rules": [["суббот", ANSWER]]}},
                ensure_ascii=False,
            )
        )
        try:
            llm = self._start(
                "testkit.standins.openai_server", "--first-token-s", str(LLM_DELAY_S), "--token-s", "0",
                script=script,
            )  # fmt: skip
            self.llm_url = re.sub(r".*listening on (\S+).*", r"\1", llm)
            sk = self._start(
                "bench.standin_speechkit", "--label", str(ANSWER_LABEL), "--delay-s", str(TTS_DELAY_S),
                script=script,
            )  # fmt: skip
            self.speechkit = re.sub(r".*listening on (\S+).*", r"\1", sk)
            fifo = all(os.sched_getscheduler(p.pid) == os.SCHED_FIFO for p in self.procs)
            self.scheduling = "SCHED_FIFO" if fifo else "default"
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self, module: str, *args: str, script: Path) -> str:
        cmd = [sys.executable, "-m", module, "--port", "0", "--script", str(script), *args]
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            preexec_fn=_child_setup(os.getpid(), self._realtime),  # before exec: its threads inherit it
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        # Its one line, once it listens; bounded, as a stand-in stuck before it would hang the bench.
        if not select.select([proc.stdout], [], [], self._start_timeout_s)[0]:
            raise RuntimeError(f"{module} did not start within {self._start_timeout_s:g} s")
        line = proc.stdout.readline().decode().strip()
        if "listening" not in line:
            raise RuntimeError(f"{module} did not start: {line!r}")
        return line

    def cpu_s(self) -> float:
        """User + system CPU seconds the stand-in processes have used so far."""
        total = 0
        for proc in self.procs:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return total / _CLK_TCK

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        self._dir.cleanup()
