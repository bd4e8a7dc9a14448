"""`{{ session.variables.x }}` placeholders of `tts` playlist items, filled without running code.

Grammar (whitespace inside the braces is free): `{{ session.variables.NAME }}` or
`{{ session.call_id }}`. Anything else between `{{` and `}}`, or a stray `{{`/`}}`, is a
`TemplateError`: the text is matched with one regular expression and looked up in a dict, never
evaluated (no eval, no Jinja), so `{{ __import__('os') }}` is just an unsupported placeholder.

Values render for Russian speech synthesis:
- int: digits, no grouping ("67500"; SpeechKit reads it as a number);
- float: integral values as ints ("68250.0" -> "68250"), else rounded to 2 decimals with trailing
  zeros dropped and a decimal comma ("45.5" -> "45,5"), the Russian way, which SpeechKit reads as
  "сорок пять целых пять десятых" (a dot may be read as a date or a version number);
- bool: "да" / "нет"; str: as is, except a string of 5 or more digits only (a digits entity's
  value: a phone, contract or order number; quantities are ints and floats): in groups the way
  Russians dictate them (`digit_groups`: the last four as two pairs, the rest in threes from the
  right), "89161234567" -> "8 916 123 45 67", so SpeechKit reads groups, not one large number;
- time of day: "10:30" (SpeechKit reads it "десять тридцать"); date: "среду, 25 июня" (the
  weekday in the accusative, then day and month, for "на {{ ... }}" / "в {{ ... }}": the caller
  hears which day was understood, "в следующую пятницу" included).
A missing variable, a None value or a non-scalar value (list, dict) raises `TemplateError` naming
the variable; the Orchestrator treats it as an EXECUTION_ERROR of the turn.
"""

from __future__ import annotations

import math
import re
from datetime import date, time
from typing import Any

from orchestrator.domain.errors import VoicebridgeError
from orchestrator.domain.models import SessionState

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_VARIABLE = re.compile(r"^session\.variables\.([A-Za-z_][A-Za-z0-9_]*)$")
_CALL_ID = "session.call_id"
_MONTHS_GEN = ("января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа",
               "сентября", "октября", "ноября", "декабря")  # fmt: skip
_WEEKDAYS_ACC = ("понедельник", "вторник", "среду", "четверг", "пятницу", "субботу", "воскресенье")


class TemplateError(VoicebridgeError):
    """A template is malformed or names a variable the session does not have."""

    def __init__(self, message: str, *, template: str, variable: str | None = None) -> None:
        super().__init__(message)
        self.template = template
        self.variable = variable


def _placeholders(template: str) -> list[tuple[re.Match[str], str | None]]:
    """Each placeholder with its variable name (None for call_id); raises on anything else."""
    found: list[tuple[re.Match[str], str | None]] = []
    for m in _PLACEHOLDER.finditer(template):
        inner = m.group(1).strip()
        if inner == _CALL_ID:
            found.append((m, None))
            continue
        vm = _VARIABLE.match(inner)
        if vm is None:
            raise TemplateError(
                f"unsupported placeholder {m.group(0)!r}: only "
                "{{ session.variables.NAME }} and {{ session.call_id }} are allowed",
                template=template,
            )
        found.append((m, vm.group(1)))
    rest = _PLACEHOLDER.sub("", template)
    if "{{" in rest or "}}" in rest:
        raise TemplateError(f"unbalanced '{{{{' or '}}}}' in {template!r}", template=template)
    return found


def validate_template(template: str) -> None:
    """Raise `TemplateError` if `template` has a malformed or unsupported placeholder."""
    _placeholders(template)


def template_variables(template: str) -> set[str]:
    """Names of the session variables `template` uses (raises `TemplateError` if malformed)."""
    return {name for _, name in _placeholders(template) if name is not None}


def format_value(value: Any, *, name: str = "?", template: str = "") -> str:
    """Render one variable's value for Russian speech (see the module docstring)."""
    if isinstance(value, bool):
        return "да" if value else "нет"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TemplateError(
                f"variable {name!r} is not a finite number: {value!r}",
                template=template,
                variable=name,
            )
        rounded = round(value, 2)
        if rounded.is_integer():
            return str(int(rounded))
        return f"{rounded:.2f}".rstrip("0").replace(".", ",")
    if isinstance(value, str):
        return digit_groups(value) if len(value) >= 5 and value.isascii() and value.isdigit() else value
    if isinstance(value, time):
        return f"{value.hour}:{value.minute:02d}"
    if isinstance(value, date):
        return f"{_WEEKDAYS_ACC[value.weekday()]}, {value.day} {_MONTHS_GEN[value.month - 1]}"
    raise TemplateError(
        f"variable {name!r} has a value of type {type(value).__name__} that cannot be spoken",
        template=template,
        variable=name,
    )


def digit_groups(digits: str) -> str:
    """A digit string spoken in groups: "89161234567" -> "8 916 123 45 67", "123456" -> "12 34 56"."""
    head, tail = digits[:-4], [digits[-4:-2], digits[-2:]]
    first = len(head) % 3 or 3
    groups = [head[:first], *(head[i : i + 3] for i in range(first, len(head), 3))] if head else []
    return " ".join([*groups, *tail])


def render_template(template: str, session: SessionState) -> str:
    """Fill the placeholders of `template` from `session`; raises `TemplateError`."""
    parts: list[str] = []
    pos = 0
    for m, name in _placeholders(template):
        parts.append(template[pos : m.start()])
        if name is None:
            parts.append(session.call_id)
        else:
            value = session.variables.get(name)
            if value is None:
                raise TemplateError(
                    f"template {template!r} needs session variable {name!r}, which is not set",
                    template=template,
                    variable=name,
                )
            parts.append(format_value(value, name=name, template=template))
        pos = m.end()
    parts.append(template[pos:])
    return "".join(parts)
