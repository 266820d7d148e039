"""Prometheus metrics of the spawner, on the hub's own /hub/metrics endpoint (JupyterHub
exposes prometheus_client's default registry). The shared poller's are in
``factoryhub.spawners.slurm.metrics``."""

from __future__ import annotations

from prometheus_client import Histogram

SPAWN_SECONDS = Histogram(
    "factoryhub_spawn_seconds",
    "From the spawn request to JupyterLab answering, by profile",
    ["profile"],
    buckets=(1, 2, 3, 5, 10, 30, 60, 120, 300, 600, 1800),
)
