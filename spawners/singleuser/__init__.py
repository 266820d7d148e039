"""What runs inside the user's Slurm job: the ``factoryhub-singleuser`` entry point
(:mod:`.main`), the ready call to the hub (:mod:`.ready`) and the Dask dashboard address."""
