"""What the site file's tests share: the example as data, errors in lines, and model objects
built from partial site entries with the schema's defaults (no defaults in the model)."""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from factoryhub.hub.site.loader import SiteError, example_site_path, parse_site
from factoryhub.hub.site.schema import with_defaults_of
from factoryhub.spawners.model.profiles import Profile
from factoryhub.spawners.model.projects import Project
from factoryhub.spawners.model.slurm_units import SLURM_TIME_PATTERN

EXAMPLE = example_site_path()
SLURM_TIME = re.compile(SLURM_TIME_PATTERN.removesuffix("$"))


@functools.cache
def _example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def example() -> dict[str, Any]:
    """The example site file as data, a fresh copy each call (parsed once: the property
    tests build hundreds of sites from it)."""
    return copy.deepcopy(_example())


def errors_of(data: Any) -> SiteError:
    with pytest.raises(SiteError) as info:
        parse_site(data)
    return info.value


def lines_of(err: SiteError) -> list[str]:
    return str(err).splitlines()


def a_profile(entry: Mapping[str, Any]) -> Profile:
    """The profile of a site file ``profiles`` entry, its omitted keys from the schema."""
    return Profile.from_config(with_defaults_of("profile", entry))


def a_project(entry: Mapping[str, Any]) -> Project:
    """The project of a site file ``projects`` entry, its omitted keys from the schema."""
    return Project.from_site(with_defaults_of("project", entry))
