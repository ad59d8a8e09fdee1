"""efbench: simulated distributed optimization with compression and error compensation."""

__version__ = "0.1.0"
