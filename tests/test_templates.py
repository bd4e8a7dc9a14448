"""Templates and set_variables expressions: filled and computed without ever running code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.dialogue_map.expressions import (
    ExpressionError,
    evaluate,
    expression_variables,
    parse_expression,
)
from orchestrator.dialogue_map.templates import (
    TemplateError,
    format_value,
    render_template,
    template_variables,
    validate_template,
)
from orchestrator.domain.errors import VoicebridgeError
from orchestrator.domain.models import SessionState


def session(**variables: Any) -> SessionState:
    return SessionState(call_id="call-7", variables=variables)


# --- templates ---


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ session.variables.final_price }}", "6750"),
        ("{{session.variables.final_price}}", "6750"),
        ("{{  session.variables.final_price\t}} рублей", "6750 рублей"),
        (
            "Цена: {{ session.variables.final_price }}, день: {{ session.variables.day }}.",
            "Цена: 6750, день: субботу.",
        ),
        ("звонок {{ session.call_id }}", "звонок call-7"),
        ("без подстановок { x } и }", "без подстановок { x } и }"),
    ],
)
def test_render(template: str, expected: str) -> None:
    assert render_template(template, session(final_price=6750, day="субботу")) == expected


@pytest.mark.parametrize(
    ("value", "spoken"),
    [
        (6750, "6750"),
        (6750.0, "6750"),
        (45.5, "45,5"),
        (1234.567, "1234,57"),
        (0.1 + 0.2, "0,3"),
        (2.999, "3"),
        (-12.25, "-12,25"),
        (True, "да"),
        (False, "нет"),
        ("субботу", "субботу"),
        ("89161234567", "8 916 123 45 67"),  # a digits entity's value: read in groups
        ("9161234567", "916 123 45 67"),
        ("123456", "12 34 56"),
        ("1234", "1234"),  # short: as is
        ("8 916", "8 916"),
        (0, "0"),
    ],
)
def test_numbers_render_russian_style(value: Any, spoken: str) -> None:
    assert format_value(value) == spoken
    assert render_template("{{ session.variables.v }}", session(v=value)) == spoken


def test_missing_variable_names_it() -> None:
    with pytest.raises(TemplateError) as info:
        render_template("Итого {{ session.variables.final_price }}", session(area=5))
    assert info.value.variable == "final_price"
    assert "final_price" in str(info.value)
    assert isinstance(info.value, VoicebridgeError)


@pytest.mark.parametrize("value", [None, [1, 2], {"a": 1}, float("nan"), float("inf")])
def test_unspeakable_values_are_errors(value: Any) -> None:
    with pytest.raises(TemplateError, match="'v'"):
        render_template("{{ session.variables.v }}", session(v=value))


@pytest.mark.parametrize(
    "template",
    [
        "{{ __import__('os').system('touch PWNED') }}",
        "{{ open('PWNED', 'w') }}",
        "{{ session.variables.x.__class__ }}",
        "{{ session.__dict__ }}",
        "{{ session.variables['x'] }}",
        "{{ 7 * 7 }}",
        "{{ final_price }}",
        "{% for x in y %}{% endfor %}{{ session.variables.x }}",
        "{{ session.variables.x }} {{ session.variables.",
        "{{ session.variables.x }} }}",
        "{{ lipsum.__globals__ }}",
    ],
)
def test_templates_never_execute_code(template: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if "{%" in template:
        # Jinja statements are plain text to us: no loop runs, the placeholder is filled.
        assert render_template(template, session(x=1)).endswith("1")
    else:
        with pytest.raises(TemplateError):
            render_template(template, session(x=1))
        with pytest.raises(TemplateError):
            validate_template(template)
    assert not (tmp_path / "PWNED").exists()


def test_template_variables() -> None:
    t = "на {{ session.variables.visit_day }}, {{session.variables.area_m2}} м, {{ session.call_id }}"
    assert template_variables(t) == {"visit_day", "area_m2"}
    assert template_variables("просто текст") == set()


# --- expressions ---


@pytest.mark.parametrize(
    ("expr", "variables", "result"),
    [
        ("area_m2 * 150", {"area_m2": 45}, 6750),
        ("round(max(base_price, 3000))", {"base_price": 1500.0}, 3000),
        ("round(area * 1.2, 1)", {"area": 45.55}, 54.7),
        ("-(a - b) // 2 % 7", {"a": 1, "b": 10}, 4),
        ("min(a, b, 5) + abs(-3) + 2 ** 3", {"a": 1, "b": 2}, 12),
        ("(a + 1) / 4", {"a": 1}, 0.5),
        ("+a", {"a": 3}, 3),
    ],
)
def test_evaluate(expr: str, variables: dict[str, Any], result: float) -> None:
    assert evaluate(expr, variables) == pytest.approx(result)


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("__import__('os').system('touch PWNED')", "only calls of"),
        ("open('PWNED', 'w')", "only calls of"),
        ("a.__class__", "Attribute is not allowed"),
        ("a[0]", "Subscript is not allowed"),
        ("'abc' * 3", "only numbers"),
        ("True + 1", "only numbers"),
        ("a if a else 1", "IfExp is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("a < 1", "Compare is not allowed"),
        ("a << 2", "LShift is not allowed"),
        ("not a", "Not is not allowed"),
        ("round(a, ndigits=1)", "positional arguments"),
        ("max(*a)", "*arguments"),
        ("abs(1, 2)", "positional arguments"),
        ("a *", "syntax error"),
        ("a = 1", "syntax error"),
        ("1" * 400, "longer than"),
    ],
)
def test_forbidden_expressions(expr: str, why: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExpressionError) as info:
        evaluate(expr, {"a": 1})
    assert why in info.value.why
    assert info.value.expression == expr
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    ("expr", "variables", "why"),
    [
        ("area * 2", {}, "variable 'area' is not set"),
        ("area * 2", {"area": None}, "variable 'area' is not set"),
        ("day * 2", {"day": "субботу"}, "'day' is not a number"),
        ("a / 0", {"a": 1}, "division by zero"),
        ("a % 0", {"a": 1}, "division by zero"),
        ("10 ** 100", {}, "exponent 100"),
        ("(10 ** 16) ** 16 * 10", {}, "out of range"),
        ("(-8) ** 0.5", {}, "out of range"),
        ("round(a, 1.5)", {"a": 1}, "digits must be an integer"),
    ],
)
def test_evaluation_errors(expr: str, variables: dict[str, Any], why: str) -> None:
    with pytest.raises(ExpressionError, match=why):
        evaluate(expr, variables)


def test_expression_variables() -> None:
    assert expression_variables("round(max(base_price, area * 2))") == {"base_price", "area"}
    assert isinstance(parse_expression("1 + 2").body, object)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab01.+-*/%()_ ,roundmaxbs'[]", max_size=40))
def test_any_input_evaluates_or_raises_expression_error(expr: str) -> None:
    try:
        value = evaluate(expr, {"a": 3, "b": 2.5})
    except ExpressionError:
        return
    assert isinstance(value, int | float)


@pytest.mark.parametrize(
    "expr, variables",
    [
        ("round(1e999)", {}),
        ("round(x)", {"x": float("nan")}),
        ("abs(1e999)", {}),
        ("x * 2", {"x": 10**400}),
        ("max(x, 1)", {"x": float("inf")}),
    ],
)
def test_numeric_edge_cases_are_expression_errors(expr: str, variables: dict[str, object]) -> None:
    with pytest.raises(ExpressionError):
        evaluate(expr, variables)
