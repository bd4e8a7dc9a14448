"""Cache warming: every `audio` key synthesized once (real TTS through the SpeechKit stand-in)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from orchestrator.adapters.speechkit import YandexSettings
from orchestrator.adapters.tts.yandex import YandexTTSManager
from orchestrator.cache.audio_format import text_digest
from orchestrator.cache.memory import InMemoryAudioCache
from orchestrator.cache.redis_cache import RedisAudioCache
from orchestrator.cache.redis_settings import RedisSettings
from orchestrator.cache.warm import warm_cache
from orchestrator.dialogue_map.loader import parse_dialogue_map
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.domain.models import AudioChunk
from testkit.standins.speechkit_server import SpeechKitStandin

AUDIO = {
    "static:greeting": "Здравствуйте! Это служба доставки.",
    "filler:one_moment": "Секунду.",
    "static:emergency": "Извините, у нас неполадки.",
    "static:non_secure": "Я не могу на это ответить.",
}


def dialogue_map(audio: dict[str, str]) -> DialogueMap:
    data: dict[str, Any] = {
        "version": 1,
        "name": "warm test",
        "initial_state": "start",
        "settings": {
            "neutral_filler_keys": ["filler:one_moment"],
            "emergency_filler_key": "static:emergency",
            "non_secure_response_key": "static:non_secure",
            "error_playlist": [{"type": "cache", "key": "static:error"}],
        },
        "intents": {"yes": {"examples": ["да"]}},
        "states": {
            "start": {
                "system_response": {"playlist": [{"type": "cache", "key": "static:greeting"}]},
                "transitions": {"yes": "bye"},
            },
            "bye": {"system_response": {"playlist": []}, "action": "END_CALL"},
        },
        "audio": audio,
    }
    return parse_dialogue_map(data, "warm-test.json")


def tts(channel: grpc.aio.Channel) -> YandexTTSManager:
    return YandexTTSManager(channel, YandexSettings(tls=False))


async def test_warm_synthesizes_reports_and_is_idempotent(
    speechkit_standin: SpeechKitStandin,
    speechkit_grpc_channel: grpc.aio.Channel,
    capsys: pytest.CaptureFixture[str],
) -> None:
    m = dialogue_map(AUDIO)
    cache = InMemoryAudioCache()
    calls: list[tuple[int, int, str]] = []
    report = await warm_cache(m, tts(speechkit_grpc_channel), cache, progress=lambda *a: calls.append(a))
    assert sorted(report.synthesized) == sorted(AUDIO)
    assert report.missing_text == ["static:error"]  # played by the map, no text to make it from
    assert not report.ok and "static:error" in report.summary()
    for key in AUDIO:
        audio = await cache.get(key)
        assert audio is not None and audio.sample_rate == 8000 and len(audio.pcm) > 4000
    assert calls[0] == (0, 4, "static:greeting") and calls[-1] == (4, 4, "")
    # Second run: nothing to do.
    done_texts = len(speechkit_standin.tts_texts)
    again = await warm_cache(m, tts(speechkit_grpc_channel), cache, progress=False)
    assert again.synthesized == [] and sorted(again.skipped) == sorted(AUDIO)
    assert len(speechkit_standin.tts_texts) == done_texts
    assert capsys.readouterr().err == ""
    forced = await warm_cache(m, tts(speechkit_grpc_channel), cache, force=True)
    assert sorted(forced.synthesized) == sorted(AUDIO)
    assert "] 4/4" in capsys.readouterr().err  # the default progress bar


async def test_failures_are_reported_and_retried_next_time(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel, redis_url: str
) -> None:
    m = dialogue_map({**AUDIO, "static:error": "Что-то пошло не так."})
    cache = RedisAudioCache(RedisSettings(url=redis_url), prefix="warm:")
    try:
        speechkit_standin.fail_next_tts(1, grpc.StatusCode.UNAVAILABLE)
        report = await warm_cache(m, tts(speechkit_grpc_channel), cache, progress=None)
        assert (
            list(report.failed) == ["static:greeting"] and "UNAVAILABLE" in report.failed["static:greeting"]
        )
        assert len(report.synthesized) == 4 and not report.ok
        again = await warm_cache(m, tts(speechkit_grpc_channel), cache, progress=None)
        assert again.synthesized == ["static:greeting"] and again.ok
    finally:
        await cache.aclose()


async def test_changed_text_or_unreadable_value_is_synthesized_again(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel, redis_url: str
) -> None:
    cache = RedisAudioCache(RedisSettings(url=redis_url), prefix="warm-changed:")
    client = aioredis.Redis.from_url(redis_url)
    try:
        first = await warm_cache(dialogue_map(AUDIO), tts(speechkit_grpc_channel), cache, progress=None)
        assert sorted(first.synthesized) == sorted(AUDIO) and first.changed == []
        old = await cache.get("static:greeting")
        # The map's text changed for one key; another key's value got broken.
        new_text = "Добрый вечер! Это служба доставки."
        await client.set("warm-changed:filler:one_moment", b"VBA1 garbage")
        texts_before = len(speechkit_standin.tts_texts)
        m = dialogue_map({**AUDIO, "static:greeting": new_text})
        again = await warm_cache(m, tts(speechkit_grpc_channel), cache, progress=None)
        assert sorted(again.changed) == ["filler:one_moment", "static:greeting"]
        assert again.synthesized == [] and not again.failed
        assert sorted(again.skipped) == ["static:emergency", "static:non_secure"]
        assert speechkit_standin.tts_texts[texts_before:] == [new_text, AUDIO["filler:one_moment"]]
        assert (
            "2 changed" in again.summary()
            and "changed (synthesized again): static:greeting" in again.summary()
        )
        new = await cache.get_cached("static:greeting")
        assert new is not None and new.audio != old and new.text_sha256 == text_digest(new_text)
        assert await cache.get("filler:one_moment") is not None
        # Unchanged text: idempotent, nothing synthesized.
        third = await warm_cache(m, tts(speechkit_grpc_channel), cache, progress=None)
        assert third.synthesized == [] and third.changed == [] and sorted(third.skipped) == sorted(AUDIO)
        assert len(speechkit_standin.tts_texts) == texts_before + 2
    finally:
        await client.aclose()
        await cache.aclose()


async def test_a_value_stored_without_its_text_is_synthesized_again(
    speechkit_standin: SpeechKitStandin, speechkit_grpc_channel: grpc.aio.Channel, redis_url: str
) -> None:
    # Cached before the text hash existed (audio_format version 1): its text is unknown.
    cache = RedisAudioCache(RedisSettings(url=redis_url), prefix="warm-v1:")
    try:
        await cache.put("static:greeting", AudioChunk(bytes(1600), 8000))  # no text: version 1
        m = dialogue_map({"static:greeting": AUDIO["static:greeting"]})
        report = await warm_cache(m, tts(speechkit_grpc_channel), cache, progress=None)
        assert report.changed == ["static:greeting"]
        cached = await cache.get_cached("static:greeting")
        assert cached is not None and cached.text_sha256 == text_digest(AUDIO["static:greeting"])
    finally:
        await cache.aclose()
