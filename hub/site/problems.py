"""What is wrong with a site file, in words: one :class:`Problem` per key, all of them in one
:class:`SiteError`; and the small helpers the sections' checks share to read a file that
may have failed the schema (every check is defensive: it runs on whatever was written)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One problem in the site file: the key path (``""`` = the whole file) and what is wrong."""

    path: str
    message: str

    def line(self, source: str) -> str:
        return (
            f"{source}: {self.path}: {self.message}" if self.path else f"{source}: {self.message}"
        )


class SiteError(Exception):
    """The site file cannot be used. ``str(err)`` is one line per problem, each naming its key."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(p.line(source) for p in self.problems))

    @property
    def paths(self) -> list[str]:
        """The key paths named, in the order reported."""
        return [p.path for p in self.problems]


def show(value: Any) -> str:
    """A found value, short, for 'got ...'."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list | tuple):
        return "a list" if value else "an empty list"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 72 else text[:68] + '…" (' + f"{len(value)} characters)"
    if isinstance(value, int | float):
        return repr(value)
    return f"a {type(value).__name__} ({value!r:.60})"


def show_key(key: Any) -> str:
    return json.dumps(key, ensure_ascii=False) if isinstance(key, str) else repr(key)


# --------------------------------------------------------------------------- reading defensively


def at(data: Any, *path: str) -> Any:
    """The value at ``path`` in ``data``, or None where a step is missing or no mapping."""
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def entries(value: Any) -> list[Mapping[str, Any]]:
    """The mappings of a list (nothing when it is no list)."""
    return [e for e in value if isinstance(e, Mapping)] if isinstance(value, list) else []


def names(value: Any, key: str = "name") -> list[str]:
    """The ``key`` texts of the mappings of a list, without repeats, in order."""
    return list(dict.fromkeys(e[key] for e in entries(value) if isinstance(e.get(key), str)))


def unique_names(items: Any, where: str, what: str) -> list[Problem]:
    """A problem for each item whose ``name`` an earlier item of ``items`` already has."""
    first: dict[str, int] = {}
    out = []
    for i, item in enumerate(items if isinstance(items, list) else ()):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            continue
        name = item["name"]
        if name in first:
            out.append(
                Problem(
                    f"{where}[{i}].name",
                    f"expected a unique {what} name, got {show(name)} "
                    f"(already used by {where}[{first[name]}])",
                )
            )
        else:
            first[name] = i
    return out


def not_declared(where: str, known: Iterable[str], declared_in: str, got: str) -> Problem:
    """The value at ``where`` (shown as ``got``) is none of ``known``, declared in
    ``declared_in``."""
    what = declared_in.rsplit(".", 1)[-1]
    return Problem(
        where,
        f"expected one of the {what} declared in {declared_in} "
        f"({', '.join(known) or 'none'}), got {got}",
    )
