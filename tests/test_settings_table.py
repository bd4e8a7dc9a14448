"""Every field of every settings section is named in the README's settings table.

The table (README "Settings") is where an operator looks a setting up; a field added to a
settings class and not to its row is a setting nobody can find. Rows read
``| `[section]` | `Class` (`path/to/module.py`) | ... |``; each field must appear in its row as
`` `name` ``.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path

import pydantic

README = Path(__file__).resolve().parents[1] / "README.md"
_ROW = re.compile(r"^\| `\[(?P<section>[a-z_]+)\]` \| `(?P<cls>[A-Za-z_]+)` \(`(?P<path>[a-z_/]+)\.py`\) \|")


def _rows() -> list[tuple[str, type, str]]:
    rows = []
    for line in README.read_text(encoding="utf-8").splitlines():
        m = _ROW.match(line)
        if m:
            module = importlib.import_module(m["path"].replace("/", "."))
            rows.append((m["section"], getattr(module, m["cls"]), line))
    return rows


def _fields(cls: type) -> list[str]:
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    assert issubclass(cls, pydantic.BaseModel), cls
    return list(cls.model_fields)


def test_the_table_has_the_sections() -> None:
    sections = {s for s, _, _ in _rows()}
    assert {"vad", "interruption", "echo", "gc", "campaign", "audiosocket", "call"} <= sections


def test_every_settings_field_is_in_its_row() -> None:
    missing = {s: m for s, cls, row in _rows() if (m := [f for f in _fields(cls) if f"`{f}`" not in row])}
    assert missing == {}
