"""Build factoryhub's images locally with buildah, from a Debian base made with debootstrap.

    python images/build.py [base] [hub] [singleuser] [singleuser-pytorch] [node]   (as root)

No registry is needed: the base ``localhost/factoryhub-base:bookworm`` is a debootstrap'ed
Debian bookworm minbase with python3 and python3-venv, imported with ``podman import`` (made
once, skipped while the image exists). Each image is tagged ``localhost/factoryhub-NAME:latest``
and ``localhost/factoryhub-NAME:<hash of its build inputs>``; an image whose inputs did not
change is not rebuilt. With no names it builds base, hub and singleuser (not the PyTorch one:
its CUDA wheels are several GB).

When this host's CA bundle differs from a stock Debian one (a TLS-inspecting proxy), it is
mounted over the build's /etc/ssl/certs/ca-certificates.crt for the RUN steps only.
``--layers`` keeps the pip-install layer while only factoryhub's sources change. (The
Containerfiles' ``RUN --mount=type=cache`` pip cache does not persist with Debian's buildah
1.28; it does with BuildKit and newer buildah.)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"
BASE_IMAGE = "localhost/factoryhub-base:bookworm"
DEBIAN_MIRROR = os.environ.get("FACTORYHUB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# factoryhub's own sources, copied into the hub and singleuser images.
SOURCES = ("pyproject.toml", "setup.py", "README.md", "hub", "spawners", "helpers", "notebooks")
# What each image is built FROM (the images of this folder it depends on).
PARENT = {
    "hub": BASE_IMAGE,
    "singleuser": BASE_IMAGE,
    "singleuser-pytorch": "localhost/factoryhub-singleuser:latest",
    "node": BASE_IMAGE,
}
# Images that hold nothing of factoryhub's sources (the node mounts the users' environment).
WITHOUT_SOURCES = ("singleuser-pytorch", "node")
DEFAULT = ("base", "hub", "singleuser")


def log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


def run(*cmd: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kwargs)


def image_exists(ref: str) -> bool:
    return subprocess.run(["podman", "image", "exists", ref], check=False).returncode == 0


def image_id(ref: str) -> str:
    out = run("podman", "image", "inspect", "--format", "{{.Id}}", ref, capture_output=True)
    return out.stdout.decode().strip()


def build_base(force: bool = False) -> None:
    if image_exists(BASE_IMAGE) and not force:
        log(f"{BASE_IMAGE} exists")
        return
    for tool in ("debootstrap", "podman"):
        if shutil.which(tool) is None:
            sys.exit(f"images: {tool} is missing (make install-test installs it)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="factoryhub-base-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        log(f"debootstrap bookworm minbase into {root}")
        run(
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "bookworm",
            str(root),
            DEBIAN_MIRROR,
            stdout=subprocess.DEVNULL,
        )
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (root / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        run(
            "podman",
            "import",
            "--change",
            'CMD ["/bin/bash"]',
            "-",
            BASE_IMAGE,
            stdin=tar.stdout,
            stdout=subprocess.DEVNULL,
        )
        if tar.wait() != 0:
            sys.exit("images: tar of the base failed")
    log(f"{BASE_IMAGE} made in {time.monotonic() - started:.0f} s")


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def input_hash(name: str) -> str:
    """Hash of everything the image's build reads: its folder, factoryhub's sources, the
    parent image."""
    digest = hashlib.sha256()
    paths = [IMAGES / name, REPO / ".containerignore"]
    if name not in WITHOUT_SOURCES:
        paths += [REPO / source for source in SOURCES]
    for top in paths:
        for file in _files(top):
            digest.update(str(file.relative_to(REPO)).encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    digest.update(image_id(PARENT[name]).encode())
    return digest.hexdigest()[:16]


def build_image(name: str, force: bool = False) -> str:
    """Build images/NAME; returns the hash-tagged reference."""
    tag = input_hash(name)
    ref = f"localhost/factoryhub-{name}:{tag}"
    latest = f"localhost/factoryhub-{name}:latest"
    if image_exists(ref) and not force:
        log(f"{ref} is up to date")
        run("podman", "tag", ref, latest)
        return ref
    cmd = [
        "buildah",
        "bud",
        "--isolation",
        "chroot",
        "--network",
        "host",
        "--layers",
        "--build-arg",
        f"BASE={PARENT[name]}",
        "--file",
        str(IMAGES / name / "Containerfile"),
        "--tag",
        ref,
        "--tag",
        latest,
    ]
    if HOST_CA.is_file() and os.environ.get("FACTORYHUB_BUILD_HOST_CA", "1") != "0":
        cmd += ["--volume", f"{HOST_CA}:{HOST_CA}:ro"]
    cmd.append(str(REPO))
    started = time.monotonic()
    log(f"building {ref}")
    run(*cmd, stdout=sys.stderr)  # stdout carries only the built references
    log(f"{ref} built in {time.monotonic() - started:.0f} s")
    return ref


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="base, hub, singleuser, singleuser-pytorch, node"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    names = args.names or list(DEFAULT)
    unknown = set(names) - {*DEFAULT, *WITHOUT_SOURCES}
    if unknown:
        parser.error(f"unknown image(s): {', '.join(sorted(unknown))}")
    if "base" in names:
        build_base(force=args.force)
    for name in ("hub", "singleuser", "singleuser-pytorch", "node"):
        if name in names:
            print(build_image(name, force=args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
