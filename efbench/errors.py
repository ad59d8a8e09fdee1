"""Errors that reach the user as one line, naming the config key at fault."""

from __future__ import annotations

from collections.abc import Iterable


class EfbenchError(Exception):
    """Base class: anything raised as an EfbenchError is printed without a traceback."""


class ConfigError(EfbenchError):
    """An invalid configuration value; ``key`` is the dotted config path."""

    def __init__(self, key: str, message: str, allowed: Iterable[object] | str | None = None):
        self.key = key
        text = f"{key}: {message}"
        if allowed is not None:
            if not isinstance(allowed, str):
                allowed = ", ".join(str(a) for a in allowed)
            text += f" (allowed: {allowed})"
        super().__init__(text)


class DataError(EfbenchError):
    """A dataset that cannot be obtained or fails verification."""


def check_choice(key: str, value: object, allowed: Iterable[object]) -> None:
    """Raise ConfigError unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(key, f"unknown value {value!r}", allowed)


def check_positive(key: str, value: object, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float, or raise if it is not a finite positive number (a bool is
    not a number here: ``true`` would read as 1.0)."""
    if isinstance(value, bool):
        raise ConfigError(key, f"must be a number, got {value!r}")
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be a number, got {value!r}") from None
    ok = v >= 0 if allow_zero else v > 0
    if not ok or v != v or v == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(key, f"must be a finite number {bound}, got {value!r}")
    return v
