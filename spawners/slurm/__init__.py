"""Slurm, and only Slurm: the client contract, the argv builders and the one parser of
Slurm's v0.0.38 job JSON, the local (commands) and REST (slurmrestd) clients, the tokens of
the REST mode, associations, and the shared poller. Knows nothing of JupyterHub."""
