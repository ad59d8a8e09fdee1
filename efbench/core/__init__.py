"""Numerics with no config and no I/O: the compiled building blocks, compressors, the
network model, stepsize schedules, topologies and participation."""
