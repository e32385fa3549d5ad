"""Range checks of architecture knobs: a value the network could be built with but not run (zero channels, a
string where a count belongs) is refused when the plans are read, naming the knob."""

from __future__ import annotations


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(value, knob: str) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{knob} must be a positive integer, got {value!r}")
    return value


def non_negative_int(value, knob: str) -> int:
    if not _is_int(value) or value < 0:
        raise ValueError(f"{knob} must be a non-negative integer, got {value!r}")
    return value


def fraction(value, knob: str) -> float:
    """A number in (0, 1]."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1:
        raise ValueError(f"{knob} must be a number in (0, 1], got {value!r}")
    return value


def boolean(value, knob: str) -> bool:
    """true or false in the plans' JSON; not 0/1 or a string, which would read as a different switch."""
    if not isinstance(value, bool):
        raise ValueError(f"{knob} must be true or false, got {value!r}")
    return value
