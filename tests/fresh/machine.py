"""A fresh machine of this kind, as a podman container: what tests/fresh runs `make up` on.

The image ``localhost/factoryhub-fresh-machine:<hash>`` is built once (and again only when its
inputs change: the recipe below, the base image, the host's Node.js and npm versions) on top
of ``localhost/factoryhub-base:bookworm`` (``images/build.py base``: debootstrap minbase with
python3, python3-venv and ca-certificates). It adds what every machine of this kind comes with
and the README assumes, nothing of factoryhub's:

- make, git, procps (Debian packages);
- Node.js 20 with npm exactly as this host has them: the host's Debian package ``nodejs`` is
  repacked into a .deb from the files on disk (npm was updated in place on these machines, so
  /usr/lib/node_modules is taken whole) with its control data and maintainer scripts, and
  installed with apt (its source is not reachable from here);
- and it *removes* python3-venv, which the base has but a fresh machine need not: `make up`
  must install it.

No apt lists, no /etc/apt/sources.list of debootstrap's: the container gets this host's package
client configuration when it is created (`client_config_tar`): apt's sources, apt.conf.d,
preferences, keyrings; pip's /etc/pip.conf, /etc/xdg/pip and root's ~/.config/pip (which
names the local wheel folders); npm's /etc/npmrc, /usr/etc/npmrc and root's ~/.npmrc; the CA
bundle (TLS is inspected here) and the local CAs it is made from; the PIP_* variables of this
process; the local wheel folders (read-only mounts). Only
download caches are shared with the host (``$FACTORYHUB_FRESH_CACHE``, default
/var/cache/factoryhub-fresh/{apt,pip,npm}); nothing installed comes from it.

The container runs in its own network namespace on podman's default bridge network (the host
runs its own Slurm and hub on the same loopback ports), with outbound access through the host.
It runs ``--privileged``: the local factory starts munged, slurmctld, slurmd (which switches
to users, sets their limits and runs their jobs through slurmstepd), slurmdbd and MariaDB, and
creates Unix users (useradd, runuser through PAM). A narrower capability set has not been
worked out (each try is a whole `make up`); the container is thrown away after the test, and
nothing of the host is mounted writable into it but the test's temporary copy of the tree and
the download caches. PID 1 is a bash loop that reaps the daemons' orphans (no catatonit here).
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "localhost/factoryhub-base:bookworm"
IMAGE = "localhost/factoryhub-fresh-machine"
CACHE = Path(os.environ.get("FACTORYHUB_FRESH_CACHE", "/var/cache/factoryhub-fresh"))
# Download caches shared with the host: (folder under CACHE, path in the container).
CACHES = (("apt", "/var/cache/apt/archives"), ("pip", "/root/.cache/pip"), ("npm", "/root/.npm"))
# This host's package-client configuration: (path here, path in the container).
CLIENT_CONFIG = (
    ("/etc/apt/sources.list", "/etc/apt/sources.list"),
    ("/etc/apt/sources.list.d", "/etc/apt/sources.list.d"),
    ("/etc/apt/apt.conf.d", "/etc/apt/apt.conf.d"),
    ("/etc/apt/preferences.d", "/etc/apt/preferences.d"),
    ("/etc/apt/auth.conf.d", "/etc/apt/auth.conf.d"),
    ("/etc/apt/keyrings", "/etc/apt/keyrings"),
    ("/etc/apt/trusted.gpg", "/etc/apt/trusted.gpg"),
    ("/etc/apt/trusted.gpg.d", "/etc/apt/trusted.gpg.d"),
    ("/usr/share/keyrings", "/usr/share/keyrings"),
    ("/etc/pip.conf", "/etc/pip.conf"),
    ("/etc/xdg/pip", "/etc/xdg/pip"),
    (str(Path.home() / ".config" / "pip"), "/root/.config/pip"),
    (str(Path.home() / ".pip"), "/root/.pip"),
    ("/etc/npmrc", "/etc/npmrc"),
    ("/usr/etc/npmrc", "/usr/etc/npmrc"),
    (str(Path.home() / ".npmrc"), "/root/.npmrc"),
    ("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-certificates.crt"),
    ("/usr/local/share/ca-certificates", "/usr/local/share/ca-certificates"),
)
WHEEL_FOLDERS = ("/opt/wheels", "/opt/pypi", "/opt/pypi-more")
# The image's recipe. Changing it changes the image's tag (see image_tag).
MACHINE_PACKAGES = ("make", "git", "procps")
NOT_ON_A_FRESH_MACHINE = ("python3-venv",)
BUILD_SCRIPT = f"""
export DEBIAN_FRONTEND=noninteractive
rm -f /etc/apt/sources.list 2>/dev/null || true   # debootstrap's; the host's config rules
apt-get update -qq
apt-get install -y -qq --no-install-recommends {" ".join(MACHINE_PACKAGES)} /tmp/nodejs.deb
apt-get purge -y -qq --auto-remove {" ".join(NOT_ON_A_FRESH_MACHINE)}
rm -rf /var/lib/apt/lists/*
echo "node $(node --version), npm $(npm --version)"
"""
# PID 1 of the machine: sleeps, and reaps the orphans of the daemons `make up` starts.
INIT = "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"
NODE_MODULES = Path("/usr/lib/node_modules")


def log(message: str) -> None:
    print(f"fresh: {message}", file=sys.stderr, flush=True)


def podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])} ...: {done.stderr.strip()[-2000:]}")
    return done


def image_exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0


def host_nodejs() -> tuple[str, str]:
    """The host's Debian nodejs version and the npm version on disk."""
    version = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "nodejs"], capture_output=True, text=True, check=True
    ).stdout
    npm = subprocess.run(["npm", "--version"], capture_output=True, text=True, check=True).stdout
    return version, npm.strip()


def image_tag() -> str:
    """Hash of the image's inputs: its recipe, the base image, the host's Node.js and npm."""
    base_id = podman("image", "inspect", "--format", "{{.Id}}", BASE_IMAGE).stdout.strip()
    recipe = "\0".join(
        [BUILD_SCRIPT, base_id, *host_nodejs(), *MACHINE_PACKAGES, *NOT_ON_A_FRESH_MACHINE]
    )
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def _dpkg_field(field_name: str) -> str:
    return subprocess.run(
        ["dpkg-query", "-W", f"-f=${{{field_name}}}", "nodejs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def repack_nodejs(workdir: Path) -> Path:
    """The host's nodejs package as a .deb, from the files on disk now."""
    root = workdir / "nodejs"
    (root / "DEBIAN").mkdir(parents=True)
    listed = subprocess.run(
        ["dpkg-query", "-L", "nodejs"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    paths = {p for p in listed if p.startswith("/usr/") or p.startswith("/etc/")}
    paths |= {str(p) for p in NODE_MODULES.rglob("*")}  # npm, updated in place
    names = "\0".join(p.lstrip("/") for p in sorted(paths) if os.path.lexists(p))
    pack = subprocess.Popen(
        ["tar", "-C", "/", "--no-recursion", "--null", "-T", "-", "-cf", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    unpack = subprocess.Popen(["tar", "-C", str(root), "-xf", "-"], stdin=pack.stdout)
    assert pack.stdin and pack.stdout
    pack.stdout.close()
    pack.stdin.write(names.encode())
    pack.stdin.close()
    if pack.wait() != 0 or unpack.wait() != 0:
        raise RuntimeError("copying the host's nodejs files failed")
    fields = ("Package", "Version", "Architecture", "Maintainer", "Depends", "Provides")
    fields += ("Conflicts", "Replaces", "Section", "Priority", "Homepage", "Description")
    control = "".join(f"{f}: {v}\n" for f in fields if (v := _dpkg_field(f)))
    (root / "DEBIAN" / "control").write_text(control)
    for script in ("preinst", "postinst", "prerm", "postrm"):
        found = subprocess.run(
            ["dpkg-query", "--control-path", "nodejs", script], capture_output=True, text=True
        ).stdout.strip()
        if found:
            shutil.copy(found, root / "DEBIAN" / script)
            (root / "DEBIAN" / script).chmod(0o755)
    deb = workdir / "nodejs.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


def cache_mounts() -> list[str]:
    args = []
    for name, inside in CACHES:
        (CACHE / name).mkdir(parents=True, exist_ok=True)
        args += ["--volume", f"{CACHE / name}:{inside}"]
    return args


def config_mounts() -> list[str]:
    """The host's package-client configuration, mounted read-only (for the image build)."""
    return [
        arg
        for here, inside in CLIENT_CONFIG
        if os.path.lexists(here)
        for arg in ("--volume", f"{here}:{inside}:ro")
    ]


def wheel_mounts() -> list[str]:
    return [
        arg
        for folder in WHEEL_FOLDERS
        if os.path.isdir(folder)
        for arg in ("--volume", f"{folder}:{folder}:ro")
    ]


def pip_env() -> list[str]:
    """This process's PIP_* variables, for the container."""
    return [f"--env={k}={v}" for k, v in os.environ.items() if k.startswith("PIP_")]


def ensure_image() -> tuple[str, bool]:
    """The fresh-machine image's reference, built when missing; and whether it was built."""
    if not image_exists(BASE_IMAGE):
        subprocess.run([sys.executable, str(REPO / "images" / "build.py"), "base"], check=True)
    ref = f"{IMAGE}:{image_tag()}"
    if image_exists(ref):
        return ref, False
    name = f"factoryhub-fresh-build-{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="factoryhub-fresh-image-", dir="/var/tmp") as tmp:
        deb = repack_nodejs(Path(tmp))
        try:
            done = podman(
                "run",
                "--name",
                name,
                "--network",
                "bridge",
                *config_mounts(),
                *cache_mounts(),
                "--volume",
                f"{deb}:/tmp/nodejs.deb:ro",
                BASE_IMAGE,
                "bash",
                "-euc",
                BUILD_SCRIPT,
                timeout=900,
            )
            log(f"image build: {done.stdout.strip().splitlines()[-1]}")
            podman("commit", "--quiet", "--change", 'CMD ["/bin/bash"]', name, ref)
        finally:
            podman("rm", "-f", name, check=False)
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE).stdout.split()
    for old in set(listed) - {ref}:  # earlier recipes' images
        podman("rmi", old, check=False)
    return ref, True


def client_config_tar() -> bytes:
    """The host's package-client configuration as a tar, for ``podman cp - NAME:/``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for here, inside in CLIENT_CONFIG:
            if os.path.lexists(here):
                tar.add(here, arcname=inside.lstrip("/"))
    return buf.getvalue()


def tree_files(source: Path) -> list[str]:
    """The files of the tree to test: what git tracks plus what it would not ignore (the
    working tree's content, uncommitted edits included); every file when it is no git tree."""
    if not (source / ".git").exists():
        return [str(p.relative_to(source)) for p in source.rglob("*") if not p.is_dir()]
    out = subprocess.run(
        ["git", "-C", str(source), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({name for name in out.split("\0") if name})


def copy_tree(source: Path, dest: Path) -> int:
    copied = 0
    for name in tree_files(source):
        here = source / name
        if not os.path.lexists(here):  # deleted in the working tree
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(here, dest / name, follow_symlinks=False)
        copied += 1
    return copied


@dataclass
class FreshMachine:
    """One container of the fresh-machine image, with a copy of the tree at /root/factoryhub."""

    image: str
    source: Path
    name: str = field(default_factory=lambda: f"factoryhub-fresh-{secrets.token_hex(4)}")
    workdir: str = "/root/factoryhub"
    tmp: Path | None = None

    def start(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="factoryhub-fresh-", dir="/var/tmp"))
        tree = self.tmp / "factoryhub"
        tree.mkdir(mode=0o755)
        log(f"{copy_tree(self.source, tree)} files of {self.source} copied")
        podman(
            "create",
            "--name",
            self.name,
            "--hostname",
            "fresh-machine",
            "--network",
            "bridge",
            "--privileged",
            *pip_env(),
            *cache_mounts(),
            *wheel_mounts(),
            "--volume",
            f"{tree}:{self.workdir}",
            self.image,
            "bash",
            "-c",
            INIT,
        )
        copied = subprocess.run(
            ["podman", "cp", "-", f"{self.name}:/"], input=client_config_tar(), capture_output=True
        )
        if copied.returncode != 0:
            raise RuntimeError(f"podman cp of the client configuration: {copied.stderr!r}")
        podman("start", self.name)

    def pid(self) -> int:
        return int(podman("inspect", "--format", "{{.State.Pid}}", self.name).stdout)

    def exec(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *cmd, check=False, timeout=timeout)

    def run_logged(self, cmd: list[str], log: Path, timeout: float) -> tuple[int | None, float]:
        """Run ``cmd`` in the tree's folder, its output streamed to ``log``; returns its
        exit status (None when it ran past ``timeout``) and how long it ran."""
        started = time.monotonic()
        with log.open("w") as out:
            proc = subprocess.Popen(
                ["podman", "exec", "--workdir", self.workdir, self.name, *cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                rc: int | None = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rc = None
        return rc, time.monotonic() - started

    def collect_logs(self, dest: Path) -> None:
        """The factory's logs (``*.log`` under /var/lib/factoryhub and /var/log/munge) and the
        users' job logs (``~/.factoryhub/``) into ``dest``, replacing what an earlier run left
        there; gathered in the container first, so nothing else of its state (keys, tokens)
        leaves it."""
        gather = (
            "rm -rf /tmp/fresh-logs && mkdir /tmp/fresh-logs && find /var/lib/factoryhub"
            " /var/log/munge /home -name '*.log' -type f"
            " \\( -path '/home/*' -path '*/.factoryhub/*' -o -not -path '/home/*' \\)"
            " -exec cp --parents -t /tmp/fresh-logs {} +"
        )
        shutil.rmtree(dest, ignore_errors=True)
        try:
            self.exec("bash", "-c", gather)
            podman("cp", f"{self.name}:/tmp/fresh-logs", str(dest), timeout=120)
        except (RuntimeError, subprocess.SubprocessError) as failed:
            log(f"no logs collected from {self.name}: {failed}")

    def remove(self) -> None:
        podman("rm", "-f", "-t", "5", self.name, check=False, timeout=120)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
