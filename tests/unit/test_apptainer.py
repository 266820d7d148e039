"""A profile's image: the ``apptainer exec`` command line a server's job runs (Apptainer itself
cannot be installed on this machine; tests/integration/test_images.py runs the same image
with podman), and the site file's keys for it."""

from __future__ import annotations

import shlex
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from factoryhub.hub.site import loader as site
from factoryhub.hub.site.loader import SiteError, parse_site
from factoryhub.spawners.apptainer import (
    ApptainerError,
    ApptainerSettings,
    exec_prefix,
    server_command,
)
from factoryhub.spawners.model.profiles import load_profiles
from factoryhub.spawners.options import validate_options
from factoryhub.spawners.spawner import FactorySlurmSpawner


def test_a_cpu_server_binds_the_home_and_the_sites_paths() -> None:
    settings = ApptainerSettings(binds=("/scratch", "/datasets:/data:ro"), python_env="/opt/env")
    assert server_command(settings, "/images/lab.sif", "/home/ann", ["--debug"]) == [
        "apptainer",
        "exec",
        "--bind",
        "/home/ann,/scratch,/datasets:/data:ro",
        "/images/lab.sif",
        "/opt/env/bin/factoryhub-singleuser",
        "--debug",
    ]


def test_gpus_get_the_nvidia_libraries_and_course_materials_are_read_only() -> None:
    words = exec_prefix(
        ApptainerSettings(command="singularity"),
        "docker://registry.example.org/lab:1",
        "/home/ann",
        gpus=2,
        read_only=["/srv/course"],
    )
    assert words == [
        "singularity",
        "exec",
        "--nv",
        "--bind",
        "/home/ann,/srv/course:/srv/course:ro",
        "docker://registry.example.org/lab:1",
    ]


@pytest.mark.parametrize("image", ["lab.sif", "http://x/lab.sif", "/a b.sif", "-x", ""])
def test_images_that_are_not_a_path_or_reference_are_refused(image: str) -> None:
    with pytest.raises(ApptainerError, match="expected an absolute path to a SIF file"):
        exec_prefix(ApptainerSettings(), image, "/home/ann")


@pytest.mark.parametrize("bind", ["scratch", "/a,/b", "/a:/b:rx", "/a b", "/a:b"])
def test_binds_that_could_smuggle_options_are_refused(bind: str) -> None:
    with pytest.raises(ApptainerError, match="bind"):
        exec_prefix(ApptainerSettings(binds=(bind,)), "/i.sif", "/home/ann")


def example() -> dict[str, Any]:
    data = yaml.safe_load(site.example_site_path().read_text())
    data["auth"]["type"] = "local"
    del data["auth"]["oidc"]
    return data


def test_the_site_file_names_the_image_of_a_profile_and_the_binds() -> None:
    data = example()
    data["profiles"][2]["image"] = "/images/pytorch.sif"
    data["spawner"]["apptainer"] = {"binds": ["/scratch"]}
    s = parse_site(data)
    assert s.profile("gpu-1").image == "/images/pytorch.sif"
    assert s.profile("cpu-small").image == ""
    assert s.spawner.apptainer == {
        "command": "apptainer",
        "binds": ["/scratch"],
        "python_env": "/opt/factoryhub/venv",
    }
    data["profiles"][2]["image"] = "pytorch.sif"
    data["spawner"]["apptainer"] = {"binds": ["/a,/b"]}
    with pytest.raises(SiteError) as caught:
        parse_site(data)
    text = str(caught.value)
    assert "profiles[2].image" in text and "spawner.apptainer.binds[0]" in text


def test_the_spawner_runs_a_profile_with_an_image_through_apptainer() -> None:
    configs = [p.to_config() for p in site.load_site(site.example_site_path()).profiles]
    configs[2]["image"] = "/images/pytorch.sif"
    spawner = FactorySlurmSpawner(
        profiles=configs, apptainer={"binds": ["/scratch"]}, python_env="/opt/fh"
    )
    spawner.user = SimpleNamespace(name="root", groups=[], spawners={})
    spawner.job_request = validate_options({"profile": "gpu-1"}, load_profiles(configs))
    command = spawner.singleuser_command()
    assert command[:6] == [
        "apptainer",
        "exec",
        "--nv",
        "--bind",
        "/root,/scratch",
        "/images/pytorch.sif",
    ]
    assert command[6] == "/opt/factoryhub/venv/bin/factoryhub-singleuser"
    # a profile without an image runs in the site's environment on the node, as before
    spawner.job_request = validate_options({"profile": "cpu-small"}, load_profiles(configs))
    assert spawner.singleuser_command()[0] == "/opt/fh/bin/factoryhub-singleuser"
    assert shlex.join(command)  # quoted word by word into the job script
