"""The Slurm batch script of a user server, rendered with jinja2.

Only values that passed :mod:`factoryhub.spawners.options` (and the operator's own
configuration) are rendered, and every value on an ``#SBATCH`` line must also pass
the ``sbatch`` filter: a plain token of letters, digits and ``_.:=,/@+-``. A value
that does not is refused here, as a second line of defence.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import jinja2

SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:=,/@+-]{1,1024}$")


class UnsafeValue(ValueError):
    pass


def sbatch_value(value: Any) -> str:
    text = str(value)
    if not SAFE_VALUE.fullmatch(text):
        raise UnsafeValue(f"refusing to put {text[:80]!r} into a job script")
    return text


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("factoryhub.spawners", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - a shell script, values are checked by `sbatch`
        keep_trailing_newline=True,
    )
    env.filters["sbatch"] = sbatch_value
    return env


def render_job_script(
    subvars: Mapping[str, Any], command: Sequence[str], template: str = "job.sh.j2"
) -> str:
    """Render the job script. ``command`` is quoted word by word with shlex."""
    context = dict(subvars)
    context["cmd"] = " ".join(shlex.quote(str(part)) for part in command)
    context.setdefault("extra_options", ())
    context.setdefault("comment", "")
    return _environment().get_template(template).render(**context)
