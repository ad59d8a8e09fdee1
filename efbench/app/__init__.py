"""The command-line entry points, help, Hydra callbacks and trackers."""
