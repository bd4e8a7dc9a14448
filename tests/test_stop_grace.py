"""Container stops give the drain its time: the bridge's stop grace (compose, Makefile) covers
the drain's own bound, else the supervisor SIGKILLs calls mid-drain."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _drain_bound_s() -> float:
    """What `VoicebridgeApp._drained` waits at most with the default settings."""
    s = Settings()
    return s.call.drain_timeout_s + s.call.apologise_timeout_s + s.call.cancel_bound_s + 3 * s.ari.timeout_s


def test_compose_and_make_give_the_bridge_a_stop_grace_past_the_drain() -> None:
    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    bridge = compose[compose.index("\n  bridge:") :]
    [grace] = re.findall(r"^    stop_grace_period: (\d+)s$", bridge, re.MULTILINE)
    assert int(grace) >= _drain_bound_s()
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    [timeout] = re.findall(r"compose down -t (\d+)", makefile)
    assert int(timeout) >= _drain_bound_s()
