"""Run FactoryHub on one machine: a loopback Slurm (munge, slurmctld, slurmd) and the hub."""
