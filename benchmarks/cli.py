"""What every benchmark does the same way: its command line's common flags, progress on
stderr, the statistics of its samples, its metadata, and one JSON object on stdout (and in
``--json-out``).

A benchmark builds its parser with ``parser()``, picks comma-separated subsets with
``subset()``, summarizes samples with ``summarize()`` and ends with ``finish()``; those that
start hubs and Slurm jobs run through ``run_as_root()`` (refused unless root, SIGTERM turned
into the KeyboardInterrupt their clean-up handles).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VERSIONED = ("jupyterhub", "batchspawner", "jupyterlab", "jupyter_server", "factoryhub")


def logger(name: str) -> Callable[[str], None]:
    """A progress printer for benchmark ``name``: a timestamped line on stderr."""

    def log(message: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    return log


def parser(
    doc: str | None, prog: str | None = None, keep_state: bool = False
) -> argparse.ArgumentParser:
    """An argument parser described by the first line of ``doc``, with ``--json-out`` (and
    ``--keep-state`` for benchmarks that keep their hub logs and databases on request)."""
    first = (doc or "").strip().split("\n", 1)[0]
    p = argparse.ArgumentParser(prog=prog, description=first)
    p.add_argument("--json-out", type=Path, help="also write the JSON result here")
    if keep_state:
        p.add_argument(
            "--keep-state", action="store_true", help="keep the temp dir (hub logs, databases)"
        )
    return p


def subset(p: argparse.ArgumentParser, flag: str, value: str, allowed: Sequence[str]) -> list[str]:
    """The comma-separated names of ``value``, in ``allowed``'s order; a parser error names
    the flag for an unknown or empty choice."""
    picked = [v.strip() for v in value.split(",") if v.strip()]
    unknown = sorted(set(picked) - set(allowed))
    if unknown or not picked:
        p.error(f"{flag}: unknown or empty: {unknown or picked} (choose from {','.join(allowed)})")
    return [a for a in allowed if a in picked]


def summarize(
    samples: Sequence[float],
    *,
    suffix: str = "_s",
    digits: int = 3,
    keep_samples: bool = True,
    mean: bool = False,
) -> dict[str, Any]:
    """n, p50 (median), p95 (inclusive quantiles, n=20), min, max (and the mean, and the
    samples in their order), rounded to ``digits``; keys end in ``suffix`` (the unit)."""
    if not samples:
        raise ValueError("no samples")
    data = [float(s) for s in samples]
    if len(data) == 1:
        p95 = data[0]
    else:
        p95 = statistics.quantiles(data, n=20, method="inclusive")[18]
    out: dict[str, Any] = {
        "n": len(data),
        f"p50{suffix}": round(statistics.median(data), digits),
        f"p95{suffix}": round(p95, digits),
        f"min{suffix}": round(min(data), digits),
        f"max{suffix}": round(max(data), digits),
    }
    if mean:
        out[f"mean{suffix}"] = round(statistics.fmean(data), digits)
    if keep_samples:
        out[f"samples{suffix}"] = [round(s, digits) for s in data]
    return out


def versions() -> dict[str, str | None]:
    """The versions of the Jupyter parts, factoryhub, Slurm (``sbatch --version``), Python."""
    found: dict[str, str | None] = {}
    for dist in VERSIONED:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = None
    try:
        found["slurm"] = subprocess.run(
            ["sbatch", "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except OSError:
        found["slurm"] = None
    found["python"] = sys.version.split()[0]
    return found


def git_head() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    return None


def metadata(**extra: Any) -> dict[str, Any]:
    """When and where the figures were taken, then ``extra``."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "nproc": os.cpu_count(),
        **extra,
    }


def private_state(prefix: str) -> Path:
    """A fresh temporary folder only root can read (hub databases, tokens, logs)."""
    state = Path(tempfile.mkdtemp(prefix=prefix))
    state.chmod(0o700)
    return state


def new_token() -> str:
    return secrets.token_hex(32)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def finish(result: Mapping[str, Any], json_out: Path | str | None) -> int:
    """Print ``result`` as one JSON object on stdout, and write it to ``json_out``."""
    text = json.dumps(result, indent=2)
    print(text)
    if json_out:
        Path(json_out).write_text(text + "\n")
    return 0


def run_as_root(
    name: str,
    run: Callable[[argparse.Namespace], Mapping[str, Any]],
    args: argparse.Namespace,
    needs: Sequence[Path] = (),
) -> int:
    """``finish(run(args))`` as root, with SIGTERM as an interrupt; 2 when not root or when
    a file of ``needs`` is missing (the proxy, say)."""
    if os.geteuid() != 0:
        print(f"{name}: run as root (jobs start as benchmark users)", file=sys.stderr)
        return 2
    for path in needs:
        if not path.exists():
            print(f"{name}: {path} is missing (npm ci)", file=sys.stderr)
            return 2
    with sigterm_as_interrupt():
        result = run(args)
    return finish(result, args.json_out)
