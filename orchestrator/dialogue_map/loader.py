"""Load a dialogue map from JSON, with errors that name the file, the JSON path and the problem.

Three layers of checks, each reported as `DialogueMapError(file, json_path, problem)`:
1. JSON syntax (line and column), and duplicate object keys (a second "quote" state would
   silently replace the first);
2. the pydantic models (types, required fields, key patterns), with pydantic's error location
   turned into a JSON path like `$.states.quote.system_response.playlist[2].type`;
3. cross-references a map needs to run at all: the initial state exists, every transition names
   a known intent and a known state, every entity an intent names is declared, regex patterns
   compile, `set_variables` expressions and `tts` templates parse.
`reference_problems()` returns every layer-3 problem; the lint reports all of them, the loader
raises on the first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.dialogue_map.expressions import ExpressionError, parse_expression
from orchestrator.dialogue_map.models import DialogueMap, DigitsEntity, Playlist, RegexEntity, TtsItem
from orchestrator.dialogue_map.templates import TemplateError, validate_template
from orchestrator.domain.errors import DialogueMapError

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Problem = tuple[str, str]  # (json_path, problem)


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKeyError(k)
        out[k] = v
    return out


def json_path(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """`("states", "quote", "playlist", 2)` -> `$.states.quote.playlist[2]`."""
    out = "$"
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.match(part):
            out += f".{part}"
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out


def _data_loc(loc: tuple[int | str, ...], data: Any) -> list[int | str]:
    """Drop pydantic's discriminator tags (`..., 2, "cache", "key"`) by walking the input data."""
    out: list[int | str] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict):
            if part in node:
                node = node[part]
            elif node.get("type") == part and i < len(loc) - 1:
                continue  # a union tag, not a key of the input
            else:
                node = None
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
        out.append(part)
    return out


def validation_problems(exc: ValidationError, data: Any) -> list[Problem]:
    """Every pydantic error as (JSON path, problem)."""
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = _data_loc(tuple(err["loc"]), data)
        msg = err["msg"]
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown field (not allowed here)"
        elif kind == "missing":
            msg = "required field is missing"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            loc.append("type")
        elif kind == "string_pattern_mismatch" and ":" in str(err.get("ctx", {}).get("pattern")):
            msg = f"bad audio key {err['input']!r}: must look like 'static:name' or 'filler:name'"
        problems.append((json_path(loc), msg))
    return problems


def parse_json(text: str, file: str) -> Any:
    """Parse JSON text; raises `DialogueMapError` with line and column on a syntax error."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise DialogueMapError(
            file, "$", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except _DuplicateKeyError as exc:
        raise DialogueMapError(
            file, "$", f"duplicate key {exc.key!r} in one JSON object (the last would win)"
        ) from None


def read_map_json(path: str | Path) -> Any:
    """Read and parse a map file (no model validation)."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DialogueMapError(file, "$", f"cannot read the file: {exc}") from None
    return parse_json(text, file)


def _playlists(m: DialogueMap) -> Iterator[tuple[str, Playlist]]:
    """Every playlist of the map with its JSON path."""
    yield "$.settings.error_playlist", m.settings.error_playlist
    for sid, st in m.states.items():
        base = json_path(("states", sid))
        yield f"{base}.system_response.playlist", st.system_response.playlist
        if st.error_playlist is not None:
            yield f"{base}.error_playlist", st.error_playlist
    for iid, intent in m.intents.items():
        yield f"{json_path(('intents', iid))}.clarify_playlist", intent.clarify_playlist
    for fid, faq in m.faq.items():
        yield f"{json_path(('faq', fid))}.answer", faq.answer


def tts_templates(m: DialogueMap) -> Iterator[tuple[str, str]]:
    """Every `tts` item's template with its JSON path."""
    for path, playlist in _playlists(m):
        for i, item in enumerate(playlist):
            if isinstance(item, TtsItem):
                yield f"{path}[{i}].text_template", item.text_template


def audio_key_uses(m: DialogueMap) -> Iterator[tuple[str, str]]:
    """Every cache/filler key the map plays, with the JSON path of the use."""
    s = m.settings
    for i, key in enumerate(s.neutral_filler_keys):
        yield f"$.settings.neutral_filler_keys[{i}]", key
    yield "$.settings.emergency_filler_key", s.emergency_filler_key
    if s.drain_goodbye_key is not None:
        yield "$.settings.drain_goodbye_key", s.drain_goodbye_key
    yield "$.settings.non_secure_response_key", s.non_secure_response_key
    for sid, st in m.states.items():
        for i, key in enumerate(st.fillers):
            yield f"{json_path(('states', sid))}.fillers[{i}]", key
    for path, playlist in _playlists(m):
        for i, item in enumerate(playlist):
            if not isinstance(item, TtsItem):
                yield f"{path}[{i}].key", item.key


def reference_problems(m: DialogueMap) -> list[Problem]:
    """Everything that stops a validated map from running, as (JSON path, problem)."""
    problems: list[Problem] = []
    if m.initial_state not in m.states:
        problems.append(("$.initial_state", f"unknown state {m.initial_state!r}"))
    for group, ids in (("states", m.states), ("intents", m.intents), ("entities", m.entities)):
        for key in ids:
            if not _IDENT.match(key):
                problems.append(
                    (json_path((group, key)), "id must be letters, digits and _ (not first digit)")
                )

    def check_transitions(base: str, transitions: dict[str, str]) -> None:
        for intent_id, target in transitions.items():
            path = f"{base}{json_path((intent_id,))[1:]}"
            if intent_id not in m.intents:
                problems.append((path, f"unknown intent {intent_id!r}"))
            if target not in m.states:
                problems.append((path, f"unknown target state {target!r}"))

    for sid, st in m.states.items():
        base = json_path(("states", sid))
        check_transitions(f"{base}.transitions", st.transitions)
        for var, expr in st.set_variables.items():
            try:
                parse_expression(expr)
            except ExpressionError as exc:
                problems.append((f"{base}.set_variables{json_path((var,))[1:]}", str(exc)))
    check_transitions("$.global_transitions", m.global_transitions)

    def check_dtmf(base: str, table: dict[str, str]) -> None:
        for digit, intent_id in table.items():
            if intent_id not in m.intents:
                problems.append((f"{base}{json_path((digit,))[1:]}", f"unknown intent {intent_id!r}"))

    check_dtmf("$.global_dtmf", m.global_dtmf)
    for sid, st in m.states.items():
        base = json_path(("states", sid))
        check_dtmf(f"{base}.dtmf", st.dtmf)
        if st.transfer is not None and st.transfer.on_transfer_failed not in m.states:
            problems.append(
                (f"{base}.transfer.on_transfer_failed", f"unknown state {st.transfer.on_transfer_failed!r}")
            )
        collect = st.collect_digits
        if collect is not None:
            spec = m.entities.get(collect.entity)
            if not isinstance(spec, DigitsEntity):
                problems.append(
                    (f"{base}.collect_digits.entity", f"{collect.entity!r} is not a digits entity")
                )
            if collect.intent not in m.intents:
                problems.append((f"{base}.collect_digits.intent", f"unknown intent {collect.intent!r}"))
    for iid, intent in m.intents.items():
        base = json_path(("intents", iid))
        for field in ("entities", "required_entities"):
            for i, name in enumerate(getattr(intent, field)):
                if name not in m.entities:
                    problems.append((f"{base}.{field}[{i}]", f"unknown entity {name!r}"))
    for eid, spec in m.entities.items():
        if isinstance(spec, RegexEntity):
            try:
                re.compile(spec.pattern)
            except re.error as exc:
                problems.append((f"{json_path(('entities', eid))}.pattern", f"bad regex: {exc}"))
    for path, template in tts_templates(m):
        try:
            validate_template(template)
        except TemplateError as exc:
            problems.append((path, str(exc)))
    return problems


def parse_dialogue_map(data: Any, file: str) -> DialogueMap:
    """Validate parsed JSON as a dialogue map; raises `DialogueMapError` on the first problem."""
    try:
        m = DialogueMap.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, data)
        path, problem = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DialogueMapError(file, path, problem + more) from None
    refs = reference_problems(m)
    if refs:
        path, problem = refs[0]
        more = f" (and {len(refs) - 1} more problems)" if len(refs) > 1 else ""
        raise DialogueMapError(file, path, problem + more)
    return m


def load_dialogue_map(path: str | Path) -> DialogueMap:
    """Read, parse and validate the map at `path`; raises `DialogueMapError`."""
    return parse_dialogue_map(read_map_json(path), str(path))
