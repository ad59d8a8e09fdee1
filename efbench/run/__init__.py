"""A run from claim to commit: the runner, its results on disk, provenance."""
