"""The resend after a failed SpeechKit call is capped at `max_buffered_s` to the millisecond.

A call holds what it sent until a final covers it, at most `max_buffered_s` of the newest audio;
a backlog request carries up to a second, so the cap falls inside one: its tail stays held (it
used to be dropped whole, up to a second more than the cap, uncounted). What the cap trimmed is
what the next call cannot resend: `resend_dropped_ms`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import grpc
import pytest
from yandex.cloud.ai.stt.v3 import stt_pb2

from orchestrator.adapters.stt import yandex as stt_yandex
from orchestrator.adapters.stt.yandex import YandexRecognitionStream, YandexSttStreamer
from orchestrator.adapters.stt.yandex_call import BYTES_PER_MS, RecognizeCall, Shared
from orchestrator.audio import FRAME_BYTES, FRAME_MS, AudioBuffer
from orchestrator.clock import LoopClock
from orchestrator.domain.errors import STTError
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
    incomplete = [r for r in caplog.records if "not heard" in r.getMessage()]
    assert [r.levelno for r in incomplete] == [logging.WARNING, logging.DEBUG]  # once per call
    await stt.aclose()


async def _three_seconds_then_the_end(srv: SpeechKitStandin, stt: YandexRecognitionStream) -> None:
    """Feed 3 s of silence a second at a time (each sent before the next), end the input, and
    read the recognition to its end: no results."""
    for n in range(3):
        feed(stt, silence(1000))
        await srv.wait_for(lambda n=n: stt.audio_bytes_sent == (n + 1) * 16000, 3.0)
    stt.end_input()
    assert await rest(stt) == []


async def test_a_renewed_stream_that_fails_while_draining_counts_what_it_sent_unheard(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Renewal after 2 s (32,000 bytes); the first stream hears only 1 s of it, then fails while
    # draining. The next stream is already past that audio (resending would reorder it), so the
    # 2 s that no final covers (silence: no final; an utterance the failed session had not
    # finalized is gone with it) are lost: counted, and warned about, not silent.
    srv = speechkit_standin
    settings = replace(CAPPED, renew_after_bytes=32000, renew_grace_s=0.0)
    srv.fail_next_streams(1, grpc.StatusCode.UNAVAILABLE, after_ms=1000, unheard_ms=None)
    stt = YandexSttStreamer(speechkit_grpc_channel, settings, clock=LoopClock()).open_stream()
    with caplog.at_level(logging.WARNING, logger="orchestrator.adapters.stt.yandex"):
        await _three_seconds_then_the_end(srv, stt)
    first, second = srv.stt_sessions
    assert (first.ended, first.audio_ms, second.ended) == ("fault", 1000, "eof")
    assert stt.reconnects == 0  # a renewal, not a reconnect
    assert stt.resend_dropped_ms == 2000  # what it held (1,250 ms) and what the cap trimmed
    assert [r.levelno for r in caplog.records if "failed while draining" in r.getMessage()] == [
        logging.WARNING
    ]
    await stt.aclose()


async def test_a_renewed_reader_that_crashes_while_draining_is_logged_and_counted(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A bug in the first (renewed) call's reader at the end of its drain: nothing else looks at
    # a drained reader, so the drain's callback must log it, not just retrieve it, and count
    # what that call sent that no final covered (2 s of silence) as not heard.
    real = stt_yandex.read_call
    calls: list[int] = []

    async def crash_the_first(*args: Any) -> STTError | None:
        calls.append(1)
        first = len(calls) == 1
        result = await real(*args)
        if first:
            raise RuntimeError("drain bug")
        return result

    monkeypatch.setattr(stt_yandex, "read_call", crash_the_first)
    settings = replace(CAPPED, max_buffered_s=5.0, renew_after_bytes=32000, renew_grace_s=0.0)
    stt = YandexSttStreamer(speechkit_grpc_channel, settings, clock=LoopClock()).open_stream()
    with caplog.at_level(logging.WARNING, logger="orchestrator.adapters.stt"):
        await _three_seconds_then_the_end(speechkit_standin, stt)
    assert len(calls) == 2 and stt.resend_dropped_ms == 2000
    crashes = [r for r in caplog.records if "reader failed" in r.getMessage()]
    assert len(crashes) == 1 and crashes[0].levelno == logging.ERROR and crashes[0].exc_info is not None
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


class _Driver:
    """A `RecognizeCall`'s request generator driven by hand (no gRPC): push audio, take requests."""

    def __init__(
        self, shared: Shared, base_ms: int = 0, replay: list[stt_pb2.StreamingRequest] | None = None
    ) -> None:
        self.shared = shared
        self.call = RecognizeCall(shared, base_ms, replay or [])
        self.requests = self.call.requests()

    async def start(self) -> None:
        assert (await anext(self.requests)).WhichOneof("Event") == "session_options"

    async def send(self, pcm: bytes) -> stt_pb2.StreamingRequest:
        """Queue `pcm` (whole frames) and take the one request it goes out in."""
        for at in range(0, len(pcm), FRAME_BYTES):
            self.shared.buffer.push(pcm[at : at + FRAME_BYTES])
        return await anext(self.requests)


def held_pcm(call: RecognizeCall) -> bytes:
    """The audio a call holds for a resend (its unconfirmed chunks, oldest first)."""
    return b"".join(r.chunk.data for r in call.unconfirmed_requests())


def _shared(max_buffered_s: float, *, keepalive_s: float = 5.0) -> Shared:
    settings = replace(CAPPED, max_buffered_s=max_buffered_s, keepalive_s=keepalive_s)
    return Shared(settings, LoopClock(), AudioBuffer(100), emit=lambda _: None, chunk_frames=5)


@pytest.mark.parametrize("cap_s", [0.5, 1.999, 2.0, 2.01, 2.02, 2.5, 3.0, 4.0])
async def test_the_cap_is_max_buffered_s_to_the_ms_at_and_around_it(cap_s: float) -> None:
    # 2.01 s is 2009.9999... ms as a float: truncating it held 1 ms less than the cap.
    cap_ms = round(cap_s * 1000)
    driver = _Driver(_shared(cap_s))
    await driver.start()
    pcm = b""
    for n in range(3):
        second = numbered(1000, first=50 * n)
        pcm += second
        await driver.send(second)
    held = min(cap_ms, 3000)
    call = driver.call
    assert held_pcm(call) == pcm[len(pcm) - held * BYTES_PER_MS :]
    assert call.unconfirmed_ms == held and call.confirmed_ms == 3000 - held
    assert call.dropped_ms == 3000 - held
    await driver.requests.aclose()


async def test_a_keepalive_silence_straddling_the_cap_keeps_its_tail() -> None:
    # 50 ms of keepalive silence, then 1 s of audio; a 1.03 s cap falls 20 ms into the silence.
    driver = _Driver(_shared(1.03, keepalive_s=0.05))
    await driver.start()
    idle = await anext(driver.requests)  # nothing queued for keepalive_s
    assert idle.silence_chunk.duration_ms == 50
    pcm = numbered(1000)
    await driver.send(pcm)
    call = driver.call
    silence_tail, audio = call.unconfirmed_requests()
    assert silence_tail.silence_chunk.duration_ms == 30 and audio.chunk.data == pcm
    assert call.unconfirmed_ms == 1030 and call.confirmed_ms == 20 and call.dropped_ms == 20
    # The next call resends the 30 ms of silence and the second, at their positions.
    again = RecognizeCall(driver.shared, base_ms=call.confirmed_ms, replay=call.unconfirmed_requests())
    assert again.replay_ms == 1030 and again.dropped_ms == 0
    await driver.requests.aclose()


async def test_a_replay_trimmed_again_counts_only_what_the_second_call_dropped() -> None:
    # Call 1 drops 1750 ms (3 s sent, 1.25 s held). Call 2 resends the 1.25 s, sends 1 s more and
    # so trims 1 s of the resend; a final up to 500 ms covers half of that: 500 ms more lost,
    # never call 1's 1750 again. A call that dies before resending anything drops nothing.
    shared = _shared(CAP_MS / 1000)
    first = _Driver(shared)
    await first.start()
    pcm = b"".join([numbered(1000, first=50 * n) for n in range(3)])
    for n in range(3):
        await first.send(pcm[n * 16000 : (n + 1) * 16000])
    assert first.call.dropped_ms == 1750
    replay = first.call.unconfirmed_requests()
    await first.requests.aclose()

    dead = RecognizeCall(shared, base_ms=first.call.confirmed_ms, replay=replay)
    dead.abandon()  # e.g. the channel was not ready: its generator never ran
    assert dead.dropped_ms == 0 and dead.unconfirmed_requests() == replay

    second = _Driver(shared, base_ms=first.call.confirmed_ms, replay=replay)
    await second.start()
    assert [len((await anext(second.requests)).chunk.data) // BYTES_PER_MS for _ in replay] == [250, 1000]
    more = numbered(1000, first=150)
    await second.send(more)
    call = second.call
    assert call.dropped_ms == 1000 and held_pcm(call) == pcm[-250 * BYTES_PER_MS :] + more
    call.handle(_finalized_upto(500))
    assert call.dropped_ms == 500 and call.unconfirmed_ms == CAP_MS
    # A final past the trimmed audio, before the failure: nothing is lost after all.
    call.handle(_finalized_upto(1100))
    assert call.dropped_ms == 0 and call.unconfirmed_ms == 1150
    call.handle(stt_pb2.StreamingResponse())  # no cursor (0): what finals covered stays covered
    assert call.dropped_ms == 0
    await second.requests.aclose()


async def test_a_renewal_with_trimmed_audio_counts_nothing(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    # A renewed call half-closes cleanly: the service has all its audio, nothing is resent, so
    # what the cap trimmed (0.75 s of its 2 s) is not lost.
    srv = speechkit_standin
    settings = replace(CAPPED, renew_after_bytes=2000 * BYTES_PER_MS, renew_grace_s=0.0)
    stt = YandexSttStreamer(speechkit_grpc_channel, settings, clock=LoopClock()).open_stream()
    for n in range(3):
        feed(stt, silence(1000))
        await srv.wait_for(lambda n=n: stt.audio_bytes_sent == (n + 1) * 1000 * BYTES_PER_MS, 3.0)
    stt.end_input()
    assert await rest(stt) == []
    assert stt.streams_opened == 2 and stt.reconnects == 0
    assert [s.ended for s in srv.stt_sessions] == ["eof", "eof"]
    assert stt.resend_dropped_ms == 0
    await stt.aclose()
