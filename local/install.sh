#!/usr/bin/env bash
# Install what the local FactoryHub needs, as root; idempotent, and quiet when all is there.
#   1. Debian packages: those of local/debian_packages.py's `up` list (Slurm with the plugin
#      packages slurm.conf needs, munge, slurmdbd, slurmrestd, mariadb-server, python3-venv),
#      npm when there is none; with --test also its `test` list (chromium, buildah, podman, ...)
#   2. a world-readable virtualenv from the system Python at ${FACTORYHUB_VENV:-/opt/factoryhub/venv}
#   3. pinned Python packages with their hashes: requirements/local.lock, or with --test
#      requirements/test.lock (the same pins plus the test tools); `make lock` makes both
#   4. factoryhub itself (non-editable, --no-deps), whenever its sources changed
#   5. configurable-http-proxy and oidc-provider in the repo's node_modules/ (npm ci)
#   6. with --test: helm (local/install_helm.sh) and podman/buildah's settings
#      (/etc/containers/containers.conf and storage.conf, only when absent)
# Each step that does something prints its time; long ones say every 20 s that they still run.
# FORCE=1 reinstalls factoryhub even when its sources did not change.
# --list-packages prints the Debian packages it would make sure of, and does nothing else.
set -euo pipefail

WITH_TEST_TOOLS=0
LIST_PACKAGES=0
for arg in "$@"; do
    case "$arg" in
        --test) WITH_TEST_TOOLS=1 ;;
        --list-packages) LIST_PACKAGES=1 ;;
        *) echo "usage: $0 [--test] [--list-packages]" >&2; exit 2 ;;
    esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FACTORYHUB_VENV:-/opt/factoryhub/venv}"
SYSTEM_PYTHON=/usr/bin/python3
PROXY_BIN="$REPO/node_modules/.bin/configurable-http-proxy"
HEARTBEAT_S=20

sections=(up)
[ "$WITH_TEST_TOOLS" = 1 ] && sections+=(test)
mapfile -t DEBIAN_PACKAGES < <("$SYSTEM_PYTHON" "$REPO/local/debian_packages.py" "${sections[@]}")
((${#DEBIAN_PACKAGES[@]})) || { echo "install: ERROR: no Debian package list" >&2; exit 1; }
if [ "$LIST_PACKAGES" = 1 ]; then
    printf '%s\n' "${DEBIAN_PACKAGES[@]}"
    exit 0
fi

say() { echo "install: $*"; }
die() { echo "install: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and writes $VENV)"

# --- progress: step lines with their times, a heartbeat while a long command runs -----------
now_ms() { local us="${EPOCHREALTIME//[!0-9]/}"; echo $((10#$us / 1000)); }
seconds_since() {  # "84 s", or "0.4 s" below 10 s
    local ms=$(($(now_ms) - $1))
    if ((ms < 10000)); then echo "$((ms / 1000)).$((ms % 1000 / 100)) s"; else echo "$((ms / 1000)) s"; fi
}
T_ALL="$(now_ms)"
STEPS=5
[ "$WITH_TEST_TOOLS" = 1 ] && STEPS=6
DONE=()
step_begin() {  # number, title
    STEP_NO="$1" STEP_TITLE="$2" STEP_T0="$(now_ms)"
    say "[$STEP_NO/$STEPS] $STEP_TITLE ..."
}
step_end() {
    say "[$STEP_NO/$STEPS] $STEP_TITLE: $(seconds_since "$STEP_T0")"
    DONE+=("$STEP_TITLE")
}

LOG="$(mktemp /tmp/factoryhub-install.XXXXXX.log)"
BG_PID=""
cleanup() {
    if [ -n "$BG_PID" ]; then kill "$BG_PID" 2>/dev/null || true; fi
    rm -f "$LOG"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run_long WHAT CMD...: CMD's output into $LOG (shown when it fails); "still WHAT (N s)" every
# HEARTBEAT_S seconds while it runs. Returns CMD's status.
run_long() {
    local what="$1" t0=$SECONDS next=$HEARTBEAT_S status=0
    shift
    "$@" >"$LOG" 2>&1 &
    BG_PID=$!
    while kill -0 "$BG_PID" 2>/dev/null; do
        sleep 0.2
        if ((SECONDS - t0 >= next)); then
            say "      still $what ($((SECONDS - t0)) s)"
            next=$((next + HEARTBEAT_S))
        fi
    done
    wait "$BG_PID" || status=$?
    BG_PID=""
    return "$status"
}
run_or_die() {  # WHAT DESCRIPTION CMD...
    local what="$1" description="$2"
    shift 2
    if ! run_long "$what" "$@"; then
        cat "$LOG" >&2
        die "$description failed"
    fi
}

# One install at a time into a virtualenv (others run this script often).
mkdir -p "$(dirname "$VENV")"
exec 9>>"$(dirname "$VENV")/.factoryhub-install.lock"
if ! flock -n 9; then
    say "waiting for another install.sh run into $VENV"
    flock 9
fi

# 1. Debian packages -------------------------------------------------------------------------
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$pkg")
done
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@"
}
if ((${#missing[@]})); then
    step_begin 1 "Debian packages (${missing[*]})"
    run_or_die "installing Debian packages" "apt-get install ${missing[*]}" \
        apt_install "${missing[@]}"
    step_end
fi

# 2. Virtualenv from the system Python (other Unix users must be able to run it) -------------
venv_python_ok() {
    [ -x "$VENV/bin/python" ] \
        && [ "$(readlink -f "$VENV/bin/python")" = "$(readlink -f "$SYSTEM_PYTHON")" ]
}
changed=0
if ! venv_python_ok; then
    step_begin 2 "virtualenv $VENV from $SYSTEM_PYTHON"
    run_or_die "making the virtualenv" "python3 -m venv $VENV" \
        "$SYSTEM_PYTHON" -m venv --clear "$VENV"
    step_end
    changed=1
fi
pip_quiet() {  # pip without its chatter (build-backend warnings)
    PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"
}

# 3. Python packages from the lock, with their hashes ----------------------------------------
#    The stamp holds `sha256sum` lines of the locks the venv holds: test.lock has local.lock's
#    pins (it is compiled with local.lock as its constraint), so it covers both.
LOCK=local.lock
[ "$WITH_TEST_TOOLS" = 1 ] && LOCK=test.lock
deps_stamp="$VENV/.factoryhub-deps.sha256"
lock_sums() { (cd "$REPO" && sha256sum "${@/#/requirements/}"); }
if ! grep -qxF "$(lock_sums "$LOCK")" "$deps_stamp" 2>/dev/null; then
    step_begin 3 "python packages from requirements/$LOCK"
    run_or_die "installing python packages" "pip install -r requirements/$LOCK" \
        pip_quiet install --require-hashes --no-deps -r "$REPO/requirements/$LOCK"
    if [ "$LOCK" = test.lock ]; then
        lock_sums test.lock local.lock >"$deps_stamp"
    else
        lock_sums local.lock >"$deps_stamp"
    fi
    step_end
    changed=1
fi

# 4. factoryhub itself, non-editable: reinstalled whenever its sources changed ----------------
src_stamp="$VENV/.factoryhub-src.sha256"
src_hash="$(cd "$REPO" && find pyproject.toml setup.py hub spawners local helpers notebooks -type f \
    -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 2>/dev/null \
    | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
install_factoryhub() {
    # pip builds in the tree: drop stale build output so deleted files do not linger.
    # factoryhub (the product) and factoryhub-local (local/: these tools, not in the wheel).
    rm -rf "$REPO/build" "$REPO"/*.egg-info "$REPO/local/build" "$REPO"/local/*.egg-info
    local status=0
    # One after the other: an older factoryhub that still held factoryhub.local is removed
    # before factoryhub-local lands (one pip call removed the new files with the old ones).
    pip_quiet install --no-deps --force-reinstall --no-build-isolation "$REPO" || status=$?
    [ "$status" != 0 ] \
        || pip_quiet install --no-deps --force-reinstall --no-build-isolation "$REPO/local" \
        || status=$?
    rm -rf "$REPO/build" "$REPO"/*.egg-info "$REPO/local/build" "$REPO"/local/*.egg-info
    return "$status"
}
if [ "${FORCE:-0}" = 1 ] || [ "$(cat "$src_stamp" 2>/dev/null)" != "$src_hash" ]; then
    step_begin 4 "factoryhub from $REPO"
    run_or_die "installing factoryhub" "pip install $REPO" install_factoryhub
    echo "$src_hash" >"$src_stamp"
    STEP_TITLE="factoryhub $("$VENV/bin/python" -c \
        'import importlib.metadata as m; print(m.version("factoryhub"))') into $VENV"
    step_end
    changed=1
fi
if [ "$changed" = 1 ]; then
    chmod -R a+rX "$VENV"
fi

# 5. npm packages, project-local: configurable-http-proxy and oidc-provider (the local IdP),
#    reinstalled whenever package-lock.json changed.
npm_stamp="$REPO/node_modules/.factoryhub-lock.sha256"
npm_hash="$(sha256sum "$REPO/package-lock.json" | cut -d' ' -f1)"
npm_ci() { cd "$REPO" && npm ci --no-audit --no-fund --loglevel=error; }  # runs in a subshell
if [ ! -x "$PROXY_BIN" ] || [ "$(cat "$npm_stamp" 2>/dev/null)" != "$npm_hash" ]; then
    step_begin 5 "npm packages (configurable-http-proxy, oidc-provider) in $REPO/node_modules"
    run_or_die "installing npm packages" "npm ci" npm_ci
    [ -x "$PROXY_BIN" ] || die "npm did not install $PROXY_BIN"
    [ -d "$REPO/node_modules/oidc-provider" ] || die "npm did not install oidc-provider"
    echo "$npm_hash" >"$npm_stamp"
    step_end
fi

# 6. With --test: helm for the chart tests, and podman/buildah settings that work on this kind
#    of machine (no systemd, no cgroup delegation): written only when the site has none.
CONTAINERS_CONF=/etc/containers/containers.conf
STORAGE_CONF=/etc/containers/storage.conf
write_container_confs() {
    mkdir -p /etc/containers
    if [ ! -e "$CONTAINERS_CONF" ]; then
        echo "writing $CONTAINERS_CONF"
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
    if [ ! -e "$STORAGE_CONF" ]; then
        echo "writing $STORAGE_CONF (overlay storage)"
        cat >"$STORAGE_CONF" <<'CONF'
# Written by factoryhub's local/install.sh --test (for the image tests).
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
CONF
    fi
}
if [ "$WITH_TEST_TOOLS" = 1 ]; then
    t0="$(now_ms)"
    tools="$(FACTORYHUB_VENV="$VENV" bash "$REPO/local/install_helm.sh" && write_container_confs)" \
        || die "test tools: ${tools:-install_helm.sh failed}"
    if [ -n "$tools" ]; then
        STEP_NO=6 STEP_TITLE="test tools" STEP_T0="$t0"
        printf '%s\n' "$tools" | sed 's/^/install:       /'
        step_end
    fi
fi

if ((${#DONE[@]})); then
    say "done in $(seconds_since "$T_ALL")"
else
    say "everything already installed ($(seconds_since "$T_ALL"))"
fi
