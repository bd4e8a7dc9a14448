"""YandexSttStreamer against the SpeechKit stand-in on a real socket, fed real (espeak-ng) speech."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import grpc
import pytest
from yandex.cloud.ai.stt.v3 import stt_pb2, stt_service_pb2_grpc

from orchestrator.adapters.speechkit import YandexSettings, speechkit_channel
from orchestrator.adapters.stt import yandex as stt_yandex
from orchestrator.adapters.stt.yandex import YandexRecognitionStream, YandexSttStreamer, streaming_options
from orchestrator.adapters.stt.yandex_call import MAX_BATCH_MS, RecognizeCall
from orchestrator.clock import LoopClock
from orchestrator.contracts import RecognitionStream, SttEvent, STTStreamer
from orchestrator.domain.errors import STTError
from orchestrator.domain.models import SttResult
from testkit.standins.script import SttScript
from testkit.standins.speechkit_server import SpeechKitStandin

FRAME = 320
SETTINGS = YandexSettings(
    api_key="test-key", folder_id="folder-1", tls=False, reconnect_backoff_s=0.01, keepalive_s=0.5
)
UTTERANCES = ["Сколько стоят 2 пиццы?", "Да, оформляйте заказ."]
# The first as the raw final says it: a number in words, which normalization writes in digits.
RAW_FIRST = "сколько стоят две пиццы"
# Their finals as the adapter emits them: the first waits for its normalized text (it carries
# a number), the second carries none and goes out raw at once.
HEARD = [UTTERANCES[0], "да оформляйте заказ"]


def script(server: SpeechKitStandin, lines: list[str]) -> None:
    """Give the stand-in its utterances, the first of UTTERANCES heard raw as RAW_FIRST."""
    server.script = SttScript(default=lines)
    server.raw_texts[UTTERANCES[0]] = RAW_FIRST


def silence(ms: int) -> bytes:
    return bytes(16 * ms)


def tone(ms: int) -> bytes:
    """A 440 Hz tone, RMS about 2,100: loud (no pause to renew in), and no utterance with an
    empty script."""
    return b"".join(
        struct.pack("<h", round(3000 * math.sin(2 * math.pi * 440 * i / 8000))) for i in range(8 * ms)
    )


def feed(stream: RecognitionStream, pcm: bytes, *, end: bool = False) -> int:
    """Push `pcm` as 20 ms frames (the last one may be short), as the gateway does; returns the count."""
    n = 0
    for i in range(0, len(pcm), FRAME):
        stream.push_audio(pcm[i : i + FRAME])
        n += 1
    if end:
        stream.end_input()
    return n


async def collect(
    stream: RecognitionStream, done: Callable[[list[SttEvent]], bool], timeout: float = 10.0
) -> list[SttEvent]:
    """Results until `done(events)`; fails if the stream ends first."""
    events: list[SttEvent] = []
    it = aiter(stream)
    async with asyncio.timeout(timeout):
        while not done(events):
            events.append(await anext(it))
    return events


async def rest(stream: RecognitionStream, timeout: float = 10.0) -> list[SttEvent]:
    """Every result until the iteration ends."""
    async with asyncio.timeout(timeout):
        return [e async for e in stream]


async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll a client-side condition the stand-in cannot signal (bounded; every 10 ms)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - no event exists for a client-side counter
            await asyncio.sleep(0.01)


def finals(events: list[SttEvent]) -> list[SttResult]:
    return [e for e in events if isinstance(e, SttResult) and e.is_final]


async def test_partials_then_one_normalized_final_per_utterance(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    make_speech: Callable[[str], bytes],
) -> None:
    script(speechkit_standin, list(UTTERANCES))
    streamer: STTStreamer = YandexSttStreamer(
        speechkit_grpc_channel, SETTINGS, clock=LoopClock(), request_id="call-a"
    )
    stt = streamer.open_stream()
    for text in UTTERANCES:
        feed(stt, silence(600) + make_speech(text))
    feed(stt, silence(1000), end=True)
    events = await collect(stt, lambda ev: len(finals(ev)) == 2)
    assert await rest(stt) == []  # the input ended: iteration ends once the service is done
    assert stt.frames_dropped == 0
    await stt.aclose()

    assert not [e for e in events if isinstance(e, STTError)]
    # One final per utterance, normalized where it may carry a number (see HEARD).
    assert [f.text for f in finals(events)] == HEARD
    assert all(f.kind == "final" for f in finals(events))
    # Partials come before their final and grow word by word.
    first_final = events.index(finals(events)[0])
    partials = [e for e in events[:first_final] if isinstance(e, SttResult) and not e.is_final]
    assert partials and all(p.kind == "partial" for p in partials)
    texts = [p.text for p in partials]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
    assert RAW_FIRST.startswith(texts[-1])
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
    stt = YandexSttStreamer(
        speechkit_grpc_channel, settings, clock=LoopClock(), request_id="call-r"
    ).open_stream()
    pcm = silence(500) + make_speech(UTTERANCES[0]) + silence(800)
    feed(stt, pcm, end=True)
    await speechkit_standin.wait_for(lambda: stt.audio_bytes_sent == len(pcm))
    await speechkit_standin.wait_for(
        lambda: (
            len(speechkit_standin.stt_sessions) == stt.streams_opened
            and all(r.done.is_set() for r in speechkit_standin.stt_sessions)
        )
    )
    await stt.aclose()
    sessions = speechkit_standin.stt_sessions
    assert len(sessions) >= len(pcm) // 8000  # renewed every ~0.5 s of audio
    assert sum(r.audio_bytes for r in sessions) == len(pcm)  # every byte reached the service
    assert all(r.ended == "eof" for r in sessions)  # each stream was half-closed cleanly
    assert stt.frames_dropped == 0


async def test_keepalive_holds_an_idle_stream_open(make_speech: Callable[[str], bytes]) -> None:
    server = SpeechKitStandin(SttScript(default=UTTERANCES[:1]), idle_timeout_s=0.6)
    await server.start()
    channel = speechkit_channel(server.endpoint, tls=False)
    stt = YandexSttStreamer(
        channel, replace(SETTINGS, keepalive_s=0.2), clock=LoopClock(), request_id="call-k"
    ).open_stream()
    try:
        feed(stt, silence(300) + make_speech(UTTERANCES[0]) + silence(700))
        events = await collect(stt, lambda ev: len(finals(ev)) == 1)
        # The caller is silent now (the bot speaks): nothing is pushed.
        await server.wait_for(lambda: server.stt_sessions[0].silence_ms >= 1500)
        assert not server.stt_sessions[0].done.is_set()
        assert stt.streams_opened == 1 and stt.silence_ms_sent >= 1500
        assert stt.results_queued == 0 and not [e for e in events if isinstance(e, STTError)]
    finally:
        await stt.aclose()
        await channel.close()
        await server.close()


async def test_without_keepalive_the_idle_cutoff_fires_and_the_stream_reconnects() -> None:
    server = SpeechKitStandin(idle_timeout_s=0.3)
    await server.start()
    channel = speechkit_channel(server.endpoint, tls=False)
    stt = YandexSttStreamer(channel, replace(SETTINGS, keepalive_s=5.0), clock=LoopClock()).open_stream()
    try:
        feed(stt, silence(200))
        await server.wait_for(lambda: stt.streams_opened == 2)
        # Recovered by reconnecting: counted and logged, not a result.
        assert stt.reconnects == 1 and stt.results_queued == 0
        assert stt.last_error is not None and stt.last_error.retryable
        assert "DEADLINE_EXCEEDED" in str(stt.last_error)
        assert server.stt_sessions[0].ended == "idle"
    finally:
        await stt.aclose()
        await channel.close()
        await server.close()


async def test_retryable_failure_reconnects_and_recognition_goes_on(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    make_speech: Callable[[str], bytes],
) -> None:
    script(speechkit_standin, UTTERANCES[:1])
    speechkit_standin.fail_next_streams(1, grpc.StatusCode.UNAVAILABLE, after_ms=100)
    stt = YandexSttStreamer(
        speechkit_grpc_channel, SETTINGS, clock=LoopClock(), request_id="call-f"
    ).open_stream()
    feed(stt, silence(1000) + make_speech(UTTERANCES[0]) + silence(800), end=True)
    events = await collect(stt, lambda ev: len(finals(ev)) == 1)
    events += await rest(stt)
    await stt.aclose()
    assert not [e for e in events if isinstance(e, STTError)]  # recovered: nothing in-band
    assert stt.reconnects == 1 and stt.last_error is not None and stt.last_error.retryable
    # gRPC Python may report a server abort that races our write as INTERNAL (see speechkit.py).
    assert "UNAVAILABLE" in str(stt.last_error) or "INTERNAL" in str(stt.last_error)
    assert finals(events)[0].text == UTTERANCES[0]
    assert stt.streams_opened == 2
    assert speechkit_standin.stt_sessions[0].ended == "fault"


async def test_answered_at_is_the_services_last_answer_and_forgotten_when_a_call_fails(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    # The barge-in decision takes a service that answered (the WORKING status that opens each
    # stream, before any words) as working; a failed call is not, until the next one answers.
    speechkit_standin.fail_next_streams(1, grpc.StatusCode.UNAVAILABLE, after_ms=200)
    clock = LoopClock()
    settings = replace(SETTINGS, reconnect_backoff_s=0.5)  # long enough to see the gap
    stt = YandexSttStreamer(speechkit_grpc_channel, settings, clock=clock).open_stream()
    assert stt.answered_at is None  # nothing from the service yet
    opened = clock.now()
    await until(lambda: stt.answered_at is not None)
    first = stt.answered_at
    assert first is not None and first >= opened
    feed(stt, silence(400))  # the stream fails after 200 ms of audio
    await until(lambda: stt.answered_at is None)
    failed_at = clock.now()
    await until(lambda: stt.answered_at is not None)  # the next call's WORKING
    second = stt.answered_at
    assert second is not None and second >= failed_at
    assert stt.streams_opened == 2 and stt.reconnects == 1
    stt.end_input()
    await rest(stt)
    await stt.aclose()


@pytest.mark.parametrize("in_flight", ["speech", "end_of_input"])
async def test_audio_in_flight_when_the_service_fails_is_resent(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    make_speech: Callable[[str], bytes],
    in_flight: str,
) -> None:
    # The flake of the test above, made deterministic: the service fails after hearing 100 ms,
    # but the client has written more by then (a backlog goes out at full speed). The stand-in
    # takes that audio without hearing it, as a real failure loses requests in flight. The next
    # stream used to get only what was still queued: the utterance, or with it the end of input
    # (then "failed after the input ended"), went with the dead stream.
    script(speechkit_standin, UTTERANCES[:1])
    pcm = silence(1000) + make_speech(UTTERANCES[0]) + silence(800)
    total_ms = len(pcm) // 16
    # "speech": all but the last 300 ms of silence, so what was still queued has no speech in it.
    unheard = total_ms - 100 - 300 if in_flight == "speech" else None
    speechkit_standin.fail_next_streams(1, grpc.StatusCode.UNAVAILABLE, after_ms=100, unheard_ms=unheard)
    stt = YandexSttStreamer(speechkit_grpc_channel, SETTINGS, clock=LoopClock()).open_stream()
    feed(stt, pcm, end=True)
    events = await collect(stt, lambda ev: len(finals(ev)) == 1)
    events += await rest(stt)
    await stt.aclose()
    assert not [e for e in events if isinstance(e, STTError)]  # recovered: nothing in-band
    assert stt.reconnects == 1 and stt.streams_opened == 2
    dead, new = speechkit_standin.stt_sessions
    assert dead.ended == "fault" and dead.unheard_bytes > 0 and dead.utterances == []
    assert max(dead.chunk_ms) == MAX_BATCH_MS  # the backlog went in batches: 100 ms was heard of one
    if in_flight == "end_of_input":
        assert dead.audio_bytes + dead.unheard_bytes == len(pcm)  # it had everything, then failed
    # Nothing was finalized on the dead stream: the new one heard all of it, then half-closed.
    assert new.audio_bytes == len(pcm) and new.ended == "eof"
    [final] = finals(events)
    assert final.text == UTTERANCES[0]
    # Its times are positions in the call's audio: the speech starts at 1000 ms.
    assert final.audio_start_ms is not None and 900 <= final.audio_start_ms <= 1300


async def test_after_a_failure_only_audio_no_final_covers_is_resent(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    make_speech: Callable[[str], bytes],
) -> None:
    # The first utterance is finalized on the first stream; the service fails 700 ms into the
    # pause after it and takes the rest (the second utterance and the end of input) unheard. The
    # next stream resends from the end of that final: the second utterance is recognised, the
    # first is not heard twice, and result times go on along the call's audio. The whole input
    # is a backlog, sent in requests of up to a second: the final ends inside one, whose tail
    # alone is resent (and the stream fails inside another, whose rest goes unheard).
    script(speechkit_standin, list(UTTERANCES))
    s1, s2 = (make_speech(t) for t in UTTERANCES)
    pcm = silence(600) + s1 + silence(1000) + s2 + silence(800)
    speech2_ms = (600 + len(s1) // 16) + 1000
    speechkit_standin.fail_next_streams(1, after_ms=speech2_ms - 300, unheard_ms=None)
    stt = YandexSttStreamer(
        speechkit_grpc_channel,
        SETTINGS,
        clock=LoopClock(),
        request_id="call-c",  # one script
    ).open_stream()
    feed(stt, pcm, end=True)
    events = await collect(stt, lambda ev: len(finals(ev)) == 2)
    events += await rest(stt)
    await stt.aclose()
    assert not [e for e in events if isinstance(e, STTError)]
    assert [f.text for f in finals(events)] == HEARD and stt.reconnects == 1
    dead, new = speechkit_standin.stt_sessions
    assert dead.ended == "fault" and dead.utterances == UTTERANCES[:1]
    assert max(dead.chunk_ms) == MAX_BATCH_MS  # batched, not 100 ms per request
    assert new.ended == "eof" and new.utterances == UTTERANCES[1:]
    f1, f2 = finals(events)
    assert f1.audio_end_ms is not None and f2.audio_start_ms is not None
    assert new.audio_bytes == len(pcm) - f1.audio_end_ms * 16  # from the end of the final on
    assert f1.audio_end_ms <= f2.audio_start_ms and abs(f2.audio_start_ms - speech2_ms) <= 200


async def test_non_retryable_failure_ends_recognition(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    speechkit_standin.fail_next_streams(1, grpc.StatusCode.PERMISSION_DENIED)
    # No audio: the abort comes right after the session options, with no write to race it.
    stt = YandexSttStreamer(speechkit_grpc_channel, SETTINGS, clock=LoopClock()).open_stream()
    [err] = await rest(stt)  # the error is the last item: iteration ends after it
    assert isinstance(err, STTError)
    assert not err.retryable and "PERMISSION_DENIED" in str(err)
    await stt.aclose()
    assert stt.streams_opened == 1


async def test_gives_up_after_bounded_reconnects(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    speechkit_standin.fail_next_streams(10, grpc.StatusCode.UNAVAILABLE)
    settings = replace(SETTINGS, reconnect_attempts=2)
    stt = YandexSttStreamer(speechkit_grpc_channel, settings, clock=LoopClock()).open_stream()
    [err] = await rest(stt)
    await stt.aclose()
    assert isinstance(err, STTError) and not err.retryable and "giving up" in str(err)
    assert stt.reconnects == 2 and stt.streams_opened == 3


async def test_unreachable_service_is_a_retryable_error() -> None:
    channel = speechkit_channel("127.0.0.1:1", tls=False)
    stt = YandexSttStreamer(
        channel,
        replace(SETTINGS, connect_timeout_s=0.2, reconnect_attempts=1),
        clock=LoopClock(),
    ).open_stream()
    [err] = await rest(stt)
    await stt.aclose()
    await channel.close()
    assert isinstance(err, STTError) and not err.retryable
    assert "giving up after 1 reconnects" in str(err) and "not reachable" in str(err)
    assert stt.reconnects == 1


async def test_aclose_is_idempotent_ends_iteration_and_leaves_no_tasks(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    stt = YandexSttStreamer(
        speechkit_grpc_channel, SETTINGS, clock=LoopClock(), request_id="c1"
    ).open_stream()
    feed(stt, silence(300))
    await speechkit_standin.wait_for(lambda: bool(speechkit_standin.stt_sessions))
    reading = asyncio.create_task(rest(stt), name="test-reader")
    await stt.aclose()
    await stt.aclose()
    assert await reading == []  # a waiting consumer is released
    assert [e async for e in stt] == []  # and iteration stays ended
    left = [t for t in asyncio.all_tasks() if t.get_name().startswith("stt")]
    assert left == []
    sent = stt.audio_bytes_sent
    feed(stt, silence(100), end=True)  # ignored after aclose()
    assert stt.audio_bytes_sent == sent and stt.frames_dropped == 0


@pytest.mark.parametrize("send_eou", [True, False])
async def test_final_without_refinement_goes_out_raw(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    make_speech: Callable[[str], bytes],
    send_eou: bool,
) -> None:
    # No refinement: the held final is released by the eou_update, else by the bounded wait.
    script(speechkit_standin, UTTERANCES[:1])
    speechkit_standin.send_refinement = False
    speechkit_standin.send_eou = send_eou
    settings = replace(SETTINGS, final_refinement_wait_s=0.2)
    stt = YandexSttStreamer(speechkit_grpc_channel, settings, clock=LoopClock()).open_stream()
    feed(stt, silence(300) + make_speech(UTTERANCES[0]) + silence(800))
    events = await collect(stt, lambda ev: len(finals(ev)) == 1)
    stt.end_input()
    events += await rest(stt)
    await stt.aclose()
    assert finals(events)[0].text == RAW_FIRST
    assert len(finals(events)) == 1  # exactly one final


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Двести пятьдесят рублей.", "Двести пятьдесят рублей."),  # a number: waits for the normalized text
        ("Можно мне?", "Можно мне?"),  # incomplete without its "?": waits too
        ("Да, оформляйте заказ.", "да оформляйте заказ"),  # neither: the raw final goes at once
    ],
)
async def test_only_a_final_that_may_carry_a_number_or_needs_its_question_mark_waits(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    make_speech: Callable[[str], bytes],
    line: str,
    expected: str,
) -> None:
    # The refinement comes 0.3 s after its final, well within the 5 s wait: which text goes out
    # shows whether the final waited for it.
    speechkit_standin.script = SttScript(default=[line])
    speechkit_standin.refinement_delay_s = 0.3
    speechkit_standin.send_eou = False  # the eou_update would release a held final early
    settings = replace(SETTINGS, final_refinement_wait_s=5.0)
    stt = YandexSttStreamer(speechkit_grpc_channel, settings, clock=LoopClock()).open_stream()
    feed(stt, silence(300) + make_speech(line) + silence(800))
    events = await collect(stt, lambda ev: len(finals(ev)) == 1)
    stt.end_input()
    events += await rest(stt)
    await stt.aclose()
    assert [f.text for f in finals(events)] == [expected]  # exactly one final, the late refinement dropped


async def test_renewal_waits_for_a_pause_and_the_call_script_carries_on(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    make_speech: Callable[[str], bytes],
) -> None:
    # Renewal is due after 0.5 s of audio but must not cut an utterance: audio is fed at 4x real
    # time so the partials reach the adapter while the speech is still being sent.
    # A cut utterance would make the stand-in release the next line early, and then "Лишнее".
    script(speechkit_standin, [*UTTERANCES, "Лишнее."])
    settings = replace(SETTINGS, renew_after_bytes=8000, renew_grace_s=30.0)
    stt = YandexSttStreamer(
        speechkit_grpc_channel, settings, clock=LoopClock(), request_id="call-p"
    ).open_stream()
    pcm = b"".join(silence(600) + make_speech(t) for t in UTTERANCES) + silence(900)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n, i in enumerate(range(0, len(pcm), FRAME)):
        await asyncio.sleep(max(0.0, start + n * 0.005 - loop.time()))  # pacing, not waiting
        stt.push_audio(pcm[i : i + FRAME])
    stt.end_input()
    events = await collect(stt, lambda ev: len(finals(ev)) == 2)
    events += await rest(stt)  # ends once every stream has half-closed and drained
    assert all(r.done.is_set() for r in speechkit_standin.stt_sessions)
    await stt.aclose()
    assert [f.text for f in finals(events)] == HEARD
    f1, f2 = finals(events)
    assert f1.audio_end_ms is not None and f2.audio_start_ms is not None
    assert f2.audio_start_ms >= f1.audio_end_ms  # each final covers its own speech
    sessions = speechkit_standin.stt_sessions
    assert len(sessions) >= 2  # it did renew, in the pause
    assert [u for r in sessions for u in r.utterances] == UTTERANCES  # none was split
    assert sum(r.audio_bytes for r in sessions) == len(pcm)


async def _step(server: SpeechKitStandin, stt: YandexRecognitionStream, sent: list[int]) -> None:
    """Push one 100 ms batch and wait until the current stream has heard all audio so far.

    (No final covers silence, so a stream after a reconnect starts by resending everything.)
    """
    chunk = silence(100)
    feed(stt, chunk)
    sent.append(len(chunk))
    await server.wait_for(lambda: server.stt_sessions[-1].audio_bytes == sum(sent), 3.0)


@pytest.mark.parametrize("more_audio", [True, False])
async def test_reconnect_loses_no_audio_and_eof_right_after_still_half_closes(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel, more_audio: bool
) -> None:
    # The dead stream's request generator used to take the next chunk (or the end of input) from
    # the shared queue: ~100 ms lost per reconnect, or a new stream that never half-closed.
    # Nothing was finalized on the dead stream, so the new one resends all of it first.
    srv = speechkit_standin
    srv.fail_next_streams(1, grpc.StatusCode.UNAVAILABLE, after_ms=300)
    stt = YandexSttStreamer(speechkit_grpc_channel, SETTINGS, clock=LoopClock()).open_stream()
    sent: list[int] = []
    await srv.wait_for(lambda: bool(srv.stt_sessions), 3.0)
    for _ in range(3):  # the third chunk reaches after_ms: the service aborts the stream
        await _step(srv, stt, sent)
    await srv.wait_for(lambda: srv.stt_sessions[0].done.is_set(), 3.0)
    assert srv.stt_sessions[0].ended == "fault"
    await srv.wait_for(lambda: len(srv.stt_sessions) == 2)  # the old stream's reader has ended
    for _ in range(3 if more_audio else 0):
        await _step(srv, stt, sent)
    stt.end_input()
    await srv.wait_for(lambda: srv.stt_sessions[1].done.is_set(), 3.0)
    assert srv.stt_sessions[1].ended == "eof"  # the new stream was half-closed
    assert srv.stt_sessions[1].audio_bytes == sum(sent)  # it heard every byte
    assert stt.audio_bytes_sent == sum(r.audio_bytes for r in srv.stt_sessions)  # resent counts again
    assert stt.reconnects == 1 and await rest(stt) == []
    await stt.aclose()


async def test_a_failing_request_generator_reconnects_instead_of_killing_recognition(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    make_speech: Callable[[str], bytes],
) -> None:
    # An odd-length frame makes a chunk audioop cannot measure: the request generator raises,
    # gRPC cancels the call locally and the reader saw a bare CancelledError (reader and
    # supervisor died silently). Now it is a retryable failure and recognition goes on.
    script(speechkit_standin, UTTERANCES[:1])
    stt = YandexSttStreamer(speechkit_grpc_channel, SETTINGS, clock=LoopClock()).open_stream()
    stt.push_audio(bytes(321))
    feed(stt, silence(200))
    await speechkit_standin.wait_for(lambda: stt.reconnects == 1, 3.0)
    assert "cancelled locally" in str(stt.last_error) and "error" in str(stt.last_error)
    feed(stt, make_speech(UTTERANCES[0]) + silence(800), end=True)
    events = await collect(stt, lambda ev: len(finals(ev)) == 1)
    assert finals(events)[0].text == UTTERANCES[0]
    assert not [e for e in events if isinstance(e, STTError)]
    await stt.aclose()


async def _broken_reader(*_: object) -> STTError | None:
    """Fault injection: the reader has a bug."""
    raise RuntimeError("reader bug")


async def test_a_crashed_reader_is_an_in_band_error_not_a_silent_death(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stt_yandex, "read_call", _broken_reader)
    stt = YandexRecognitionStream(speechkit_grpc_channel, SETTINGS, clock=LoopClock())
    [err] = await rest(stt, timeout=3.0)
    assert isinstance(err, STTError) and not err.retryable
    assert "RuntimeError: reader bug" in str(err)
    await stt.aclose()


async def test_a_reader_that_crashed_after_the_service_answered_forgets_the_answer(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A bug in the response handling after the WORKING status: recognition is over (the in-band
    # error), so the barge-in decision must not go on taking the service as working.
    handle = RecognizeCall.handle

    def crash_after_it(call: RecognizeCall, resp: stt_pb2.StreamingResponse) -> None:
        handle(call, resp)
        raise RuntimeError("handler bug")

    monkeypatch.setattr(RecognizeCall, "handle", crash_after_it)
    stt = YandexSttStreamer(speechkit_grpc_channel, SETTINGS, clock=LoopClock()).open_stream()
    [err] = await rest(stt, timeout=3.0)
    assert isinstance(err, STTError) and not err.retryable and "handler bug" in str(err)
    assert stt.answered_at is None
    await stt.aclose()


async def test_renewal_bounds_count_a_backlog_sent_faster_than_real_time(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    # Scaled down: renew after 1 s, at the latest 1.2 s (no pause: renew_quiet_ms is never met).
    # A 3.5 s backlog (as after an outage) goes out in a burst, in requests of up to a second:
    # stream age alone never got there, and a request must not carry a stream past the bound.
    settings = replace(SETTINGS, renew_after_s=1.0, renew_grace_s=0.2, renew_quiet_ms=10**9)
    stt = YandexSttStreamer(speechkit_grpc_channel, settings, clock=LoopClock()).open_stream()
    pcm = silence(3500)
    feed(stt, pcm, end=True)
    srv = speechkit_standin
    await srv.wait_for(
        lambda: (
            stt.streams_opened == len(srv.stt_sessions)
            and all(r.done.is_set() for r in srv.stt_sessions)
            and sum(r.audio_bytes for r in srv.stt_sessions) == len(pcm)
        ),
        5.0,
    )
    await stt.aclose()
    per_stream = [r.audio_ms for r in srv.stt_sessions]
    assert len(per_stream) >= 3 and max(per_stream) <= 1200, per_stream
    assert max(ms for r in srv.stt_sessions for ms in r.chunk_ms) == MAX_BATCH_MS  # it was batched


class SlotHolder:
    """A raw RecognizeStreaming call that sends its options, then nothing until `release()`."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._release = asyncio.Event()
        self.call = stt_service_pb2_grpc.RecognizerStub(channel).RecognizeStreaming(self._requests())

    async def _requests(self) -> AsyncIterator[stt_pb2.StreamingRequest]:
        yield stt_pb2.StreamingRequest(session_options=streaming_options(SETTINGS))
        await self._release.wait()

    async def running(self) -> None:
        """Return once the service answered (the stream holds its slot)."""
        async with asyncio.timeout(3.0):
            await self.call.read()  # the WORKING status

    def release(self) -> None:
        self._release.set()


async def test_a_stream_that_never_starts_is_ended_by_the_stream_cap() -> None:
    # One stream per connection: B's call waits for a slot, its request generator is stuck on the
    # first write and never renews, so only the overall cap (renew + grace + drain + keepalive,
    # here 0.8 s) ends it. The cap used to be `loop.time()` seconds too late (hours after boot).
    server = SpeechKitStandin(max_concurrent_streams=1)
    await server.start()
    channel = speechkit_channel(server.endpoint, tls=False)
    a = YandexSttStreamer(channel, SETTINGS, clock=LoopClock()).open_stream()
    short = replace(SETTINGS, renew_after_s=0.3, renew_grace_s=0.0, drain_timeout_s=0.3, keepalive_s=0.2)
    b: YandexRecognitionStream | None = None
    try:
        await server.wait_for(lambda: len(server.stt_sessions) == 1, 3.0)
        b = YandexSttStreamer(channel, short, clock=LoopClock()).open_stream()
        # a's keepalive silence wakes wait_for every 0.5 s.
        await server.wait_for(lambda: b is not None and b.reconnects >= 1, 5.0)
        assert "did not finish in time" in str(b.last_error)
        assert len(server.stt_sessions) == 1 and b.results_queued == 0
    finally:
        if b is not None:
            await b.aclose()
        await a.aclose()
        await channel.close()
        await server.close()


async def test_a_stalled_service_drops_exactly_the_overflow_at_the_one_buffer() -> None:
    # The service takes nothing (its only stream slot is held by another call, so our call's
    # request generator is stuck on its first write). Audio piles up in the recognizer's one
    # buffer; past its capacity the oldest frames go, each counted once. When the service frees
    # up, exactly the buffered (newest) frames reach it.
    server = SpeechKitStandin(max_concurrent_streams=1, idle_timeout_s=30.0)
    await server.start()
    channel = speechkit_channel(server.endpoint, tls=False)
    holder = SlotHolder(channel)
    settings = replace(SETTINGS, max_buffered_s=0.2, keepalive_s=5.0)  # 10 frames
    stt: YandexRecognitionStream | None = None
    try:
        await holder.running()
        stt = YandexSttStreamer(channel, settings, clock=LoopClock()).open_stream()
        await until(lambda: stt is not None and stt.streams_opened == 1)  # our call is under way
        capacity = 10
        pushed = feed(stt, b"".join(bytes([i]) * FRAME for i in range(1, 26)))  # 25 frames
        assert stt.frames_dropped == pushed - capacity == 15
        assert stt.audio_bytes_sent == 0 and len(server.stt_sessions) == 1  # nothing reached it
        holder.release()  # the holder half-closes: our call gets the slot
        await server.wait_for(lambda: len(server.stt_sessions) == 2, 3.0)
        stt.end_input()
        assert await rest(stt) == []
        assert server.stt_sessions[1].ended == "eof"
        assert server.stt_sessions[1].audio_bytes == capacity * FRAME == stt.audio_bytes_sent
        assert stt.frames_dropped == 15  # counted once, at the one drop point
    finally:
        holder.release()
        if stt is not None:
            await stt.aclose()
        holder.call.cancel()
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
    ).open_stream()
    feed(stt, silence(3000))
    [err] = await rest(stt, timeout=5.0)
    await stt.aclose()
    assert isinstance(err, STTError) and not err.retryable and "giving up after 2 reconnects" in str(err)
    assert stt.streams_opened == 3
    assert [r.ended for r in speechkit_standin.stt_sessions] == ["fault"] * 3


async def test_batches_of_100_ms_even_when_frames_trickle_in(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    # Real-time frames arrive one at a time; the request generator still sends 100 ms per request
    # (it waits for a whole batch), and a partial batch goes out at the end of input. (A long
    # keepalive: a partial batch also goes out when it ends, which a slow machine must not cause.)
    settings = replace(SETTINGS, keepalive_s=3.0)
    stt = YandexSttStreamer(speechkit_grpc_channel, settings, clock=LoopClock()).open_stream()
    srv = speechkit_standin
    await srv.wait_for(lambda: bool(srv.stt_sessions), 3.0)
    for i in range(12):
        stt.push_audio(silence(20))
        if i % 5 == 4:
            await srv.wait_for(lambda n=i: srv.stt_sessions[0].audio_bytes == (n + 1) * FRAME, 3.0)
        else:
            await asyncio.sleep(0.005)  # pacing, not waiting
    stt.end_input()
    assert await rest(stt) == []
    rec = srv.stt_sessions[0]
    assert rec.audio_bytes == 12 * FRAME and rec.chunks == 3  # 5 + 5 + the last 2
    await stt.aclose()


async def test_a_backlog_goes_out_in_requests_of_up_to_a_second(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    # Audio queued faster than it went out (a busy loop, a reconnect's wait) goes as several
    # batches per request: at one 100 ms request per gRPC write, a call whose writes took longer
    # than 100 ms never caught up. 2.56 s queued before the stream starts, then the end of input.
    stt = YandexSttStreamer(speechkit_grpc_channel, SETTINGS, clock=LoopClock()).open_stream()
    pcm = silence(2560)
    feed(stt, pcm, end=True)
    assert await rest(stt) == []
    await stt.aclose()
    [rec] = speechkit_standin.stt_sessions
    assert rec.audio_bytes == len(pcm) and rec.ended == "eof"
    assert rec.chunk_ms == [MAX_BATCH_MS, MAX_BATCH_MS, 560]  # the rest goes at the end of input


async def test_after_a_backlog_real_time_audio_goes_100_ms_per_request(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    # A backlog goes in whole batches (560 ms queued: 500 together, 60 wait for their batch);
    # audio that then comes in real time goes 100 ms per request again. (A long keepalive: a
    # partial batch also goes out when it ends, which a slow machine must not cause.)
    stt = YandexSttStreamer(
        speechkit_grpc_channel, replace(SETTINGS, keepalive_s=3.0), clock=LoopClock()
    ).open_stream()
    srv = speechkit_standin
    await srv.wait_for(lambda: bool(srv.stt_sessions), 3.0)
    rec = srv.stt_sessions[0]
    feed(stt, silence(560))
    await srv.wait_for(lambda: rec.audio_ms == 500, 3.0)
    feed(stt, silence(40))  # completes the held 60 ms to a batch
    await srv.wait_for(lambda: rec.audio_ms == 600, 3.0)
    for i in range(10):  # real time: one frame at a time
        stt.push_audio(silence(20))
        if i % 5 == 4:
            await srv.wait_for(lambda n=i: rec.audio_ms == 600 + (n + 1) * 20, 3.0)
        else:
            await asyncio.sleep(0.005)  # pacing, not waiting
    stt.end_input()
    assert await rest(stt) == []
    await stt.aclose()
    assert rec.chunk_ms == [500, 100, 100, 100]


async def test_renewal_in_a_pause_at_the_end_of_a_backlog(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    # Renewal is due after 1 s of audio (16,000 B: a slow start cannot make it due by age) and
    # waits for a pause (300 ms quiet). A backlog of loud audio with a 300 ms pause at the end
    # of its first request, which reaches the soft bound:
    # the pause is measured 100 ms at a time, as it would have gone in real time, so the stream
    # renews there (the request's level as a whole is loud: the renewal would wait for the
    # 31 s hard bound).
    settings = replace(
        SETTINGS, renew_after_s=60.0, renew_after_bytes=16_000, renew_grace_s=30.0, renew_quiet_ms=300
    )
    stt = YandexSttStreamer(speechkit_grpc_channel, settings, clock=LoopClock()).open_stream()
    pcm = tone(700) + silence(300) + tone(1000)
    feed(stt, pcm, end=True)
    assert await rest(stt) == []
    await stt.aclose()
    sessions = speechkit_standin.stt_sessions
    assert [r.chunk_ms for r in sessions] == [[MAX_BATCH_MS], [MAX_BATCH_MS]]
    assert all(r.ended == "eof" for r in sessions)


async def test_renewal_in_a_pause_inside_a_backlog(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    # Renewal is due after 0.5 s of audio (8,000 B: a slow start cannot make it due by age) and
    # waits for a pause (300 ms quiet). A backlog of loud audio whose pause (0.6-0.9 s) lies
    # inside what would be its first 1 s request: a request stops at the soft bound and audio
    # then goes 100 ms per request, as in real time, so the stream renews in that pause (at
    # 0.9 s), not at the hard bound (30 s later) mid-speech.
    settings = replace(
        SETTINGS, renew_after_s=60.0, renew_after_bytes=8000, renew_grace_s=30.0, renew_quiet_ms=300
    )
    stt = YandexSttStreamer(speechkit_grpc_channel, settings, clock=LoopClock()).open_stream()
    pcm = tone(600) + silence(300) + tone(1500)
    feed(stt, pcm, end=True)
    assert await rest(stt) == []
    await stt.aclose()
    sessions = speechkit_standin.stt_sessions
    assert [r.audio_ms for r in sessions] == [900, 1500]
    assert sessions[0].chunk_ms == [500, 100, 100, 100, 100]  # batched up to the soft bound
    assert all(r.ended == "eof" for r in sessions)


class LateClock:
    """The loop's clock, `ahead` seconds later: a stream that is older than its audio."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def now(self) -> float:
        return asyncio.get_running_loop().time() + self.ahead


async def test_renewal_by_stream_age_in_a_pause_inside_a_backlog(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    # The stream is past its 1 s (wall-clock age) before any audio is sent: renewal waits for
    # a pause, so the backlog goes 100 ms per request and the pause at 0.2-0.5 s is seen,
    # though the audio counted is far from the bound.
    clock = LateClock()
    # (A long keepalive: keepalive silence before the audio would itself be a pause.)
    settings = replace(SETTINGS, renew_after_s=1.0, renew_grace_s=30.0, renew_quiet_ms=300, keepalive_s=3.0)
    stt = YandexSttStreamer(speechkit_grpc_channel, settings, clock=clock).open_stream()
    srv = speechkit_standin
    await srv.wait_for(lambda: bool(srv.stt_sessions), 3.0)
    clock.ahead = 5.0
    feed(stt, tone(200) + silence(300) + tone(1000), end=True)
    assert await rest(stt) == []
    await stt.aclose()
    assert [r.audio_ms for r in srv.stt_sessions] == [500, 1000]


async def test_audio_origin_is_the_first_frames_start_and_survives_a_reconnect(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel
) -> None:
    # BargeIn puts results on the call clock from this origin; results' times run on across a
    # reconnect (base_ms), so a reset there (or a clock read per frame) would misplace them.
    speechkit_standin.fail_next_streams(1, grpc.StatusCode.UNAVAILABLE, after_ms=100)
    clock = LoopClock()
    stt = YandexSttStreamer(speechkit_grpc_channel, SETTINGS, clock=clock).open_stream()
    assert stt.audio_origin is None  # nothing fed yet
    before = clock.now()
    feed(stt, silence(400))
    origin = stt.audio_origin
    assert origin is not None and before - 0.02 <= origin <= clock.now() - 0.02  # the first frame's start
    await until(lambda: stt.reconnects == 1)
    assert clock.now() > origin + 0.02  # time went on: a later read would differ
    feed(stt, silence(200), end=True)
    await rest(stt)
    await stt.aclose()
    assert stt.streams_opened == 2
    assert stt.audio_origin == origin
