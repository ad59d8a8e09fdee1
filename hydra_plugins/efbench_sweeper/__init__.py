"""Hydra sweeper plugin of efbench: jobs that differ only in batchable keys run as one."""
