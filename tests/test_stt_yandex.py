"""YandexSttStreamer against the SpeechKit stand-in on a real socket, fed real (espeak-ng) speech."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import grpc
import pytest

from orchestrator.adapters.speechkit import YandexSettings, speechkit_channel
from orchestrator.adapters.stt.yandex import YandexSttStreamer
from orchestrator.clock import LoopClock
from orchestrator.contracts import SttEvent
from orchestrator.domain.errors import STTError
from orchestrator.domain.models import SttResult
from testkit.standins.script import SttScript
from testkit.standins.speechkit_server import SpeechKitStandin

FRAME = 320
SETTINGS = YandexSettings(
    api_key="test-key", folder_id="folder-1", tls=False, reconnect_backoff_s=0.01, keepalive_s=0.5
)
UTTERANCES = ["Сколько стоит доставка в Москву?", "Да, оформляйте заказ."]


def silence(ms: int) -> bytes:
    return bytes(16 * ms)


def feed(q: asyncio.Queue[bytes | None], pcm: bytes, *, end: bool = False) -> int:
    """Queue `pcm` as 20 ms frames (the last one may be short); returns the frames queued."""
    n = 0
    for i in range(0, len(pcm), FRAME):
        q.put_nowait(pcm[i : i + FRAME])
        n += 1
    if end:
        q.put_nowait(None)
    return n


async def collect(
    q: asyncio.Queue[SttEvent], done: Callable[[list[SttEvent]], bool], timeout: float = 10.0
) -> list[SttEvent]:
    events: list[SttEvent] = []
    async with asyncio.timeout(timeout):
        while not done(events):
            events.append(await q.get())
    return events


def finals(events: list[SttEvent]) -> list[SttResult]:
    return [e for e in events if isinstance(e, SttResult) and e.is_final]


async def test_partials_then_one_normalized_final_per_utterance(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    make_speech: Callable[[str], bytes],
) -> None:
    speechkit_standin.script = SttScript(default=list(UTTERANCES))
    stt = YandexSttStreamer(speechkit_grpc_channel, SETTINGS, clock=LoopClock(), request_id="call-a")
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    results = stt.start_recognition(audio)
    for text in UTTERANCES:
        feed(audio, silence(600) + make_speech(text))
    feed(audio, silence(1000), end=True)
    events = await collect(results, lambda ev: len(finals(ev)) == 2)
    await stt.stop_recognition()

    assert not [e for e in events if isinstance(e, STTError)]
    # One final per utterance, with the normalized (refined) text.
    assert [f.text for f in finals(events)] == UTTERANCES
    assert all(f.kind == "final" for f in finals(events))
    # Partials come before their final and grow word by word.
    first_final = events.index(finals(events)[0])
    partials = [e for e in events[:first_final] if isinstance(e, SttResult) and not e.is_final]
    assert partials and all(p.kind == "partial" for p in partials)
    texts = [p.text for p in partials]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
    assert "сколько стоит доставка в москву".startswith(texts[-1])
    # Times are positions in the call's audio, and received_at comes from the clock.
    f1, f2 = finals(events)
    assert f1.audio_start_ms is not None and f2.audio_start_ms is not None
    assert 400 <= f1.audio_start_ms < f2.audio_start_ms
    assert 0 < f1.received_at <= f2.received_at
    # What the service saw: the session options and auth metadata the brief asks for.
    rec = speechkit_standin.stt_sessions[0]
    assert rec.options is not None
    model = rec.options.recognition_model
    assert model.model == "general"
    assert model.audio_format.raw_audio.sample_rate_hertz == 8000
    assert list(model.language_restriction.language_code) == ["ru-RU"]
    assert model.text_normalization.text_normalization == 1  # TEXT_NORMALIZATION_ENABLED
    assert model.audio_processing_type == 1  # REAL_TIME
    assert rec.options.eou_classifier.WhichOneof("Classifier") == "default_classifier"
    md = speechkit_standin.last_metadata
    assert md["authorization"] == "Api-Key test-key"
    assert md["x-folder-id"] == "folder-1"
    assert md["x-client-request-id"] == "call-a"
    # Frames were batched into ~100 ms chunks.
    assert rec.chunks <= rec.audio_bytes // 1600 + 2


async def test_renewal_loses_no_audio(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    make_speech: Callable[[str], bytes],
) -> None:
    settings = replace(SETTINGS, renew_after_bytes=8000, renew_grace_s=0.0)
    stt = YandexSttStreamer(speechkit_grpc_channel, settings, clock=LoopClock(), request_id="call-r")
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    stt.start_recognition(audio)
    pcm = silence(500) + make_speech(UTTERANCES[0]) + silence(800)
    feed(audio, pcm, end=True)
    await speechkit_standin.wait_for(lambda: stt.audio_bytes_sent == len(pcm))
    await speechkit_standin.wait_for(
        lambda: (
            len(speechkit_standin.stt_sessions) == stt.streams_opened
            and all(r.done.is_set() for r in speechkit_standin.stt_sessions)
        )
    )
    await stt.stop_recognition()
    sessions = speechkit_standin.stt_sessions
    assert len(sessions) >= len(pcm) // 8000  # renewed every ~0.5 s of audio
    assert sum(r.audio_bytes for r in sessions) == len(pcm)  # every byte reached the service
    assert all(r.ended == "eof" for r in sessions)  # each stream was half-closed cleanly


async def test_keepalive_holds_an_idle_stream_open(make_speech: Callable[[str], bytes]) -> None:
    server = SpeechKitStandin(SttScript(default=UTTERANCES[:1]), idle_timeout_s=0.6)
    await server.start()
    channel = speechkit_channel(server.endpoint, tls=False)
    stt = YandexSttStreamer(
        channel, replace(SETTINGS, keepalive_s=0.2), clock=LoopClock(), request_id="call-k"
    )
    try:
        audio: asyncio.Queue[bytes | None] = asyncio.Queue()
        results = stt.start_recognition(audio)
        feed(audio, silence(300) + make_speech(UTTERANCES[0]) + silence(700))
        events = await collect(results, lambda ev: len(finals(ev)) == 1)
        # The caller is silent now (the bot speaks): nothing comes on the audio queue.
        await server.wait_for(lambda: server.stt_sessions[0].silence_ms >= 1500)
        assert not server.stt_sessions[0].done.is_set()
        assert stt.streams_opened == 1
        assert results.empty() and not [e for e in events if isinstance(e, STTError)]
    finally:
        await stt.stop_recognition()
        await channel.close()
        await server.close()


async def test_without_keepalive_the_idle_cutoff_fires_and_the_stream_reconnects() -> None:
    server = SpeechKitStandin(idle_timeout_s=0.3)
    await server.start()
    channel = speechkit_channel(server.endpoint, tls=False)
    stt = YandexSttStreamer(channel, replace(SETTINGS, keepalive_s=5.0), clock=LoopClock())
    try:
        audio: asyncio.Queue[bytes | None] = asyncio.Queue()
        results = stt.start_recognition(audio)
        feed(audio, silence(200))
        await server.wait_for(lambda: stt.streams_opened == 2)
        # Recovered by reconnecting: counted and logged, not put on the result queue.
        assert stt.reconnects == 1 and results.empty()
        assert stt.last_error is not None and stt.last_error.retryable
        assert "DEADLINE_EXCEEDED" in str(stt.last_error)
        assert server.stt_sessions[0].ended == "idle"
    finally:
        await stt.stop_recognition()
        await channel.close()
        await server.close()


async def test_retryable_failure_reconnects_and_recognition_goes_on(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    make_speech: Callable[[str], bytes],
) -> None:
    speechkit_standin.script = SttScript(default=UTTERANCES[:1])
    speechkit_standin.fail_next_streams(1, grpc.StatusCode.UNAVAILABLE, after_ms=100)
    stt = YandexSttStreamer(speechkit_grpc_channel, SETTINGS, clock=LoopClock(), request_id="call-f")
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    results = stt.start_recognition(audio)
    feed(audio, silence(1000) + make_speech(UTTERANCES[0]) + silence(800), end=True)
    events = await collect(results, lambda ev: len(finals(ev)) == 1)
    await stt.stop_recognition()
    assert not [e for e in events if isinstance(e, STTError)]  # recovered: nothing in-band
    assert stt.reconnects == 1 and stt.last_error is not None and stt.last_error.retryable
    # gRPC Python may report a server abort that races our write as INTERNAL (see speechkit.py).
    assert "UNAVAILABLE" in str(stt.last_error) or "INTERNAL" in str(stt.last_error)
    assert finals(events)[0].text == UTTERANCES[0]
    assert stt.streams_opened == 2
    assert speechkit_standin.stt_sessions[0].ended == "fault"


async def test_non_retryable_failure_ends_recognition(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    speechkit_standin.fail_next_streams(1, grpc.StatusCode.PERMISSION_DENIED)
    stt = YandexSttStreamer(speechkit_grpc_channel, SETTINGS, clock=LoopClock())
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    # No audio: the abort comes right after the session options, with no write to race it.
    results = stt.start_recognition(audio)
    [err] = await collect(results, lambda ev: len(ev) == 1)
    assert isinstance(err, STTError)
    assert not err.retryable and "PERMISSION_DENIED" in str(err)
    await stt.stop_recognition()
    assert stt.streams_opened == 1


async def test_gives_up_after_bounded_reconnects(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    speechkit_standin.fail_next_streams(10, grpc.StatusCode.UNAVAILABLE)
    settings = replace(SETTINGS, reconnect_attempts=2)
    stt = YandexSttStreamer(speechkit_grpc_channel, settings, clock=LoopClock())
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    results = stt.start_recognition(audio)
    [err] = await collect(results, lambda ev: len(ev) == 1)
    await stt.stop_recognition()
    assert isinstance(err, STTError) and not err.retryable and "giving up" in str(err)
    assert stt.reconnects == 2 and stt.streams_opened == 3


async def test_unreachable_service_is_a_retryable_error() -> None:
    channel = speechkit_channel("127.0.0.1:1", tls=False)
    stt = YandexSttStreamer(
        channel,
        replace(SETTINGS, connect_timeout_s=0.2, reconnect_attempts=1),
        clock=LoopClock(),
    )
    results = stt.start_recognition(asyncio.Queue())
    [err] = await collect(results, lambda ev: len(ev) == 1)
    await stt.stop_recognition()
    await channel.close()
    assert isinstance(err, STTError) and not err.retryable
    assert "giving up after 1 reconnects" in str(err) and "not reachable" in str(err)
    assert stt.reconnects == 1


async def test_stop_is_idempotent_and_leaves_no_tasks(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    stt = YandexSttStreamer(speechkit_grpc_channel, SETTINGS, clock=LoopClock())
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    stt.start_recognition(audio)
    feed(audio, silence(300))
    await speechkit_standin.wait_for(lambda: bool(speechkit_standin.stt_sessions))
    await stt.stop_recognition()
    await stt.stop_recognition()
    left = [t for t in asyncio.all_tasks() if (t.get_name() or "").startswith("stt-")]
    assert left == []
    with pytest.raises(RuntimeError):
        stt.start_recognition(audio)


@pytest.mark.parametrize("send_eou", [True, False])
async def test_final_without_refinement_goes_out_raw(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    make_speech: Callable[[str], bytes],
    send_eou: bool,
) -> None:
    # No refinement: the held final is released by the eou_update, else by the bounded wait.
    speechkit_standin.script = SttScript(default=UTTERANCES[:1])
    speechkit_standin.send_refinement = False
    speechkit_standin.send_eou = send_eou
    settings = replace(SETTINGS, final_refinement_wait_s=0.2)
    stt = YandexSttStreamer(speechkit_grpc_channel, settings, clock=LoopClock())
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    results = stt.start_recognition(audio)
    feed(audio, silence(300) + make_speech(UTTERANCES[0]) + silence(800))
    events = await collect(results, lambda ev: len(finals(ev)) == 1)
    await stt.stop_recognition()
    assert finals(events)[0].text == "сколько стоит доставка в москву"
    assert results.empty()  # exactly one final


async def test_renewal_waits_for_a_pause_and_the_call_script_carries_on(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    make_speech: Callable[[str], bytes],
) -> None:
    # Renewal is due after 0.5 s of audio but must not cut an utterance: audio is fed at 4x real
    # time so the partials reach the adapter while the speech is still being sent.
    # A cut utterance would make the stand-in release the next line early, and then "Лишнее".
    speechkit_standin.script = SttScript(default=[*UTTERANCES, "Лишнее."])
    settings = replace(SETTINGS, renew_after_bytes=8000, renew_grace_s=30.0)
    stt = YandexSttStreamer(speechkit_grpc_channel, settings, clock=LoopClock(), request_id="call-p")
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    results = stt.start_recognition(audio)
    pcm = b"".join(silence(600) + make_speech(t) for t in UTTERANCES) + silence(900)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n, i in enumerate(range(0, len(pcm), FRAME)):
        await asyncio.sleep(max(0.0, start + n * 0.005 - loop.time()))  # pacing, not waiting
        audio.put_nowait(pcm[i : i + FRAME])
    audio.put_nowait(None)
    events = await collect(results, lambda ev: len(finals(ev)) == 2)
    await speechkit_standin.wait_for(lambda: all(r.done.is_set() for r in speechkit_standin.stt_sessions))
    await stt.stop_recognition()
    assert [f.text for f in finals(events)] == UTTERANCES
    f1, f2 = finals(events)
    assert f1.audio_end_ms is not None and f2.audio_start_ms is not None
    assert f2.audio_start_ms >= f1.audio_end_ms  # each final covers its own speech
    sessions = speechkit_standin.stt_sessions
    assert len(sessions) >= 2  # it did renew, in the pause
    assert [u for r in sessions for u in r.utterances] == UTTERANCES  # none was split
    assert sum(r.audio_bytes for r in sessions) == len(pcm)


async def _step(server: SpeechKitStandin, audio: asyncio.Queue[bytes | None], sent: list[int]) -> None:
    """Queue one 100 ms chunk and wait until the service has counted it (no backlog in flight)."""
    chunk = silence(100)
    feed(audio, chunk)
    sent.append(len(chunk))
    await server.wait_for(lambda: sum(r.audio_bytes for r in server.stt_sessions) == sum(sent), 3.0)


@pytest.mark.parametrize("more_audio", [True, False])
async def test_reconnect_loses_no_audio_and_eof_right_after_still_half_closes(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel, more_audio: bool
) -> None:
    # The dead stream's request generator used to take the next chunk (or the end of input) from
    # the shared queue: ~100 ms lost per reconnect, or a new stream that never half-closed.
    srv = speechkit_standin
    srv.fail_next_streams(1, grpc.StatusCode.UNAVAILABLE, after_ms=300)
    stt = YandexSttStreamer(speechkit_grpc_channel, SETTINGS, clock=LoopClock())
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    results = stt.start_recognition(audio)
    sent: list[int] = []
    await srv.wait_for(lambda: bool(srv.stt_sessions), 3.0)
    for _ in range(3):  # the third chunk reaches after_ms: the service aborts the stream
        await _step(srv, audio, sent)
    await srv.wait_for(lambda: srv.stt_sessions[0].done.is_set(), 3.0)
    assert srv.stt_sessions[0].ended == "fault"
    await srv.wait_for(lambda: len(srv.stt_sessions) == 2)  # the old stream's reader has ended
    for _ in range(3 if more_audio else 0):
        await _step(srv, audio, sent)
    audio.put_nowait(None)
    await srv.wait_for(lambda: srv.stt_sessions[1].done.is_set(), 3.0)
    assert srv.stt_sessions[1].ended == "eof"  # the new stream was half-closed
    assert sum(r.audio_bytes for r in srv.stt_sessions) == sum(sent) == stt.audio_bytes_sent
    assert stt.reconnects == 1 and results.empty()
    await stt.stop_recognition()


async def test_a_failing_request_generator_reconnects_instead_of_killing_recognition(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    make_speech: Callable[[str], bytes],
) -> None:
    # An odd-length frame makes a chunk audioop cannot measure: the request generator raises,
    # gRPC cancels the call locally and the reader saw a bare CancelledError (reader and
    # supervisor died silently). Now it is a retryable failure and recognition goes on.
    speechkit_standin.script = SttScript(default=UTTERANCES[:1])
    stt = YandexSttStreamer(speechkit_grpc_channel, SETTINGS, clock=LoopClock())
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    results = stt.start_recognition(audio)
    audio.put_nowait(bytes(321))
    feed(audio, silence(200))
    await speechkit_standin.wait_for(lambda: stt.reconnects == 1, 3.0)
    assert "cancelled locally" in str(stt.last_error) and "error" in str(stt.last_error)
    feed(audio, make_speech(UTTERANCES[0]) + silence(800), end=True)
    events = await collect(results, lambda ev: len(finals(ev)) == 1)
    assert finals(events)[0].text == UTTERANCES[0]
    assert not [e for e in events if isinstance(e, STTError)]
    await stt.stop_recognition()


class _BrokenReader(YandexSttStreamer):
    """Fault injection: the reader has a bug."""

    async def _read(self, stream: Any) -> STTError | None:
        raise RuntimeError("reader bug")


async def test_a_crashed_reader_is_an_in_band_error_not_a_silent_death(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    stt = _BrokenReader(speechkit_grpc_channel, SETTINGS, clock=LoopClock())
    results = stt.start_recognition(asyncio.Queue())
    [err] = await collect(results, lambda ev: len(ev) == 1, timeout=3.0)
    assert isinstance(err, STTError) and not err.retryable
    assert "RuntimeError: reader bug" in str(err)
    await stt.stop_recognition()


async def test_renewal_bounds_count_a_backlog_sent_faster_than_real_time(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    # Scaled down: renew after 1 s, at the latest 1.2 s (no pause: renew_quiet_ms is never met).
    # A 3.5 s backlog (as after an outage) goes out in a burst: stream age alone never got there.
    settings = replace(SETTINGS, renew_after_s=1.0, renew_grace_s=0.2, renew_quiet_ms=10**9)
    stt = YandexSttStreamer(speechkit_grpc_channel, settings, clock=LoopClock())
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    stt.start_recognition(audio)
    pcm = silence(3500)
    feed(audio, pcm, end=True)
    srv = speechkit_standin
    await srv.wait_for(
        lambda: (
            stt.streams_opened == len(srv.stt_sessions)
            and all(r.done.is_set() for r in srv.stt_sessions)
            and sum(r.audio_bytes for r in srv.stt_sessions) == len(pcm)
        ),
        5.0,
    )
    await stt.stop_recognition()
    per_stream = [r.audio_ms for r in srv.stt_sessions]
    assert len(per_stream) >= 3 and max(per_stream) <= 1200, per_stream


async def test_a_stream_that_never_starts_is_ended_by_the_stream_cap() -> None:
    # One stream per connection: B's call waits for a slot, its request generator is stuck on the
    # first write and never renews, so only the overall cap (renew + grace + drain + keepalive,
    # here 0.8 s) ends it. The cap used to be `loop.time()` seconds too late (hours after boot).
    server = SpeechKitStandin(max_concurrent_streams=1)
    await server.start()
    channel = speechkit_channel(server.endpoint, tls=False)
    a = YandexSttStreamer(channel, SETTINGS, clock=LoopClock())
    short = replace(SETTINGS, renew_after_s=0.3, renew_grace_s=0.0, drain_timeout_s=0.3, keepalive_s=0.2)
    b = YandexSttStreamer(channel, short, clock=LoopClock())
    try:
        a.start_recognition(asyncio.Queue())
        await server.wait_for(lambda: len(server.stt_sessions) == 1, 3.0)
        b_results = b.start_recognition(asyncio.Queue())
        # a's keepalive silence wakes wait_for every 0.5 s.
        await server.wait_for(lambda: b.reconnects >= 1, 5.0)
        assert "did not finish in time" in str(b.last_error)
        assert len(server.stt_sessions) == 1 and b_results.empty()
    finally:
        await b.stop_recognition()
        await a.stop_recognition()
        await channel.close()
        await server.close()


async def test_streams_that_fail_after_the_working_status_still_exhaust_the_reconnects(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    # Each stream gets its WORKING status and some audio, then fails: that is no progress, so the
    # streamer must give up (it used to reset its budget on any response and retry forever).
    speechkit_standin.fail_next_streams(10, grpc.StatusCode.UNAVAILABLE, after_ms=100)
    stt = YandexSttStreamer(
        speechkit_grpc_channel, replace(SETTINGS, reconnect_attempts=2), clock=LoopClock()
    )
    audio: asyncio.Queue[bytes | None] = asyncio.Queue()
    results = stt.start_recognition(audio)
    feed(audio, silence(3000))
    [err] = await collect(results, lambda ev: len(ev) == 1, timeout=5.0)
    await stt.stop_recognition()
    assert isinstance(err, STTError) and not err.retryable and "giving up after 2 reconnects" in str(err)
    assert stt.streams_opened == 3
    assert [r.ended for r in speechkit_standin.stt_sessions] == ["fault"] * 3
