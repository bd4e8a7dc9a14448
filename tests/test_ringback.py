"""Ringback while a transfer rings, on virtual time: the Russian cadence from the bot's playout
until the operator answers (stops on the next frame) or the transfer fails."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import pytest

from bridge.pacer import Pacer
from bridge.playout import Playout
from bridge.ringback import RingbackControl, ringback_frames
from orchestrator.audio import FRAME_BYTES
from orchestrator.domain.models import AudioChunk, TransferOutcome, TransferRequest
from testkit.virtual_time import run_virtual

REQUEST = TransferRequest(endpoint="PJSIP/operator", timeout_s=20, variables={}, sip_headers=True)


class CrossingSink:
    """A FrameSink keeping (loop time, zero crossings) per frame; -1 marks a silent frame."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, int]] = []

    def send_audio(self, frame: bytearray) -> None:
        assert len(frame) == FRAME_BYTES
        samples = struct.unpack(f"<{FRAME_BYTES // 2}h", frame)
        crossings = sum(1 for a, b in zip(samples, samples[1:], strict=False) if (a < 0) != (b < 0))
        self.frames.append((asyncio.get_running_loop().time(), crossings if any(samples) else -1))

    def send_silence(self) -> None:
        self.frames.append((asyncio.get_running_loop().time(), -1))

    def toned(self, start: float, end: float) -> list[bool]:
        """Per frame sent in [start, end): whether it is the 425 Hz tone (~17 crossings in 20 ms)."""
        return [15 <= c <= 19 for t, c in self.frames if start <= t < end]


class RingingCall:
    """A `TransferringCall` that rings `ring_s`, then answers (`on_answer`) or ends with `outcome`."""

    def __init__(self, ring_s: float, outcome: TransferOutcome) -> None:
        self.ring_s, self.outcome = ring_s, outcome
        self.answered_at: float | None = None

    async def transfer(
        self, request: TransferRequest, *, on_answer: Callable[[], None] | None = None
    ) -> TransferOutcome:
        await asyncio.sleep(self.ring_s)
        if self.outcome == "answered" and on_answer is not None:
            self.answered_at = asyncio.get_running_loop().time()
            on_answer()
            await asyncio.sleep(0.3)  # bridging the operator: the caller must not hear ringback
        return self.outcome


def _run(call: RingingCall, *, start_s: float = 0.5, tail_s: float = 1.0) -> tuple[CrossingSink, Playout]:
    async def main() -> tuple[CrossingSink, Playout]:
        pacer, sink = Pacer(), CrossingSink()
        playout = Playout(sink)
        pacer.add(playout)
        pacer.start()
        await asyncio.sleep(start_s)
        outcome = await RingbackControl(call, playout, ringback_frames()).transfer(REQUEST)
        assert outcome == call.outcome
        await asyncio.sleep(tail_s)
        pacer.stop()
        return sink, playout

    return run_virtual(main)


def test_ringback_cadence_until_the_operator_answers_then_silence_from_the_next_frame() -> None:
    call = RingingCall(ring_s=5.3, outcome="answered")  # answers 0.3 s into the second burst
    sink, playout = _run(call)
    assert call.answered_at is not None
    assert not any(sink.toned(0.0, 0.5))  # before the transfer: the idle bot's silence
    # Ticks fall on the pacer's 20 ms grid, not on the transfer's start: windows edge 1 frame in.
    on1, off1 = sink.toned(0.5, 1.55), sink.toned(1.55, 5.5)
    on2 = sink.toned(5.5, call.answered_at)
    assert sum(on1) >= 49 and sum(on2) >= 14, (sum(on1), sum(on2))  # 1 s of tone = 50 frames
    assert not any(off1)  # 4 s off
    after = [c for t, c in sink.frames if t > call.answered_at]
    assert after and all(c == -1 for c in after)  # stopped the tick after the answer: silence
    assert not playout.ringing


def test_a_busy_operator_stops_the_ringback_and_the_bot_speaks_again() -> None:
    sink, playout = _run(RingingCall(ring_s=0.8, outcome="busy"))
    assert sum(sink.toned(0.5, 1.3)) >= 39  # 0.8 s of the first burst
    assert not any(sink.toned(1.33, 10.0))
    assert not playout.ringing


def test_queued_bot_audio_goes_before_the_ringback() -> None:
    async def main() -> list[int]:
        pacer, sink = Pacer(), CrossingSink()
        playout = Playout(sink)
        pacer.add(playout)
        playout.ring(ringback_frames())
        await playout.write(AudioChunk(struct.pack("<160h", *([1000, -1000] * 80)) * 3))
        playout.end_segment()
        pacer.start()
        await asyncio.sleep(0.2)
        pacer.stop()
        return [c for _, c in sink.frames]

    crossings = run_virtual(main)
    assert crossings[:3] == [159, 159, 159]  # the bot's 4 kHz clip first
    assert all(15 <= c <= 19 for c in crossings[3:]), crossings  # then the ringback goes on


@pytest.mark.parametrize(("hz", "on_s", "off_s"), [(0, 1, 4), (4000, 1, 4), (425, 0, 4), (425, 1, -1)])
def test_a_cadence_that_is_no_tone_is_refused(hz: float, on_s: float, off_s: float) -> None:
    with pytest.raises(ValueError, match="ringback"):
        ringback_frames(hz, on_s, off_s)


def test_the_russian_cadence_is_one_second_of_425_hz_in_five() -> None:
    frames = ringback_frames()
    assert len(frames) == 250 and all(len(f) == FRAME_BYTES for f in frames)
    assert [any(f) for f in frames] == [True] * 50 + [False] * 200


def test_ringback_frames_are_counted_and_end_a_pending_cut() -> None:
    async def main() -> tuple[int, Playout, list[float]]:
        pacer, sink = Pacer(), CrossingSink()
        playout = Playout(sink)
        pacer.add(playout)
        cuts: list[float] = []
        await playout.write(AudioChunk(struct.pack("<160h", *([1000, -1000] * 80)) * 3))
        playout.end_segment()
        playout.ring(ringback_frames())
        playout.watch_cut(asyncio.get_running_loop().time(), cuts.append)
        pacer.start()
        await asyncio.sleep(0.5)
        pacer.stop()
        return len(sink.frames), playout, cuts

    ticks, playout, cuts = run_virtual(main)
    assert playout.frames_sent == 3 and playout.ring_sent == ticks - 3 > 0
    assert playout.frames_sent + playout.silence_sent + playout.ring_sent == ticks
    assert len(cuts) == 1  # reported at the first ringback frame, not after the whole ring
