"""Prometheus metrics of the shared Slurm poller, on the hub's own /hub/metrics endpoint
(JupyterHub exposes prometheus_client's default registry). The spawner's own metrics are in
``factoryhub.spawners.metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

POLLER_QUERIES = Counter(
    "factoryhub_slurm_poller_queries", "Slurm queries made by the shared poller"
)
POLLER_FAILURES = Counter(
    "factoryhub_slurm_poller_failures", "Poller queries that Slurm did not answer"
)
POLLER_LATENCY = Histogram(
    "factoryhub_slurm_poller_query_seconds",
    "How long one poller query (squeue) took",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SERVERS = Gauge(
    "factoryhub_servers", "Servers whose jobs the poller watches, by job state", ["state"]
)
ORPHANS = Counter("factoryhub_orphan_jobs_cancelled", "Jobs no server owned, cancelled")
ENDED = Counter(
    "factoryhub_server_jobs_ended", "Server jobs that ended on their own, by Slurm state", ["state"]
)
DASK_WORKERS_CANCELLED = Counter(
    "factoryhub_dask_worker_jobs_cancelled", "Dask worker jobs cancelled because their server ended"
)
