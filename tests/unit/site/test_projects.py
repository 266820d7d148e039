"""The site file's ``projects``."""

from __future__ import annotations

from factoryhub.hub.site.loader import parse_site

from .helpers import errors_of, example


def test_projects_name_declared_profiles_and_valid_accounts() -> None:
    data = example()
    data["projects"][1]["profiles"].append("gpu-9")
    data["projects"][2]["account"] = "Ops Team"
    data["projects"][0]["groups"] = ["acme ai"]
    data["projects"].append(dict(data["projects"][0]))
    err = errors_of(data)
    assert err.paths == [
        "projects[0].groups[0]",
        "projects[1].profiles[2]",
        "projects[2].account",
        "projects[3].groups[0]",
        "projects[3].name",
    ]
    assert "expected one of the profiles declared in profiles" in str(err)
    assert "a Slurm account name" in str(err)


def test_projects_are_optional() -> None:
    data = example()
    del data["projects"]
    del data["reports"]  # its service_project names a project
    del data["courses"]  # so do its courses
    assert parse_site(data).projects == ()
