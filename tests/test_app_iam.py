"""`serve` with a service-account key: SpeechKit calls carry a fresh IAM token from the provider."""

from __future__ import annotations

import json
from pathlib import Path

from bridge.app import VoicebridgeApp
from bridge.settings import OpenAISection, ProvidersSection, Settings, YandexSection
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
        providers=ProvidersSection(tts="yandex", intents="local"),
        yandex=YandexSection(
            service_account_key_file=str(key_file),
            iam_endpoint=iam.endpoint,
            stt_endpoint=speechkit_standin.endpoint,
            tts_endpoint=speechkit_standin.endpoint,
            tls=False,
        ),
        openai=OpenAISection(base_url=openai_standin.base_url, api_key="test", moderation=False),
    )
    app = VoicebridgeApp(settings)
    try:
        app.services = await app.build_services()  # warms the cache over gRPC with the token
        assert ("authorization", "Bearer t1.standin.1") in app._yandex().metadata("call-1")
        assert iam.issued == ["t1.standin.1"]
    finally:
        await app.close()
        await iam.close()
