"""The Reports service: papermill report notebooks run as Slurm jobs, now or on a schedule,
with a history of every run. (Being built: parameters, schedules and the run store so far.)"""
