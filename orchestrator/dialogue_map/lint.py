"""`voicebridge map lint`: every problem of a dialogue map at once, each with its JSON path.

Errors (the map would misbehave on a call; exit status 1):
- anything the loader rejects (JSON syntax, model, cross-references), all of them, not only the
  first;
- a dead end: a state with no transitions of its own and no `action: END_CALL` or `TRANSFER`
  (the caller could only get out through the global transitions or the LLM, forever); a
  TRANSFER state's `on_transfer_failed` counts as a way on for reachability;
- a template or `set_variables` variable that no entity and no `set_variables` produces;
- an audio key (cache/filler item, state filler, settings key) with no text in `audio`, so
  `voicebridge cache warm` cannot produce it and the caller would hear silence;
- a required entity that is not among the intent's own entities (it can never be extracted
  from the words that trigger the intent);
- impossible entity bounds: a number entity whose `min` is above its `max`, a digits entity
  whose `min_length` is above its `max_length`, business hours that close before they open;
- a regex entity example its pattern does not match.
Warnings (exit status 0): unreachable states, intents no transition uses, `audio` texts no one
plays, transitions of END_CALL states, required entities without a clarify playlist, the same
example phrase in two intents or in an intent and a FAQ entry, a regex entity with no examples.

Checks from layers above (the classifier's confusions, `orchestrator.intents.confusion`) come in
as `checks`: dialogue maps sit below intents and never import them.
"""

from __future__ import annotations

import re
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from pydantic import ValidationError

from orchestrator.dialogue_map.expressions import ExpressionError, expression_variables
from orchestrator.dialogue_map.loader import (
    audio_key_uses,
    json_path,
    read_map_json,
    reference_problems,
    tts_templates,
    validation_problems,
)
from orchestrator.dialogue_map.models import DialogueMap, DigitsEntity, NumberEntity, RegexEntity
from orchestrator.dialogue_map.templates import TemplateError, template_variables
from orchestrator.domain.errors import DialogueMapError
from orchestrator.text import normalize

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class LintIssue:
    """One finding of the lint."""

    severity: Severity
    json_path: str
    message: str


# A check of a valid map from a layer above (e.g. the classifier's confusions).
MapCheck = Callable[[DialogueMap], "list[LintIssue]"]


def lint_map(path: str | Path, checks: Sequence[MapCheck] = ()) -> list[LintIssue]:
    """Every problem of the map at `path`; `checks` run on a map that loaded."""
    try:
        data = read_map_json(path)
    except DialogueMapError as exc:
        return [LintIssue("error", exc.json_path, exc.problem)]
    try:
        m = DialogueMap.model_validate(data)
    except ValidationError as exc:
        return [LintIssue("error", p, msg) for p, msg in validation_problems(exc, data)]
    issues = lint_dialogue_map(m)
    for check in checks:
        issues += check(m)
    return issues


def lint_dialogue_map(m: DialogueMap) -> list[LintIssue]:
    """Every problem of a validated map (cross-references included)."""
    issues = [LintIssue("error", p, msg) for p, msg in reference_problems(m)]
    issues += _graph_issues(m)
    issues += _variable_issues(m)
    issues += _audio_issues(m)
    issues += _intent_issues(m)
    issues += _entity_issues(m)
    return issues


def _entity_issues(m: DialogueMap) -> list[LintIssue]:
    issues: list[LintIssue] = []
    for eid, spec in m.entities.items():
        base = json_path(("entities", eid))
        if isinstance(spec, NumberEntity) and spec.min is not None and spec.max is not None:
            if spec.min > spec.max:
                issues.append(
                    LintIssue("error", base, f"min {spec.min:g} is above max {spec.max:g}: no number can fit")
                )
        elif isinstance(spec, DigitsEntity) and spec.min_length > spec.max_length:
            issues.append(
                LintIssue(
                    "error",
                    base,
                    f"min_length {spec.min_length} is above max_length {spec.max_length}: no digits can fit",
                )
            )
        elif isinstance(spec, RegexEntity):
            issues += _regex_issues(base, spec)
    hours = m.settings.business_hours
    if hours.open >= hours.close:
        issues.append(
            LintIssue(
                "error",
                "$.settings.business_hours",
                f"business hours close ({hours.close}) before they open ({hours.open})",
            )
        )
    return issues


def _regex_issues(base: str, spec: RegexEntity) -> list[LintIssue]:
    try:
        rx = re.compile(spec.pattern)
    except re.error:
        return []  # already reported by reference_problems()
    if not spec.examples:
        return [LintIssue("warning", f"{base}.pattern", "no examples: add phrases the pattern must match")]
    return [
        LintIssue("error", f"{base}.examples[{i}]", f"the pattern does not match its example {ex!r}")
        for i, ex in enumerate(spec.examples)
        if rx.search(ex) is None
    ]


def _state_path(sid: str) -> str:
    return json_path(("states", sid))


def _graph_issues(m: DialogueMap) -> list[LintIssue]:
    issues: list[LintIssue] = []
    reached: set[str] = set()
    queue = deque([m.initial_state] if m.initial_state in m.states else [])
    globals_added = False
    while queue:
        sid = queue.popleft()
        if sid in reached or sid not in m.states:
            continue
        reached.add(sid)
        queue.extend(m.states[sid].transitions.values())
        transfer = m.states[sid].transfer
        if transfer is not None:
            queue.append(transfer.on_transfer_failed)
        if not globals_added:  # global transitions apply from any state reached
            queue.extend(m.global_transitions.values())
            globals_added = True
    for sid, st in m.states.items():
        if sid not in reached:
            issues.append(
                LintIssue(
                    "warning",
                    _state_path(sid),
                    f"state {sid!r} is unreachable from the initial state {m.initial_state!r}",
                )
            )
        if st.action == "END_CALL":
            if st.transitions:
                issues.append(
                    LintIssue(
                        "warning",
                        f"{_state_path(sid)}.transitions",
                        "an END_CALL state's transitions are never used",
                    )
                )
        elif not st.transitions and st.action != "TRANSFER":
            issues.append(
                LintIssue(
                    "error",
                    _state_path(sid),
                    f"dead end: state {sid!r} has no transitions and no END_CALL action",
                )
            )
    return issues


def _produced_variables(m: DialogueMap) -> set[str]:
    produced = set(m.entities)
    for st in m.states.values():
        produced |= set(st.set_variables)
    return produced


def _variable_issues(m: DialogueMap) -> list[LintIssue]:
    issues: list[LintIssue] = []
    produced = _produced_variables(m)
    for path, template in tts_templates(m):
        try:
            names = template_variables(template)
        except TemplateError:
            continue  # already reported by reference_problems()
        for name in sorted(names - produced):
            issues.append(
                LintIssue(
                    "error",
                    path,
                    f"unknown template variable {name!r}: no entity and no set_variables produces it",
                )
            )
    for sid, st in m.states.items():
        for var, expr in st.set_variables.items():
            try:
                names = expression_variables(expr)
            except ExpressionError:
                continue
            for name in sorted(names - produced):
                issues.append(
                    LintIssue(
                        "error",
                        f"{_state_path(sid)}.set_variables{json_path((var,))[1:]}",
                        f"unknown variable {name!r} in {expr!r}: no entity and no set_variables produces it",
                    )
                )
    return issues


def _audio_issues(m: DialogueMap) -> list[LintIssue]:
    issues: list[LintIssue] = []
    used: set[str] = set()
    for path, key in audio_key_uses(m):
        used.add(key)
        if key not in m.audio:
            issues.append(
                LintIssue("error", path, f"audio key {key!r} has no text in $.audio: no one can produce it")
            )
    for key in m.audio:
        if key not in used:
            issues.append(
                LintIssue("warning", json_path(("audio", key)), f"audio key {key!r} is never played")
            )
    return issues


def _intent_issues(m: DialogueMap) -> list[LintIssue]:
    issues: list[LintIssue] = []
    used = set(m.global_transitions)
    for st in m.states.values():
        used |= set(st.transitions)
    seen: dict[str, str] = {}  # normalised example -> where
    for iid, intent in m.intents.items():
        base = json_path(("intents", iid))
        if iid not in used:
            issues.append(LintIssue("warning", base, f"intent {iid!r} is not used by any transition"))
        for i, name in enumerate(intent.required_entities):
            if name not in intent.entities:
                issues.append(
                    LintIssue(
                        "error",
                        f"{base}.required_entities[{i}]",
                        f"required entity {name!r} is not among the intent's entities",
                    )
                )
        if intent.required_entities and not intent.clarify_playlist:
            issues.append(
                LintIssue(
                    "warning",
                    f"{base}.clarify_playlist",
                    "required entities but no clarify playlist: the caller is not told what is missing",
                )
            )
        for i, ex in enumerate(intent.examples):
            issues += _duplicate(seen, normalize(ex), f"{base}.examples[{i}]")
    for fid, faq in m.faq.items():
        for i, q in enumerate(faq.questions):
            issues += _duplicate(seen, normalize(q), f"{json_path(('faq', fid))}.questions[{i}]")
    return issues


def _duplicate(seen: dict[str, str], text: str, path: str) -> list[LintIssue]:
    other = seen.setdefault(text, path)
    # Paths of one intent share the prefix before ".examples": repeats inside one are harmless.
    if other == path or other.rsplit(".", 1)[0] == path.rsplit(".", 1)[0]:
        return []
    return [LintIssue("warning", path, f"the same phrase {text!r} is also at {other}")]


def _map_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.glob("*.json") if p.name != "schema.json")
    return [path]


def run_map_lint(path: str, *, out: TextIO | None = None, checks: Sequence[MapCheck] = ()) -> int:
    """Lint a map file (or every `*.json` map of a directory); print `file: path: message`.

    Returns the exit status: 0 when there are no errors (warnings allowed), 1 otherwise.
    """
    stream = out if out is not None else sys.stdout
    files = _map_files(Path(path))
    if not files:
        print(f"{path}: no dialogue maps (*.json) found", file=stream)
        return 1
    errors = 0
    for file in files:
        for issue in lint_map(file, checks):
            errors += issue.severity == "error"
            print(f"{file}: {issue.json_path}: {issue.severity}: {issue.message}", file=stream)
    return 1 if errors else 0
