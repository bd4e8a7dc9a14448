"""The resend after a failed SpeechKit call is capped at `max_buffered_s` to the millisecond.

A call holds what it sent until a final covers it, at most `max_buffered_s` of the newest audio;
a backlog request carries up to a second, so the cap falls inside one: its tail stays held (it
used to be dropped whole, up to a second more than the cap, uncounted). What the cap trimmed is
what the next call cannot resend: `resend_dropped_ms`.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import grpc
import pytest
from yandex.cloud.ai.stt.v3 import stt_pb2

from orchestrator.adapters.stt.yandex import YandexRecognitionStream, YandexSttStreamer
from orchestrator.adapters.stt.yandex_call import BYTES_PER_MS, RecognizeCall, Shared
from orchestrator.audio import FRAME_BYTES, FRAME_MS, AudioBuffer
from orchestrator.clock import LoopClock
from testkit.standins.speechkit_server import SpeechKitStandin
from tests.test_stt_yandex import SETTINGS, feed, rest, silence

# The cap falls inside the second of three 1 s requests; keepalive silence would add requests.
CAP_MS = 1250
CAPPED = replace(SETTINGS, max_buffered_s=CAP_MS / 1000, keepalive_s=5.0)


def numbered(ms: int, first: int = 0) -> bytes:
    """`ms` of audio whose every 20 ms frame is a different byte value (frame `first` on)."""
    return b"".join(bytes([(first + i) % 251 + 1]) * FRAME_BYTES for i in range(ms // FRAME_MS))


def _finalized_upto(ms: int) -> stt_pb2.StreamingResponse:
    """A status response whose cursor says the service finalized the call's audio up to `ms`."""
    return stt_pb2.StreamingResponse(
        audio_cursors=stt_pb2.AudioCursors(final_time_ms=ms),
        status_code=stt_pb2.StatusCode(code_type=stt_pb2.WORKING),
    )


async def test_held_audio_is_the_newest_max_buffered_s_to_the_ms() -> None:
    # The request generator alone (no gRPC): three 1 s backlog requests, nothing finalized.
    buffer = AudioBuffer(CAP_MS // FRAME_MS)
    shared = Shared(CAPPED, LoopClock(), buffer, emit=lambda _: None, chunk_frames=5)
    call = RecognizeCall(shared, base_ms=0)
    requests = call.requests()
    assert (await anext(requests)).WhichOneof("Event") == "session_options"
    pcm = b""
    for n in range(3):
        second = numbered(1000, first=50 * n)
        pcm += second
        for at in range(0, len(second), FRAME_BYTES):
            buffer.push(second[at : at + FRAME_BYTES])
        assert len((await anext(requests)).chunk.data) == len(second)  # one request per second
    held = call.unconfirmed_requests()
    assert [len(r.chunk.data) // BYTES_PER_MS for r in held] == [250, 1000]  # the second's tail
    assert b"".join(r.chunk.data for r in held) == pcm[-CAP_MS * BYTES_PER_MS :]
    assert call.unconfirmed_ms == CAP_MS and call.confirmed_ms == 3000 - CAP_MS
    assert call.dropped_ms == 3000 - CAP_MS
    # The service finalizing part of the trimmed audio leaves less uncovered; past it, nothing.
    call.handle(_finalized_upto(1000))
    assert call.dropped_ms == 3000 - CAP_MS - 1000 and call.unconfirmed_ms == CAP_MS
    call.handle(_finalized_upto(2000))
    assert call.dropped_ms == 0 and call.unconfirmed_ms == 1000
    await requests.aclose()
    assert shared.resend_dropped_ms == 0  # counted only when a call fails and resends


async def _second(server: SpeechKitStandin, stt: YandexRecognitionStream, heard_ms: int) -> None:
    """Push 1 s (one backlog request) once the current stream has heard `heard_ms`."""
    await server.wait_for(lambda: server.stt_sessions[-1].audio_bytes == heard_ms * BYTES_PER_MS, 3.0)
    feed(stt, silence(1000))


async def test_a_failure_after_more_than_max_buffered_s_resends_exactly_that_and_counts_the_rest(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Two streams fail after 3 s of audio no final covers (silence); each next one resends the
    # newest 1.25 s: 0.25 s of the request the cap falls in, then the last. Resending whole
    # requests sent 1 s (0.25 s less, or with a larger cap up to 1 s more dropped uncounted).
    srv = speechkit_standin
    srv.fail_next_streams(2, grpc.StatusCode.UNAVAILABLE, after_ms=3000)
    stt = YandexSttStreamer(speechkit_grpc_channel, CAPPED, clock=LoopClock()).open_stream()
    await srv.wait_for(lambda: bool(srv.stt_sessions), 3.0)
    with caplog.at_level(logging.DEBUG, logger="orchestrator.adapters.stt.yandex"):
        for heard in (0, 1000, 2000):
            await _second(srv, stt, heard)
        await srv.wait_for(lambda: len(srv.stt_sessions) == 2, 3.0)
        first, second = srv.stt_sessions
        assert first.ended == "fault" and first.audio_ms == 3000
        assert stt.resend_dropped_ms == 3000 - CAP_MS
        # The second stream: the resend, then 2 s more (it hears 3 s of that 3.25 s and fails).
        for heard in (CAP_MS, CAP_MS + 1000):
            await _second(srv, stt, heard)
        await srv.wait_for(lambda: len(srv.stt_sessions) == 3, 3.0)
        assert second.chunk_ms == [250, 1000, 1000, 1000] and second.ended == "fault"
        await srv.wait_for(lambda: srv.stt_sessions[2].audio_bytes == CAP_MS * BYTES_PER_MS, 3.0)
        stt.end_input()
        assert await rest(stt) == []
    third = srv.stt_sessions[2]
    assert third.chunk_ms == [250, 1000] and third.ended == "eof"  # the resend, then the half-close
    assert stt.reconnects == 2
    assert stt.resend_dropped_ms == (3000 - CAP_MS) + (CAP_MS + 2000 - CAP_MS)
    incomplete = [r for r in caplog.records if "resend incomplete" in r.getMessage()]
    assert [r.levelno for r in incomplete] == [logging.WARNING, logging.DEBUG]  # once per call
    await stt.aclose()


async def test_a_single_request_over_the_cap_keeps_its_tail() -> None:
    # A cap under one request (0.2 s here, 1 s requests): the request itself is cut, not kept whole.
    buffer = AudioBuffer(1000 // FRAME_MS)
    settings = replace(CAPPED, max_buffered_s=0.2)
    shared = Shared(settings, LoopClock(), buffer, emit=lambda _: None, chunk_frames=5)
    call = RecognizeCall(shared, base_ms=0)
    requests = call.requests()
    await anext(requests)
    pcm = numbered(1000)
    for at in range(0, len(pcm), FRAME_BYTES):
        buffer.push(pcm[at : at + FRAME_BYTES])
    assert len((await anext(requests)).chunk.data) == len(pcm)
    [held] = call.unconfirmed_requests()
    assert held.chunk.data == pcm[-200 * BYTES_PER_MS :] and call.dropped_ms == 800
    # The next call resends it first, at its positions: 200 ms, not the whole second.
    again = RecognizeCall(shared, base_ms=call.confirmed_ms, replay=[held])
    assert again.replay_ms == 200 and call.confirmed_ms == 800
    await requests.aclose()
