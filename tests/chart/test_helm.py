"""helm lint --strict and helm template with the pinned helm, for two Kubernetes versions; the
rendered objects validated offline with kubernetes-validate --strict; bad values refused.

"Validated", never "deployed": no kube-apiserver runs here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest

from .helm_tools import (
    ALL_OPTIONS,
    CHART,
    KUBE_VERSIONS,
    REPO,
    helm_path,
    lint,
    pinned_helm_version,
    render,
    require_helm,
    run_helm,
    template,
)

pytestmark = pytest.mark.helm

VALUE_FILES = {
    "defaults": (),
    "all-options": (ALL_OPTIONS,),
    "example": (REPO / "helm" / "examples" / "factory-values.yaml",),
}


def test_helm_is_the_pinned_official_binary(helm: str) -> None:
    out = subprocess.run(
        [helm, "version", "--template", "{{.Version}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == pinned_helm_version()


def test_chart_supports_the_tested_versions() -> None:
    chart = (CHART / "Chart.yaml").read_text()
    assert 'kubeVersion: ">=1.25.0-0"' in chart
    assert KUBE_VERSIONS[0] == "1.25.0"
    supported = kubernetes_validate.utils.all_versions()
    for version in KUBE_VERSIONS:
        assert version in supported


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("which", sorted(VALUE_FILES))
def test_lint_strict(helm: str, which: str, kube: str) -> None:
    result = lint(helm, VALUE_FILES[which], kube=kube)
    assert result.returncode == 0, result.output
    assert "0 chart(s) failed" in result.output
    assert "[WARNING]" not in result.output and "[ERROR]" not in result.output


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("which", sorted(VALUE_FILES))
def test_rendered_objects_validate_strictly(helm: str, which: str, kube: str) -> None:
    """Every rendered object passes kubernetes-validate --strict (unknown fields refused)."""
    rendered = render(helm, VALUE_FILES[which], kube=kube)
    assert len(rendered.docs) >= 10, rendered.names()
    problems = []
    for doc in rendered.docs:
        try:
            kubernetes_validate.validate(doc, kube, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {e.path}")
    assert problems == []


def test_the_validator_does_refuse_a_bad_object(helm: str) -> None:
    """kubernetes-validate --strict really looks: an unknown container field fails it."""
    doc = render(helm).get("Deployment", "fh-factoryhub-hub")
    doc["spec"]["template"]["spec"]["containers"][0]["imagePolicy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBE_VERSIONS[0], strict=True)


@pytest.mark.process
def test_the_cli_validates_the_rendered_files(helm: str, tmp_path: Path) -> None:
    """The same through kubernetes-validate's command line, as an operator would run it."""
    files = []
    for which, values in sorted(VALUE_FILES.items()):
        path = tmp_path / f"{which}.yaml"
        path.write_text(render(helm, values, kube=KUBE_VERSIONS[-1]).text)
        files.append(str(path))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubernetes_validate",
            "--strict",
            "--quiet",
            "-k",
            KUBE_VERSIONS[0],
            "-k",
            KUBE_VERSIONS[-1],
            *files,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("sets", "named"),
    [
        ({"bogus": "1"}, "'bogus' not allowed"),
        ({"site.slurm.acces": "rest"}, "'acces' not allowed"),
        ({"site.slurm.access": "ssh"}, "/site/slurm/access"),
        ({"hub.apiService.port": "http"}, "/hub/apiService/port"),
        ({"persistence.enabled": "maybe"}, "/persistence/enabled"),
        ({"networkPolicy.slurmrestd.cidrs[0]": "10.0.0.0/40"}, "/networkPolicy/slurmrestd/cidrs/0"),
        ({"site.spawner.start_timeout": "5"}, "/site/spawner/start_timeout"),
    ],
)
def test_a_bad_value_fails_lint_and_template_naming_the_key(
    helm: str, sets: dict[str, str], named: str
) -> None:
    for result in (lint(helm, sets=sets), template(helm, sets=sets)):
        assert result.returncode != 0
        assert named in result.output, result.output


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        ({"site.slurm.access": "local"}, 'site.slurm.access is "local"'),
        (
            {"site.auth.type": "local", "site.auth.local.group": "factoryhub"},
            'site.auth.type is "local"',
        ),
        ({"database.type": "postgresql"}, "database.postgresql.existingSecret"),
        ({"ingress.enabled": "true", "ingress.tls.enabled": "true"}, "ingress.tls.secretName"),
    ],
)
def test_what_the_chart_cannot_run_fails_template(
    helm: str, sets: dict[str, str], says: str
) -> None:
    result = template(helm, sets=sets)
    assert result.returncode != 0
    assert says in result.output, result.output


def test_local_access_is_refused_with_the_way_out(helm: str) -> None:
    result = template(helm, sets={"site.slurm.access": "local"})
    assert "set site.slurm.access: rest" in result.output
    assert "slurmrestd" in result.output


def test_notes_say_what_is_missing(helm: str) -> None:
    """NOTES.txt (rendered by a client-side dry run: no cluster) names what is left to do."""

    def notes(*values: Path) -> str:
        result = run_helm(
            helm,
            ("install", "fh", str(CHART), "--dry-run=client", "-n", "factory", *_values(values)),
        )
        assert result.returncode == 0, result.output
        return result.stdout.split("NOTES:", 1)[1]

    text = notes()
    assert "site.hub.connect_url is empty" in text
    assert "no OIDC client secret" in text and "no Slurm JWT key" in text
    assert "site.hub.public_url is not set" in text
    text = notes(REPO / "helm" / "examples" / "factory-values.yaml")
    assert "People open: https://notebooks.factory.example.org" in text
    assert "connect_url is empty" not in text and "NOTE:" not in text


def _values(paths: tuple[Path, ...]) -> list[str]:
    return [arg for p in paths for arg in ("-f", str(p))]


def test_a_missing_helm_fails_with_the_way_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without helm the chart tests fail (they never skip), saying how to install it."""
    monkeypatch.setenv("FACTORYHUB_HELM", "/nonexistent/helm")
    assert helm_path() is None
    with pytest.raises(pytest.fail.Exception, match=r"bash local/install\.sh --test"):
        require_helm()
