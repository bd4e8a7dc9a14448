"""AriSettings, AmiSettings and originate input checks (no Asterisk needed)."""

from __future__ import annotations

import pytest

from bridge.ami import AmiSettings, originate
from bridge.ari import AriSettings

RULE = r"ASCII letters, digits and \. _ ~ -"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"password": "p&ss w#rd"}, rf"password\n.*{RULE}"),
        ({"app": "бот"}, rf"app\n.*{RULE}"),
        ({"username": ""}, rf"username\n.*{RULE}"),
        ({"audiosocket_host": "127.0.0.1"}, r"audiosocket_host\n.*expected host:port"),
        ({"audiosocket_host": "127.0.0.1:port"}, r"audiosocket_host\n.*expected host:port"),
        ({"timeout_s": 0}, r"timeout_s\n.*greater than 0"),
        ({"handler_grace_s": -1}, r"handler_grace_s\n.*greater than 0"),
    ],
)
def test_bad_ari_settings_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AriSettings(**kwargs)  # type: ignore[arg-type]


def test_url_safe_names_are_accepted() -> None:
    s = AriSettings(app="voice-bot_1", username="vb.user", password="Alnum.1~x-y_z")
    assert (s.app, s.password) == ("voice-bot_1", "Alnum.1~x-y_z")


@pytest.mark.parametrize("field", ["username", "trunk", "context"])
def test_ami_names_follow_the_same_rule(field: str) -> None:
    # (The AMI secret has its own rule, anything but line breaks: tests/test_settings.py.)
    with pytest.raises(ValueError, match=rf"{field}\n.*{RULE}"):
        AmiSettings(**{field: "a b"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("number", "app"), [("7999;rm", "voicebridge"), ("", "voicebridge"), ("100", "bad app")]
)
async def test_originate_rejects_bad_input_before_connecting(number: str, app: str) -> None:
    # Port 9 (discard) is never our AMI: a ValueError proves nothing was sent.
    with pytest.raises(ValueError, match="originate: "):
        await originate(AmiSettings(port=9), number, app=app, timeout_s=1)
