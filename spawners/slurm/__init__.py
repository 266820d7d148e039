"""Slurm, and only Slurm; knows nothing of JupyterHub, and imports nothing of the spawner but
the model (``spawners.model``) and ``spawners.user_env``.

- ``client``: the :class:`SlurmClient` Protocol, ``JobInfo``, ``CommandResult`` and the two
  failures (``SlurmUnavailable``: no answer; ``SlurmError``: refused);
- ``commands``: Slurm's commands as data, sans-IO (argv + the reader of their answer);
- ``job_json``: the one parser of the v0.0.38 JSON (``squeue``/``sacct``/``sinfo --json``
  and slurmrestd);
- ``local`` (commands on the hub host, async), ``rest`` (slurmrestd, with ``tokens``) and
  ``blocking`` (commands run synchronously: notebooks' helpers, local tools, tests);
  ``access.make_client`` picks the hub's client from the site file;
- ``poller`` (the shared poller, ``poller_for``), ``comments``, ``metrics``;
- ``accounts`` (associations, sacctmgr), ``sbatch_options`` (a script's #SBATCH lines).
"""
