"""The batched Silero path (bridge/vad_defer.py) decides exactly as the immediate one: the same
events, at the same times, for calls of different audio read several frames at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from bridge import vad_silero
from bridge.echo_gate import EchoGate
from bridge.vad import VadEvent, VadSettings, VoiceActivityDetector
from bridge.vad_batch import running_batch
from orchestrator.audio import FRAME_BYTES
from tests.test_vad import make_russian_speech, noise, silence
from tests.test_vad_engines import frames

FRAME_S = 0.02
T = 10.0  # s: bound on one simulated loop iteration


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_russian_speech(tmp_path_factory.mktemp("speech"))


def _pcm(x: np.ndarray) -> bytes:
    return bytes(np.clip(np.round(x), -32768, 32767).astype(np.int16).tobytes())


def _s16(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float64)


Call = tuple[VadSettings, list[bytes], list[bytes]]  # settings, bot frames sent, caller frames in


def scenarios(speech: bytes) -> list[Call]:
    """Calls of different audio, the same length: the caller alone; the bot talking with its
    echo back and the caller barging in over it; the echo alone; silence and a noise burst."""
    n = len(speech) // FRAME_BYTES * 2 + 50  # frames
    size = n * FRAME_BYTES
    quiet = bytes(size)
    caller = _s16((silence(600) + speech + quiet)[:size])
    bot = _s16((speech + speech + quiet)[:size])
    echo = np.zeros_like(bot)
    echo[240:] = 0.3 * bot[:-240]  # 30 ms late, -10 dB
    late_caller = np.zeros_like(caller)
    late_caller[8000:] = caller[:-8000]  # the caller starts 1 s into the bot's turn
    lone = VadSettings(batch_across_calls=True, neural_only_over_bot=False)
    default = VadSettings(batch_across_calls=True)
    burst = (silence(1000) + noise(300, 3000) + silence(400) + noise(600, 800, seed=2) + quiet)[:size]
    return [
        (lone, frames(quiet), frames(_pcm(caller))),
        (default, frames(_pcm(bot)), frames(_pcm(echo + late_caller))),
        (default, frames(_pcm(bot)), frames(_pcm(echo))),
        (lone, frames(_pcm(bot)), frames(burst)),
        (default, frames(quiet), frames(_pcm(caller * 0.5))),
    ]


def key(e: VadEvent) -> tuple[str, float, float]:
    return (e.kind.value, e.at, e.detected_at)


def immediate(call: Call, group: int) -> list[tuple[str, float, float]]:
    """The events without a batch: per read, `group` caller frames, then the bot's frames
    of that stretch sent (as the pacer's timers do between the sockets' callbacks)."""
    settings, sent, inbound = call
    echo = EchoGate()
    vad = VoiceActivityDetector(settings, echo)
    assert vad._defer is None
    out = []
    try:
        for i in range(0, len(inbound), group):
            for k in range(i, min(i + group, len(inbound))):
                event = vad.process(inbound[k], k * FRAME_S)
                if event is not None:
                    out.append(key(event))
            for f in sent[i : i + group]:
                echo.sent(f)
        return out
    finally:
        vad.close()


class Batched:
    """One call through the running loop's batch; its events as they come."""

    def __init__(self, call: Call) -> None:
        self.settings, self.sent, self.inbound = call
        self.echo = EchoGate()
        self.events: list[tuple[str, float, float]] = []
        self.deferred = 0  # events that came from the batch's flush
        self.vad = VoiceActivityDetector(self.settings, self.echo, self.on_event)
        assert self.vad._defer is not None

    def on_event(self, event: VadEvent) -> None:
        self.deferred += 1
        self.events.append(key(event))

    def read(self, i: int, group: int) -> None:
        """One socket read of `group` frames from frame `i` (the bot's frames sent after)."""
        for k in range(i, min(i + group, len(self.inbound))):
            event = self.vad.process(self.inbound[k], k * FRAME_S)
            if event is not None:
                self.events.append(key(event))
        for f in self.sent[i : i + group]:
            self.echo.sent(f)


async def run_batched(calls: list[Batched], group: int, each: Callable[[int], None] | None = None) -> None:
    """Each loop iteration: every call's read (one callback each), then the flush they schedule."""
    loop = asyncio.get_running_loop()
    for i in range(0, len(calls[0].inbound), group):
        done = asyncio.Event()
        for c in calls:
            loop.call_soon(c.read, i, group)
        loop.call_soon(loop.call_soon, done.set)  # after the flush those reads schedule
        await asyncio.wait_for(done.wait(), T)
        if each is not None:
            each(i)


@pytest.mark.parametrize("group", [1, 3, 7, 40])  # 40: more than a call's queue holds
async def test_batched_events_are_the_immediate_ones(speech: bytes, group: int) -> None:
    audio = scenarios(speech)
    expected = [immediate(c, group) for c in audio]
    assert sum(len(e) for e in expected) >= 8  # speech, barge-ins and rejected runs to compare
    batch = running_batch()
    assert batch is not None
    runs, windows = batch.runs, batch.windows
    calls = [Batched(c) for c in audio]
    try:
        await run_batched(calls, group)
        for c, want in zip(calls, expected, strict=True):
            assert c.events == want
            assert c.vad._defer is not None and c.vad._defer.waiting == 0
        assert sum(c.deferred for c in calls) >= 3  # decided after their windows' flush
        done = sum(c.vad._cls.windows for c in calls)  # type: ignore[attr-defined]
        assert batch.windows - windows == done
        assert batch.runs - runs < done  # windows of several calls shared runs
    finally:
        for c in calls:
            c.vad.close()


async def test_a_call_closed_with_frames_queued_drops_them_and_leaves_the_others_exact(speech: bytes) -> None:
    audio = scenarios(speech)
    group = 5
    expected = [immediate(c, group) for c in audio]
    calls = [Batched(c) for c in audio]
    closing = calls[1]  # the barge-in call: its frames wait behind windows
    model = closing.vad._cls._model  # type: ignore[attr-defined]
    closed_at = [-1]

    def close_one(i: int) -> None:
        defer = closing.vad._defer
        if closed_at[0] < 0 and i > 100 and defer is not None and defer.waiting > 1:
            closed_at[0] = i
            closing.vad.close()
            assert model in vad_silero._SILERO_POOL

    loop = asyncio.get_running_loop()
    try:
        for i in range(0, len(calls[0].inbound), group):
            done = asyncio.Event()
            for c in calls:
                if c is not closing or closed_at[0] < 0:
                    loop.call_soon(c.read, i, group)
            loop.call_soon(close_one, i)  # after the reads, before the flush
            loop.call_soon(loop.call_soon, done.set)
            await asyncio.wait_for(done.wait(), T)
        assert closed_at[0] > 0
        # Its events up to the close, then none: those of the frames read before, decided.
        got = closing.events
        assert got == expected[1][: len(got)]
        assert len(got) >= len([e for e in expected[1] if e[2] < closed_at[0] * FRAME_S])
        assert not np.any(model.state) and not np.any(model.input_row)  # not written after close
        for c, want in zip(calls, expected, strict=True):
            if c is not closing:
                assert c.events == want
    finally:
        for c in calls:
            c.vad.close()


class Raising(Batched):
    """A call whose listener raises on its first deferred event."""

    def on_event(self, event: VadEvent) -> None:
        self.deferred += 1
        if self.deferred == 1:
            raise RuntimeError("listener broke")
        self.events.append(key(event))


async def test_a_listener_that_raises_from_the_flush_does_not_leave_the_call_deaf(speech: bytes) -> None:
    audio = scenarios(speech)
    expected = immediate(audio[0], 7)
    calls = [Raising(audio[0])]
    try:
        await run_batched(calls, 7)
        c = calls[0]
        assert c.deferred >= 2  # the flush went on after the raise and on later frames
        assert c.vad._defer is not None and c.vad._defer.waiting == 0
        # Every event but the one whose delivery raised.
        assert len(c.events) == len(expected) - 1 and set(c.events) <= set(expected)
    finally:
        for c in calls:
            c.vad.close()


async def test_each_loop_has_its_own_batch_and_a_detector_off_its_loop_is_answered_at_once(
    speech: bytes,
) -> None:
    import threading

    mine = running_batch()
    assert mine is not None and running_batch() is mine
    other: list[object] = []
    t = threading.Thread(target=lambda: other.append(asyncio.run(_batch_of_a_new_loop())))
    t.start()
    t.join(T)
    assert other and other[0] is not mine  # another loop, another batch
    # A call made on this loop, fed where no loop runs (its loop gone): answered at once.
    call = Batched(scenarios(speech)[0])
    try:
        result: list[int] = []

        def feed() -> None:
            for k in range(40):
                call.read(k, 1)
            result.append(call.vad._defer.waiting if call.vad._defer is not None else -1)

        t = threading.Thread(target=feed)
        t.start()
        t.join(T)
        assert result == [0]  # nothing left waiting for a flush that would never come
    finally:
        call.vad.close()


async def _batch_of_a_new_loop() -> object:
    return running_batch()


async def test_a_full_queue_that_a_flush_cannot_empty_drops_the_frame_and_counts_it(speech: bytes) -> None:
    # A listener that feeds the detector from inside the flush (re-entry: the batch does not
    # flush again) fills the call's queue of 32 frames: the frames after that are not judged,
    # and `frames_dropped` says how many (exported as voicebridge_frames_dropped_total
    # {where="vad_queue"}).
    audio = frames(speech)
    more = audio[:40]
    state = {"reentered": False}

    def on_event(_event: VadEvent) -> None:
        if not state["reentered"]:
            state["reentered"] = True
            for f in more:
                vad.process(f, 100.0)

    vad = VoiceActivityDetector(
        VadSettings(batch_across_calls=True, neural_only_over_bot=False), None, on_event
    )
    try:
        assert vad._defer is not None and vad.frames_dropped == 0
        for i, f in enumerate(audio):
            vad.process(f, i * FRAME_S)  # (an event judged at once is not the flush's)
            await asyncio.sleep(0)  # the batch's flush runs between socket reads
        assert state["reentered"]
        assert vad.frames_dropped == vad._defer.dropped > 0
    finally:
        vad.close()
    immediate = VoiceActivityDetector(VadSettings(batch_across_calls=False))
    assert immediate.frames_dropped == 0
    immediate.close()
