"""Safe arithmetic for `State.set_variables` ("round(area_m2 * 120)"), evaluated over an AST whitelist.

The expression is parsed with `ast.parse(mode="eval")` and walked by hand; only these nodes exist:
numbers (int/float literals, not bool), variable names, `+ - * / // % **`, unary `-`/`+`,
parentheses, and calls of `round`, `min`, `max`, `abs` with positional arguments. Attribute
access, subscripts, strings, comparisons, lambdas, keyword arguments and every other call are
rejected at parse time, so nothing in a map can run code. `**` is bounded (|exponent| <= 16) and
results must stay finite, so a map cannot make a call burn CPU or memory.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.domain.errors import VoicebridgeError

Number = int | float

MAX_EXPRESSION_CHARS = 300
MAX_EXPONENT = 16
# Keeps integer arithmetic cheap: a map has no business with numbers beyond 10**15.
MAX_ABS_RESULT = 1e15

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCS: dict[str, tuple[int, int]] = {"round": (1, 2), "min": (1, 99), "max": (1, 99), "abs": (1, 1)}


class ExpressionError(VoicebridgeError):
    """An expression is not allowed, or failed to evaluate; names the expression and why."""

    def __init__(self, expression: str, why: str) -> None:
        super().__init__(f"expression {expression!r}: {why}")
        self.expression = expression
        self.why = why


def parse_expression(expression: str) -> ast.Expression:
    """Parse and check `expression` against the whitelist; raises `ExpressionError`."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(expression, f"longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(expression, f"syntax error: {exc.msg}") from None
    for node in ast.walk(tree):
        _check_node(expression, node)
    return tree


def _check_node(expression: str, node: ast.AST) -> None:
    if isinstance(node, ast.Expression | ast.Load | ast.operator | ast.USub | ast.UAdd):
        if isinstance(node, ast.operator) and type(node) not in _BINOPS:
            raise ExpressionError(expression, f"operator {type(node).__name__} is not allowed")
        return
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ExpressionError(expression, f"only numbers are allowed, not {node.value!r}")
        return
    if isinstance(node, ast.Name | ast.BinOp):
        return
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub | ast.UAdd):
            raise ExpressionError(expression, f"operator {type(node.op).__name__} is not allowed")
        return
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS:
            raise ExpressionError(expression, f"only calls of {', '.join(sorted(_FUNCS))} are allowed")
        lo, hi = _FUNCS[node.func.id]
        if node.keywords or not lo <= len(node.args) <= hi:
            raise ExpressionError(expression, f"{node.func.id}() takes {lo}..{hi} positional arguments")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise ExpressionError(expression, "*arguments are not allowed")
        return
    raise ExpressionError(expression, f"{type(node).__name__} is not allowed")


def expression_variables(expression: str) -> set[str]:
    """Names of the variables `expression` reads (function names excluded)."""
    tree = parse_expression(expression)
    funcs = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in funcs}


def evaluate(expression: str, variables: Mapping[str, Any]) -> Number:
    """Evaluate `expression` with `variables` (numbers only); raises `ExpressionError`."""
    tree = parse_expression(expression)
    try:
        return _bounded(expression, _eval(expression, tree.body, variables))
    except (OverflowError, ValueError, TypeError) as exc:
        # round(1e999), round(nan), isfinite() of a huge int: still a map error, never a crash.
        raise ExpressionError(expression, f"{type(exc).__name__}: {exc}") from None


def _eval(expression: str, node: ast.expr, variables: Mapping[str, Any]) -> Number:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return _bounded(expression, node.value)
    if isinstance(node, ast.Name):
        if node.id not in variables or variables[node.id] is None:
            raise ExpressionError(expression, f"variable {node.id!r} is not set")
        v = variables[node.id]
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ExpressionError(expression, f"variable {node.id!r} is not a number: {type(v).__name__}")
        return _bounded(expression, v)
    if isinstance(node, ast.UnaryOp):
        operand = _eval(expression, node.operand, variables)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left = _eval(expression, node.left, variables)
        right = _eval(expression, node.right, variables)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ExpressionError(expression, f"exponent {right} is above {MAX_EXPONENT}")
        try:
            result: Number = _BINOPS[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ExpressionError(expression, "division by zero") from None
        except (OverflowError, ValueError) as exc:
            raise ExpressionError(expression, str(exc)) from None
        return _bounded(expression, result)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [_eval(expression, a, variables) for a in node.args]
        name = node.func.id
        if name == "round":
            if len(args) == 2 and not isinstance(args[1], int):
                raise ExpressionError(expression, "round() digits must be an integer")
            return _bounded(expression, round(args[0], int(args[1])) if len(args) == 2 else round(args[0]))
        if name == "min":
            return _bounded(expression, min(args))
        if name == "max":
            return _bounded(expression, max(args))
        return _bounded(expression, abs(args[0]))
    # parse_expression() already rejected everything else.
    raise ExpressionError(expression, f"{type(node).__name__} is not allowed")


def _bounded(expression: str, value: Number) -> Number:
    if isinstance(value, complex) or abs(value) > MAX_ABS_RESULT or not math.isfinite(value):
        raise ExpressionError(expression, f"result out of range: {value!r}")
    return value
