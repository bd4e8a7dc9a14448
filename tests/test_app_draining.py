"""`VoicebridgeApp.draining` is read-only: only `begin_drain()` starts a drain (it also refuses
new calls and fixes the deadline, which a bare flag write would skip)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.app import VoicebridgeApp
from bridge.settings import Settings
from bridge.stop_signals import Drainable

MAP = str(Path(__file__).resolve().parent.parent / "dialogue_maps" / "cleaning_quote.ru.json")


async def test_draining_is_read_only_and_begin_drain_sets_it() -> None:
    app = VoicebridgeApp(Settings(dialogue_map=MAP))
    drainable: Drainable = app  # mypy checks the protocol (read-only property)
    assert drainable.draining is False
    with pytest.raises(AttributeError):
        app.draining = True  # type: ignore[misc]
    assert app.draining is False
    app.begin_drain()
    assert app.draining is True
    assert app.drain.deadline is not None
