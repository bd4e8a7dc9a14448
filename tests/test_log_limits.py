"""RateLimitedLog; the limit settings refuse what is not finite and positive."""

from __future__ import annotations

import logging

import pytest

from bridge.settings import load_settings
from orchestrator.domain.errors import ConfigError
from orchestrator.log_limits import RateLimitedLog


def test_repeats_within_the_period_are_held_back_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("t"), period_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        assert limited.warning("k", "bad thing %d", 1)
        assert not any(limited.warning("k", "bad thing %d", i) for i in range(2, 50))
        assert limited.warning("other", "another kind")  # keys are limited separately
        now[0] = 10.0
        assert limited.warning("k", "bad thing %d", 50)
    assert [r.getMessage() for r in caplog.records] == [
        "bad thing 1",
        "another kind",
        "bad thing 50 (48 similar suppressed)",
    ]
    assert limited.suppressed_total == 48


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("VOICEBRIDGE_AUDIOSOCKET__MEDIA_TIMEOUT_S", "nan"),
        ("VOICEBRIDGE_AUDIOSOCKET__MEDIA_TIMEOUT_S", "inf"),
        ("VOICEBRIDGE_AUDIOSOCKET__MAX_ACCEPTS_PER_S", "0"),
        ("VOICEBRIDGE_AUDIOSOCKET__MAX_CONNECTIONS", "-1"),
        ("VOICEBRIDGE_CALL__MAX_CALLS", "0"),
    ],
)
def test_limits_must_be_finite_and_positive(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        load_settings(environ={var: value})
