"""A report notebook's parameters: read from its ``parameters`` cell (papermill's own
inspection), shown as a form, and every submitted value checked against its type.

Nothing a user types reaches a run unchecked: unknown names are refused, every value is
converted to the type of the parameter's default (or its annotation), and strings and lists
are bounded in size. A parameter annotated ``# type: path`` is text here; where it may point
is checked for the user a run runs as (``paths.confine``).
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TYPES = ("int", "float", "bool", "str", "list", "path")
MAX_TEXT = 4096
MAX_ITEMS = 256
_ANNOTATIONS = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str": "str",
    "list": "list",
    "path": "path",  # ``# type: path``: checked by ``paths.confine`` for the run's user
}


class ParameterError(ValueError):
    """Values that do not fit the notebook's parameters; ``problems`` maps name → reason."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        super().__init__("; ".join(f"{k}: {v}" for k, v in sorted(self.problems.items())))


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str  # one of TYPES
    default: Any
    help: str = ""

    def to_form(self) -> dict[str, Any]:
        """JSON-able description for the form (lists shown as JSON text)."""
        default = json.dumps(self.default) if self.type == "list" else self.default
        return {"name": self.name, "type": self.type, "default": default, "help": self.help}


def _type_of(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "list"
    return None


def from_inspection(found: Mapping[str, Mapping[str, Any]]) -> tuple[Parameter, ...]:
    """Parameters from ``papermill.inspect_notebook``'s answer. A parameter whose default is
    not a plain literal (an expression, ``None``) is kept as text."""
    params = []
    for name, info in found.items():
        try:
            default = ast.literal_eval(str(info.get("default", "")))
        except (ValueError, SyntaxError):
            default = str(info.get("default", ""))
        annotated = _ANNOTATIONS.get(str(info.get("inferred_type_name", "")))
        kind = annotated or _type_of(default) or "str"
        if kind == "list":
            default = list(default) if isinstance(default, list | tuple) else []
        elif kind in ("str", "path") and not isinstance(default, str):
            default = "" if default is None else str(default)
        params.append(Parameter(name, kind, default, str(info.get("help") or "")))
    return tuple(params)


def inspect(notebook: str | Path) -> tuple[Parameter, ...]:
    """The parameters of a notebook's ``parameters`` cell (empty when it has none)."""
    import papermill

    return from_inspection(papermill.inspect_notebook(str(notebook)))


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def convert(param: Parameter, value: Any) -> Any:
    """``value`` (from JSON or a form field) as the parameter's type; ValueError says why."""
    kind = param.type
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError("expected true or false")
    if kind == "int":
        if isinstance(value, bool):
            raise ValueError("expected a whole number")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError("expected a whole number")
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError("expected a number")
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise ValueError("expected a number") from None
        if not math.isfinite(number):
            raise ValueError("expected a finite number")
        return number
    if kind == "list":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError('expected a JSON list, like ["a", "b"] or [1, 2]') from None
        if not isinstance(value, list) or not all(_scalar(v) for v in value):
            raise ValueError("expected a list of numbers, text or true/false")
        if len(value) > MAX_ITEMS:
            raise ValueError(f"expected at most {MAX_ITEMS} items")
        if any(isinstance(v, str) and len(v) > MAX_TEXT for v in value):
            raise ValueError(f"items must be at most {MAX_TEXT} characters")
        return value
    if not isinstance(value, str):
        raise ValueError("expected text")
    if len(value) > MAX_TEXT or "\x00" in value:
        raise ValueError(f"expected text of at most {MAX_TEXT} characters")
    return value


def validate(params: tuple[Parameter, ...], values: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults overlaid with ``values``, each converted; raise :class:`ParameterError`
    listing every problem (unknown names included)."""
    known = {p.name: p for p in params}
    problems: dict[str, str] = {}
    for name in values:
        if name not in known:
            problems[name] = f"not a parameter of this report ({', '.join(known) or 'none'})"
    out = {p.name: p.default for p in params}
    for name, value in values.items():
        if name in known:
            try:
                out[name] = convert(known[name], value)
            except ValueError as e:
                problems[name] = str(e)
    if problems:
        raise ParameterError(problems)
    return out
