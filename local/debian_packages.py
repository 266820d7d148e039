"""The Debian packages of the local factory, each with why it is there.

``local/install.sh`` reads this file: it runs ``/usr/bin/python3 local/debian_packages.py up``
(or ``up test`` for ``make test``), which prints one package name a line, and installs those
that are missing. Plugin packages are listed even where a dependency brings them:
``tests/unit/test_install_packages.py`` checks that every Slurm plugin named in the generated
``slurm.conf`` and ``slurmdbd.conf`` (``factoryhub.local.slurm_plugins``) has its package here.

Standard library only: the system Python runs it before any virtualenv exists.
"""

from __future__ import annotations

import sys

# `make up`: the local factory.
UP: dict[str, str] = {
    "slurm-wlm": "slurmctld, slurmd and the client commands (sbatch, squeue, sacctmgr, ...)",
    "slurm-wlm-basic-plugins": "the plugins slurm.conf names (auth/munge, select/cons_tres, ...)",
    "slurm-wlm-jwt-plugin": "auth/jwt (auth_jwt.so): AuthAltTypes=auth/jwt in both conf files",
    "slurm-wlm-mysql-plugin": "accounting_storage/mysql: slurmdbd's StorageType",
    "munge": "munged: AuthType=auth/munge, CryptoType=crypto/munge",
    "slurmdbd": "accounting (associations, sacct) behind AccountingStorageType",
    "slurmrestd": 'the REST API for hubs in the "rest" access mode (JWT sign-in)',
    "mariadb-server": "slurmdbd's database (a private mariadbd on 127.0.0.1:3307)",
    "python3-venv": "the world-readable virtualenv /opt/factoryhub/venv from the system Python",
}

# `make test` (install.sh --test) adds these.
TEST: dict[str, str] = {
    "chromium": "the browser the browser tests drive (Playwright, executable_path)",
    "buildah": "builds the container images (image tests, make images)",
    "podman": "runs the images and the fresh-machine test's container",
    "runc": "podman's and buildah's OCI runtime",
    "debootstrap": "the Debian base image the images are built on",
    "catatonit": "the pause process of the pods `podman kube play` makes (the k8s test)",
}

SECTIONS = {"up": UP, "test": TEST}


def packages(*sections: str) -> list[str]:
    """The package names of ``sections``, in order, without duplicates."""
    names: list[str] = []
    for section in sections:
        names += [name for name in SECTIONS[section] if name not in names]
    return names


def main(argv: list[str]) -> int:
    unknown = [s for s in argv if s not in SECTIONS]
    if not argv or unknown:
        print(f"usage: debian_packages.py {'|'.join(SECTIONS)}...", file=sys.stderr)
        return 2
    print("\n".join(packages(*argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
