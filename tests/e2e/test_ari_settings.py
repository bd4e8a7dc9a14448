"""AriSettings and AmiSettings/originate input checks (no Asterisk needed)."""

from __future__ import annotations

import pytest

from bridge.ami import AmiSettings, originate
from bridge.ari_controller import AriSettings


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"password": "p&ss w#rd"}, "AriSettings.password='p&ss w#rd'"),
        ({"app": "бот"}, "AriSettings.app='бот'"),
        ({"username": ""}, "AriSettings.username=''"),
        ({"audiosocket_host": "127.0.0.1"}, "expected host:port"),
        ({"audiosocket_host": "127.0.0.1:port"}, "expected host:port"),
        ({"timeout_s": 0}, "must be positive"),
    ],
)
def test_bad_ari_settings_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AriSettings(**kwargs)  # type: ignore[arg-type]


def test_url_safe_names_are_accepted() -> None:
    s = AriSettings(app="voice-bot_1", username="vb.user", password="Alnum123")
    assert s.app == "voice-bot_1"


@pytest.mark.parametrize(
    ("number", "app"), [("7999;rm", "voicebridge"), ("", "voicebridge"), ("100", "bad app")]
)
async def test_originate_rejects_bad_input_before_connecting(number: str, app: str) -> None:
    # Port 9 (discard) is never our AMI: a ValueError proves nothing was sent.
    with pytest.raises(ValueError, match="originate: "):
        await originate(AmiSettings(port=9), number, app=app, timeout_s=1)
