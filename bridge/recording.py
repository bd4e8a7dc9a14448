"""Call recording: caller and bot as the two channels of one WAV (8 kHz, 16-bit, stereo).

Written from the audio the bridge already has, never by an Asterisk bridge change (one that
stalls media). Time base: the pacer's 20 ms tick. The bot channel gets every frame the call's
`Playout` sends (bot audio or silence), so it has exactly one frame per tick; a caller frame is
placed at the tick it arrived in (silence fills a gap when Asterisk sent nothing), and frames that
arrive early in a burst are kept contiguous, so the caller's audio is never cut or reordered.

Hot path: per frame, one `bytearray` append per channel (no I/O, no task, no log). A per-call
flusher task hands the aligned frames to a worker thread (`asyncio.to_thread`) every
`flush_interval_s`, which interleaves them and appends them to the file; the call's end writes the
rest and closes the file (the WAV header gets its length then). Memory per call: about 32 KB per
second of `flush_interval_s`. Files are created 0600 (they hold what callers said).

Retention: `sweep_recordings()` deletes recordings older than `retention_days`, a bounded number
per pass, from a worker thread, then sleeps `sweep_interval_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
import wave
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, BinaryIO

import numpy as np
import pydantic.dataclasses
from pydantic import ConfigDict, Field

from bridge.playout import FrameSink
from orchestrator.audio import FRAME_BYTES, SAMPLE_RATE, SAMPLE_WIDTH, SILENCE_FRAME
from orchestrator.tasks import TaskOwner

__all__ = [
    "RECORD_VARIABLE",
    "CallRecorder",
    "RecordingSettings",
    "Recordings",
    "delete_old_recordings",
    "parse_record_flag",
    "recording_wanted",
    "sweep_recordings",
]

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@pydantic.dataclasses.dataclass(
    frozen=True, slots=True, config=ConfigDict(extra="forbid", allow_inf_nan=False)
)
class RecordingSettings:
    """Call recording (section `[recording]`); off by default."""

    enabled: bool = False
    # Where the WAV files go (created 0700 if missing); one file per call, `<UTC time>_<call id>.wav`.
    directory: str = "recordings"
    # Recordings older than this are deleted, days; 0 keeps them forever.
    retention_days: Annotated[int, Field(ge=0)] = 30
    # How often the retention sweep runs, s.
    sweep_interval_s: Annotated[float, Field(gt=0)] = 3600.0
    # Files deleted per sweep at most (a huge backlog is worked off over several sweeps).
    max_deletions_per_sweep: Annotated[int, Field(ge=1)] = 10_000
    # Audio held in memory per call before it is written, s (32 KB per second).
    flush_interval_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    # Bound on the last write and close at the call's end, s.
    close_timeout_s: Annotated[float, Field(gt=0)] = 10.0


# The caller channel's variable that turns recording on or off for one call (dialplan `Set()`
# before `Stasis()`, or an originate's variables); ari.conf `channelvars` must list it.
RECORD_VARIABLE = "VB_RECORD"
_ON = frozenset({"1", "yes", "true", "on"})
_OFF = frozenset({"0", "no", "false", "off"})


def parse_record_flag(value: str | None) -> bool | None:
    """A VB_RECORD value: "1"/"yes"/"true"/"on" -> True, "0"/"no"/"false"/"off" -> False
    (any case), unset or empty -> None. Raises ValueError naming the variable otherwise."""
    if value is None or not value.strip():
        return None
    flag = value.strip().lower()
    if flag in _ON:
        return True
    if flag in _OFF:
        return False
    raise ValueError(
        f"channel variable {RECORD_VARIABLE}={value[:20]!r}: expected 1 or 0 (yes/no, true/false, on/off)"
    )


def recording_wanted(service: bool, map_recording: bool | None, call_record: bool | None) -> bool:
    """Whether one call is recorded. `service`: `[recording] enabled`; `map_recording`: the map's
    `recording` (None: not set); `call_record`: the call's VB_RECORD (None: not set).

    Off wins from the narrower switches: a call's VB_RECORD=0 or a map's `false` means not recorded
    whatever else says (consent, a map with sensitive data). Otherwise a call's VB_RECORD=1 or a
    map's `true` records; with neither, the service's `enabled` decides.
    """
    if call_record is False or map_recording is False:
        return False
    if call_record or map_recording:
        return True
    return service


def recording_path(settings: RecordingSettings, call_id: str, *, now: float | None = None) -> Path:
    """The file a call is recorded to: `<directory>/<YYYYmmddTHHMMSSZ>_<call id>.wav`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return Path(settings.directory) / f"{stamp}_{_UNSAFE.sub('_', call_id)}.wav"


def _open_wav(path: Path) -> tuple[BinaryIO, wave.Wave_write]:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    fh = os.fdopen(fd, "wb")
    w = wave.open(fh, "wb")  # noqa: SIM115 (closed by CallRecorder.close)
    w.setnchannels(2)
    w.setsampwidth(SAMPLE_WIDTH)
    w.setframerate(SAMPLE_RATE)
    return fh, w


def _interleave(caller: bytes, bot: bytes) -> bytes:
    """Two mono int16 buffers of equal length as one stereo buffer (caller left, bot right)."""
    out = np.empty(len(caller), dtype=np.int16)  # 2 channels x len/2 samples
    out[0::2] = np.frombuffer(caller, dtype=np.int16)
    out[1::2] = np.frombuffer(bot, dtype=np.int16)
    return out.tobytes()


class CallRecorder:
    """One call's recording; the call's `Playout` sends through it (a `FrameSink` in front of
    the connection) and the gateway hands it each caller frame (`caller_frame`).

    `open()` creates the file (0600) and starts the flusher; `close()` writes the rest and closes
    the file. If the file cannot be created the call goes on unrecorded (`path` is None then).
    Raises nothing into the call: I/O failures are logged once and end the recording.
    """

    __slots__ = (
        "_bot",
        "_caller",
        "_fh",
        "_flusher",
        "_owner",
        "_sink",
        "_stop",
        "_wav",
        "frames",
        "path",
        "settings",
    )

    def __init__(self, sink: FrameSink, path: Path, settings: RecordingSettings) -> None:
        self._sink = sink
        self.settings = settings
        self.path: Path | None = path
        self._caller = bytearray()
        self._bot = bytearray()
        self._fh: BinaryIO | None = None
        self._wav: wave.Wave_write | None = None
        self._owner = TaskOwner(f"recording:{path.stem}", cancel_bound_s=settings.close_timeout_s)
        self._flusher: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.frames = 0  # stereo frames (20 ms each) written to the file

    # --- FrameSink: the pacer's tick, one call per 20 ms ---
    def send_audio(self, frame: bytearray) -> None:
        """Record one bot frame and send it on."""
        self._bot += frame
        self._sink.send_audio(frame)

    def send_silence(self) -> None:
        """Record one silent bot frame and send it on."""
        self._bot += SILENCE_FRAME
        self._sink.send_silence()

    # --- the gateway's socket callback ---
    def caller_frame(self, frame: bytes) -> None:
        """Record one 20 ms caller frame at the tick it arrived in."""
        caller = self._caller
        gap = len(self._bot) - FRAME_BYTES - len(caller)  # > 0: nothing came for a tick or more
        if gap > 0:
            caller += bytes(gap)
        caller += frame

    # --- lifecycle ---
    async def open(self) -> None:
        """Create the file and start writing every `flush_interval_s`."""
        assert self.path is not None
        try:
            self._fh, self._wav = await asyncio.to_thread(_open_wav, self.path)
        except OSError as exc:
            log.error("recording: cannot create %s: %s; the call goes unrecorded", self.path, exc)
            self.path = None
            return
        self._flusher = self._owner.spawn(self._flush_every(), "flush")

    async def _flush_every(self) -> None:
        """The one writer: every `flush_interval_s`, and once more (all of it) when told to stop.
        Never cancelled mid-write (a write runs in a thread; a second writer would interleave)."""
        stop = self._stop
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.flush_interval_s):
                    await stop.wait()
            final = stop.is_set()
            await self._flush(final=final)
            if final:
                break
        await self._close_file()

    def _take(self, *, final: bool) -> tuple[bytes, bytes]:
        """The aligned frames so far (all of them at the end, the shorter channel padded)."""
        caller, bot = self._caller, self._bot
        if final:
            n = max(len(caller), len(bot))
        else:
            # The caller's frame for the latest tick may still be on its way: leave that tick.
            gap = len(bot) - FRAME_BYTES - len(caller)
            if gap > 0:
                caller += bytes(gap)
            n = min(len(caller), len(bot))
        n -= n % FRAME_BYTES
        c, b = bytes(caller[:n]), bytes(bot[:n])
        del caller[:n], bot[:n]
        if len(c) < n:
            c += bytes(n - len(c))
        if len(b) < n:
            b += bytes(n - len(b))
        return c, b

    async def _flush(self, *, final: bool) -> None:
        wav = self._wav
        if wav is None:
            return
        caller, bot = self._take(final=final)
        if not caller:
            return
        try:
            await asyncio.to_thread(lambda: wav.writeframesraw(_interleave(caller, bot)))
        except OSError as exc:
            log.error("recording %s: write failed: %s; recording stopped", self.path, exc)
            await self._close_file()
            return
        self.frames += len(caller) // FRAME_BYTES

    async def close(self) -> None:
        """Write what is left and close the file (the flusher's last round), at most
        `close_timeout_s`. Idempotent."""
        self._stop.set()
        if self._flusher is not None and not self._flusher.done():
            await asyncio.wait({self._flusher}, timeout=self.settings.close_timeout_s)
            if not self._flusher.done():
                log.error(
                    "recording %s: not finished within %.1f s", self.path, self.settings.close_timeout_s
                )
        await self._owner.aclose()

    async def _close_file(self) -> None:
        wav, fh = self._wav, self._fh
        self._wav = self._fh = None
        self._caller.clear()
        self._bot.clear()
        if wav is None or fh is None:
            return

        def close() -> None:
            try:
                wav.close()  # writes the header's lengths
            finally:
                fh.close()

        await asyncio.to_thread(close)


def delete_old_recordings(directory: Path, *, older_than_s: float, limit: int, now: float) -> int:
    """Delete `*.wav` files in `directory` last modified more than `older_than_s` ago, at most
    `limit`; returns how many. Blocking: run it in a worker thread."""
    deleted = 0
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return 0
    with entries:
        for entry in entries:
            if deleted >= limit:
                break
            if not entry.name.endswith(".wav") or not entry.is_file(follow_symlinks=False):
                continue
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime > older_than_s:
                    os.unlink(entry.path)
                    deleted += 1
            except FileNotFoundError:
                continue  # deleted meanwhile
    return deleted


async def sweep_recordings(settings: RecordingSettings) -> None:
    """Forever: delete recordings past `retention_days`, then sleep `sweep_interval_s`.
    Returns at once when recordings are kept forever. Failures are logged, the sweep goes on."""
    if settings.retention_days == 0:
        return
    directory = Path(settings.directory)
    while True:
        try:
            deleted = await asyncio.to_thread(
                delete_old_recordings,
                directory,
                older_than_s=settings.retention_days * 86400.0,
                limit=settings.max_deletions_per_sweep,
                now=time.time(),
            )
            if deleted:
                log.info("recordings: deleted %d older than %d days", deleted, settings.retention_days)
        except OSError as exc:
            log.error("recordings: retention sweep of %s failed: %s", directory, exc)
        await asyncio.sleep(settings.sweep_interval_s)


class Recordings:
    """The service's recording policy: which calls are recorded, their recorders, the sweep.

    `wanted()` decides per call; `start()` opens a call's recorder (and the retention sweep, once,
    as a task of `tasks`); `path_of()` names a recorded call's WAV until `forget()`.
    """

    def __init__(self, settings: RecordingSettings, tasks: TaskOwner) -> None:
        self._settings = settings
        self._tasks = tasks
        self._paths: dict[str, str] = {}  # call id -> its WAV, while the call lasts
        self._sweeping = False  # the retention sweep was started

    @property
    def in_progress(self) -> int:
        """Recorded calls in progress (their files named in `call_end` records)."""
        return len(self._paths)

    def wanted(self, call_id: str, channel_vars: Mapping[str, str], map_recording: bool | None) -> bool:
        """Whether the call is recorded: its VB_RECORD, its map's `recording`, `[recording]
        enabled` (`recording_wanted`); a VB_RECORD that is no flag is logged and ignored."""
        try:
            call_record = parse_record_flag(channel_vars.get(RECORD_VARIABLE))
        except ValueError as exc:
            log.warning("call %s: %s; ignored", call_id, exc)
            call_record = None
        return recording_wanted(self._settings.enabled, map_recording, call_record)

    def sweep(self) -> None:
        """Start the retention sweep once: at start when recording may be on, else at the first
        recorded call (a directory is never swept unless this service records into it)."""
        if not self._sweeping:
            self._sweeping = True
            self._tasks.spawn(sweep_recordings(self._settings), "recording-retention")

    async def start(self, call_id: str, sink: FrameSink) -> CallRecorder | None:
        """The call's recorder in front of `sink`, its file created (None if it cannot be)."""
        self.sweep()
        recorder = CallRecorder(sink, recording_path(self._settings, call_id), self._settings)
        await recorder.open()
        if recorder.path is None:
            return None
        self._paths[call_id] = str(recorder.path)
        return recorder

    def path_of(self, call_id: str) -> str | None:
        """The WAV of a call being recorded, or None."""
        return self._paths.get(call_id)

    def forget(self, call_id: str) -> None:
        """The call's recording is closed."""
        self._paths.pop(call_id, None)
