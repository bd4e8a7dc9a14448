"""`serve` with a service-account key: SpeechKit calls carry a fresh IAM token from the provider."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bridge.composition import Composition
from bridge.settings import ProvidersSettings, Settings
from orchestrator.adapters.openai_settings import OpenAISettings
from orchestrator.adapters.speechkit import YandexSettings
from orchestrator.adapters.tts.breaker import BreakerTTS
from orchestrator.clock import LoopClock
from testkit.standins.iam_server import IamStandin
from testkit.standins.openai_server import OpenAIStandin
from testkit.standins.speechkit_server import SpeechKitStandin
from tests.test_yandex_iam import KEY_ID, SA_ID, _key_json, _rsa

MAP = str(Path(__file__).resolve().parent.parent / "dialogue_maps" / "cleaning_quote.ru.json")


async def test_speechkit_calls_use_the_refreshing_iam_token(
    speechkit_standin: SpeechKitStandin, openai_standin: OpenAIStandin, tmp_path: Path
) -> None:
    key = _rsa()
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(_key_json(key)))
    iam = IamStandin(key.public_key(), key_id=KEY_ID, service_account_id=SA_ID)
    await iam.start()
    settings = Settings(
        dialogue_map=MAP,
        providers=ProvidersSettings(tts="yandex", intents="local"),
        yandex=YandexSettings(
            service_account_key_file=str(key_file),
            iam_endpoint=iam.endpoint,
            stt_endpoint=speechkit_standin.endpoint,
            tts_endpoint=speechkit_standin.endpoint,
            tls=False,
        ),
        openai=OpenAISettings(base_url=openai_standin.base_url, api_key="test", moderation=False),
    )
    composition = Composition(settings, clock=LoopClock())
    try:
        services = await composition.build_services()  # warms the cache over gRPC with the token
        assert composition.iam_token() == "t1.standin.1"
        assert iam.issued == ["t1.standin.1"]
        # Each call's adapters are built with the provider's current token, on the one settings object.
        tts = services.tts_factory("call-1")
        assert isinstance(tts, BreakerTTS)  # behind the TTS circuit breaker
        adapters: list[Any] = [services.stt_factory("call-1"), tts.inner]
        for adapter in adapters:
            assert adapter._settings is settings.yandex
            assert ("authorization", "Bearer t1.standin.1") in adapter._metadata
    finally:
        await composition.aclose()
        await iam.close()
