"""factoryhub.spawners: the Slurm spawner and what it stands on.

Dependency direction: the hub configures these classes through traitlets; nothing
here imports ``factoryhub.hub``. The Slurm client at the bottom knows nothing of
JupyterHub.
"""
