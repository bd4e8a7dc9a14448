"""The playlist player: cached clips, background synthesis, fillers that cover waits and are cut.

Rules (spec 2.3 and 4.5, as settled in SPEC.md):
- Every `tts` item of a playlist starts synthesizing in the background the moment the playlist
  starts, so slow work overlaps whatever plays before it.
- `cache` items always play to their end. `filler` items only cover a wait: skipped when the next
  `tts` item is already ready, cut when it becomes ready.
- When a `tts` item (or the LLM answer) is not ready when its turn comes, the state's fillers play
  one after another, then the map's neutral fillers loop, until the work is ready or the global
  operation timeout passes (`OperationTimeout`).
- A filler is cut the moment the work is ready: its task is cancelled and the outbound buffer is
  cleared, so the very next 20 ms frame is the answer's (or silence), never more filler.
- Every task this module starts is owned by the call's `TaskOwner` and cancelled and awaited
  (bounded) before the coroutine that started it returns, also when that coroutine is itself
  cancelled (barge-in).
- Audio is written only while the turn-taking machine gives the bot the floor (BOT_TURN): after
  a barge-in, a writer that `clear()` woke cannot queue one more clip (`write()` raises
  `FloorLost`, which the cut turn's owner handles quietly; a filler just ends).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from orchestrator.contracts import AudioCache, Clock, OutboundAudio, TTSManager
from orchestrator.dialogue_map.models import PlaylistItem
from orchestrator.domain.errors import AudioClosed, CacheError, ProviderError, TTSError
from orchestrator.domain.models import AudioChunk
from orchestrator.events import CallEventKind, Observe
from orchestrator.tasks import TaskOwner, cancel_and_wait
from orchestrator.turns import Floor, FloorLost

log = logging.getLogger(__name__)

AudioRole = Literal["filler", "answer"]
_T = TypeVar("_T")
# Where the next chunk of a stream comes from: None at its end; raises ProviderError on failure.
NextChunk = Callable[[], Awaitable[AudioChunk | None]]


class OperationTimeout(ProviderError):
    """Slow work (TTS, LLM) outlasted the map's global operation timeout."""

    def __init__(self, waited_s: float) -> None:
        super().__init__(f"no answer after {waited_s:.1f} s", provider="orchestrator", retryable=True)


@dataclass(slots=True, frozen=True)
class PreparedItem:
    """A playlist item with its template already rendered."""

    kind: Literal["cache", "filler", "tts"]
    key: str = ""
    text: str = ""


class FillerSequence:
    """The state's fillers once, in order, then the neutral fillers in a loop."""

    def __init__(self, state_fillers: Sequence[str], neutral: Sequence[str]) -> None:
        self._it: Iterator[str] = itertools.chain(state_fillers, itertools.cycle(neutral or ()))

    def next(self) -> str | None:
        """The next filler key, or None when there is none at all."""
        return next(self._it, None)


class SynthJob:
    """Synthesis of one text in the background; chunks queue up as the service produces them."""

    def __init__(self, tts: TTSManager, text: str, *, tasks: TaskOwner, on_first: Callable[[], None]):
        self.text = text
        self.queue: asyncio.Queue[AudioChunk | ProviderError | None] = asyncio.Queue()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tts = tts
        self._on_first = on_first
        self.task = tasks.spawn(self._run(), "tts")

    async def next(self) -> AudioChunk | None:
        """The next chunk, None at the end; raises the synthesis failure."""
        item = await self.queue.get()
        if isinstance(item, ProviderError):
            try:
                raise item
            finally:
                del item  # its traceback holds this frame: naming it here would be a cycle
        return item

    async def _run(self) -> None:
        try:
            async for chunk in self._tts.synthesize(self.text):
                if not self.ready.done():
                    self._on_first()
                    self.ready.set_result(None)
                self.queue.put_nowait(chunk)
            self.queue.put_nowait(None)
        except ProviderError as exc:
            # Without its traceback: that holds this frame (so this job and its queue, which
            # holds the error) and the TTS adapter's, a reference cycle outliving the call.
            self.queue.put_nowait(exc.with_traceback(None))
        except Exception as exc:  # an adapter bug must still end as a provider failure
            self.queue.put_nowait(TTSError(repr(exc), provider="tts"))
        finally:
            if not self.ready.done():
                self.ready.set_result(None)


class Cover:
    """Fillers playing in the background; `stop()` cuts them at the next frame."""

    def __init__(self, player: PlaylistPlayer, fillers: FillerSequence) -> None:
        self._player = player
        self.task = player.tasks.spawn(self._run(fillers), "fillers")
        player.track(self.task)

    async def _run(self, fillers: FillerSequence) -> None:
        try:
            while (key := fillers.next()) is not None:
                if not await self._player.play_clip(key, "filler"):
                    return  # missing filler audio: silence rather than a busy loop
        except FloorLost:
            return  # barge-in: `interrupt()` is cancelling this task; the filler just ends
        except AudioClosed:
            return  # the caller hung up: nobody is left to hear it
        # no fillers at all: nothing to play

    async def stop(self) -> None:
        """Cut the filler now (idempotent). A filler failure is logged, never raised."""
        if not self.task.done():
            await cancel_and_wait(self.task, timeout=self._player.tasks.cancel_bound_s)
            self._player.filler_cut()
        elif not self.task.cancelled() and self.task.exception() is not None:
            log.warning("call %s: filler failed: %r", self._player.call_id, self.task.exception())


class PlaylistPlayer:
    """Plays one call's playlists onto its `OutboundAudio`."""

    def __init__(
        self,
        *,
        call_id: str,
        cache: AudioCache,
        tts: TTSManager,
        clock: Clock,
        tasks: TaskOwner,
        neutral_filler_keys: Sequence[str],
        operation_timeout_s: float,
        floor: Callable[[], Floor],
        on_audio: Callable[[AudioRole], None],
        on_tts_first_chunk: Callable[[], None],
        observe: Observe,
        cache_timeout_s: float,
    ) -> None:
        """`operation_timeout_s`: the map's bound on slow work (s); `cache_timeout_s`: one cache
        read (s, `[call] cache_timeout_s`); `tasks`: the call's owner, whose `cancel_bound_s`
        bounds every cut here."""
        self.call_id = call_id
        self.tasks = tasks
        self.cache = cache
        self.tts = tts
        self.clock = clock
        self.neutral_filler_keys = list(neutral_filler_keys)
        self.operation_timeout_s = operation_timeout_s
        self.outbound: OutboundAudio | None = None
        self._floor = floor
        self._on_audio = on_audio
        self._on_tts_first_chunk = on_tts_first_chunk
        self._observe = observe
        self._cache_timeout_s = cache_timeout_s
        self._covers: set[asyncio.Task[None]] = set()  # the running fillers' tasks
        self._clips: dict[str, AudioChunk] = {}

    # --- building blocks ---
    async def fetch(self, key: str) -> AudioChunk | None:
        """Cached audio for `key` (memoised per call: fillers repeat), None when absent."""
        clip = self._clips.get(key)
        if clip is None:
            try:
                async with asyncio.timeout(self._cache_timeout_s):
                    clip = await self.cache.get(key)
            except TimeoutError as exc:
                raise CacheError(f"get {key!r} timed out", provider="cache", retryable=True) from exc
            if clip is None:
                log.error("call %s: audio %r is not in the cache", self.call_id, key)
                return None
            self._clips[key] = clip
        return clip

    def interrupt(self) -> None:
        """Barge-in: cut the fillers and drop what is queued, at this instant.

        Synchronous on purpose: the filler tasks are cancelled and the buffer cleared before any
        of them can run again; `write()` refuses anything while the turn-taking machine says the
        bot may not speak, so a writer that `clear()` woke up cannot queue one more clip while its
        parent is unwinding.
        """
        for task in list(self._covers):
            task.cancel()
        if self.outbound is not None:
            self.outbound.clear()

    def track(self, filler: asyncio.Task[None]) -> None:
        """Register a filler task, for `interrupt()` to cut (it leaves the set when it ends)."""
        self._covers.add(filler)
        filler.add_done_callback(self._covers.discard)

    def filler_cut(self) -> None:
        """A filler was cut for ready work: drop its queued audio (only filler audio is queued:
        `start_cover` drained the rest first) and report it."""
        assert self.outbound is not None
        self.outbound.clear()
        self._observe(CallEventKind.FILLER_CUT)

    async def write(self, chunk: AudioChunk, role: AudioRole) -> None:
        """Send audio to the caller, noting the first bot audio of the turn.

        Raises `FloorLost` when the bot does not have the floor (after a barge-in), `AudioClosed`
        once the caller hung up.
        """
        assert self.outbound is not None, "run() sets the outbound stream"
        floor = self._floor()
        if floor is not Floor.BOT_TURN:
            raise FloorLost(floor)
        self._on_audio(role)
        await self.outbound.write(chunk)

    async def play_clip(self, key: str, role: AudioRole = "answer") -> bool:
        """Play cached audio to its end; False when the key is missing."""
        clip = await self.fetch(key)
        if clip is None:
            self._observe(CallEventKind.MISSING_AUDIO, key=key)
            return False
        self._observe(CallEventKind.PLAY, kind=role, key=key)
        await self.write(clip, role)
        assert self.outbound is not None
        self.outbound.end_segment()
        return True

    async def start_cover(self, fillers: FillerSequence) -> Cover:
        """Start playing `fillers` in the background until `Cover.stop()` cuts them.

        What was queued before (content) is drained first, so a cut drops filler audio only.
        """
        assert self.outbound is not None
        await self.outbound.drain()
        return Cover(self, fillers)

    async def wait_ready(self, ready: asyncio.Future[_T], deadline: float) -> None:
        """Wait for `ready`; raise `OperationTimeout` at `deadline`."""
        remaining = deadline - self.clock.now()
        if not ready.done():
            if remaining > 0:
                await asyncio.wait({ready}, timeout=remaining)
            if not ready.done():
                raise OperationTimeout(self.operation_timeout_s)

    async def cover_wait(self, ready: asyncio.Future[_T], fillers: FillerSequence, deadline: float) -> None:
        """Play fillers until `ready` resolves (then cut them); `OperationTimeout` at `deadline`."""
        if ready.done():
            return
        cover = await self.start_cover(fillers)
        try:
            await self.wait_ready(ready, deadline)
        finally:
            await cover.stop()

    async def stream(self, next_chunk: NextChunk, role: AudioRole) -> None:
        """Write chunks from `next_chunk()` until None; its ProviderError propagates.

        A stream that goes quiet for the operation timeout between two chunks is abandoned
        (`OperationTimeout`): a provider that never ends its stream must not hold the turn.
        """
        while True:
            try:
                async with asyncio.timeout(self.operation_timeout_s):
                    item = await next_chunk()
            except TimeoutError:
                raise OperationTimeout(self.operation_timeout_s) from None
            if item is None:
                break
            await self.write(item, role)
        assert self.outbound is not None
        self.outbound.end_segment()

    # --- a whole playlist ---
    async def play_playlist(self, items: Sequence[PreparedItem], state_fillers: Sequence[str]) -> None:
        """Play `items` in order with background synthesis and filler cover; drain at the end."""
        jobs: dict[int, SynthJob] = {}
        for i, item in enumerate(items):
            if item.kind == "tts":
                jobs[i] = SynthJob(self.tts, item.text, tasks=self.tasks, on_first=self._on_tts_first_chunk)
        deadline = self.clock.now() + self.operation_timeout_s
        fillers = FillerSequence(state_fillers, self.neutral_filler_keys)
        try:
            for i, item in enumerate(items):
                if item.kind == "cache":
                    await self.play_clip(item.key)
                elif item.kind == "filler":
                    upcoming = next((jobs[j] for j in sorted(jobs) if j > i), None)
                    if upcoming is not None and not upcoming.ready.done():
                        # Covers the wait only: ends early when the answer is ready, never loops.
                        cover = await self.start_cover(FillerSequence([item.key], []))
                        try:
                            await asyncio.wait(
                                {upcoming.ready, cover.task}, return_when=asyncio.FIRST_COMPLETED
                            )
                        finally:
                            await cover.stop()
                    else:
                        self._observe(CallEventKind.FILLER_SKIPPED, key=item.key)
                else:
                    job = jobs[i]
                    if not job.ready.done():
                        await self.cover_wait(job.ready, fillers, deadline)
                    self._observe(CallEventKind.PLAY, kind="tts", text=job.text)
                    await self.stream(job.next, "answer")
            assert self.outbound is not None
            await self.outbound.drain()
        finally:
            await cancel_and_wait(*(job.task for job in jobs.values()), timeout=self.tasks.cancel_bound_s)


def prepare(items: Sequence[PlaylistItem], render: Callable[[str], str]) -> list[PreparedItem]:
    """Render the `tts` templates of map playlist items (raises the renderer's error)."""
    out: list[PreparedItem] = []
    for item in items:
        if item.type == "tts":
            out.append(PreparedItem("tts", text=render(item.text_template)))
        else:
            out.append(PreparedItem(item.type, key=item.key))
    return out
