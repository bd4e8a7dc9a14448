"""The settings a command uses, as the text of its `--help`: generated from the settings models
(`bridge.settings.Settings` and each section's model), so it cannot drift from them.

One line per setting: the TOML key (`[section] key`, or `key` at the top level), its environment
variable and its default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

from pydantic import BaseModel

from bridge.settings import Settings, env_var

__all__ = ["settings_epilog", "settings_rows"]


def _fields(model: object) -> Iterator[tuple[str, object, object]]:
    """(name, annotation, default) of a pydantic model or a (pydantic) dataclass; nothing else."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        for name, info in model.model_fields.items():
            default = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
            yield name, info.annotation, default
    elif isinstance(model, type) and dataclasses.is_dataclass(model):
        for f in dataclasses.fields(model):
            if f.default is not dataclasses.MISSING:
                value: object = f.default
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:
                value = None
            yield f.name, f.type, value


def _is_section(annotation: object) -> bool:
    return isinstance(annotation, type) and (
        issubclass(annotation, BaseModel) or dataclasses.is_dataclass(annotation)
    )


def _show(value: object) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"' if value else '""'
    return str(value)


def settings_rows(sections: Sequence[str] | None = None) -> list[tuple[str, str, str]]:
    """(TOML key, environment variable, default) of every setting in `sections` (names of
    `Settings` fields: a section such as "ari" or a top-level key such as "dialogue_map"; None: all),
    in the order `Settings` declares them."""
    rows: list[tuple[str, str, str]] = []
    for name, info in Settings.model_fields.items():
        if sections is not None and name not in sections:
            continue
        if _is_section(info.annotation):
            for key, _annotation, default in _fields(info.annotation):
                rows.append((f"[{name}] {key}", env_var(name, key), _show(default)))
        else:
            rows.append((name, env_var(name), _show(info.default)))
    return rows


def settings_epilog(sections: Sequence[str] | None = None) -> str:
    """The `--help` text listing the settings of `sections` (see `settings_rows`); a plain note
    when a command reads no settings (an empty `sections`)."""
    if sections is not None and not sections:
        return "Settings: none (this command reads no settings file or VOICEBRIDGE_* variables)."
    rows = settings_rows(sections)
    key_w = max(len(r[0]) for r in rows)
    env_w = max(len(r[1]) for r in rows)
    lines = [
        "Settings (TOML file given by --config; the environment variable overrides it; default):",
        *(f"  {key:<{key_w}}  {env:<{env_w}}  {default}" for key, env, default in rows),
    ]
    return "\n".join(lines)
