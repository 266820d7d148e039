"""Job tracking: stock batchspawner vs factoryhub, on one Slurm, side by side.

Run as root on a machine with the local Slurm up::

    cd /path/to/factoryhub   # the repository
    /opt/factoryhub/venv/bin/python -m benchmarks.job_tracking [--servers N] [--minutes M]
        [--trials T] [--burst B] [--only load,detection,burst] [--json-out PATH]

One variant at a time (stock first, then factoryhub), each in a hub of its own on
loopback ports 28000+ (see ``benchmarks/hubs.py``), with the same benchmark users
``fhtrack01..``. Three measurements:

- ``load``: N servers running, M minutes: slurmctld RPCs (``sdiag`` before/after) and the
  processes the hub starts (exact, from the kernel's process-event connector; also the
  20 ms ``/proc`` sampling the brief asked for, which misses most ~5 ms ``squeue`` runs).
- ``detection``: a server's job is cancelled behind the hub's back (``scancel`` as root):
  seconds until the hub has dropped the server *and* its proxy route.
- ``burst``: B users spawn at once while a reader does ``GET /hub/api/users`` every 100 ms:
  API latencies, error answers, whether (and when) every spawn became ready.

One JSON object goes to stdout (and to ``--json-out``); progress goes to stderr.

Modules: ``main`` (the driver), ``stats`` (pure functions), ``procs`` (process counting),
``hubs`` (Slurm and hub helpers), ``load``, ``detection`` and ``burst`` (one per phase).
"""
