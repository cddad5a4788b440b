"""Narrow msgspec views of Slurm's ``--json`` documents (sacct, squeue, sinfo, sacctmgr)."""
