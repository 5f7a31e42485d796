"""Option parsing of the command line: flags, their values and the messages that name them."""

from __future__ import annotations

import numpy as np

from engine.detectors import DETECTORS, detector_class
from engine.errors import InputError


def parse_numbers(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise InputError(None, f"{option} {text!r}: give numbers separated by commas") from None
    if not values:
        raise InputError(None, f"{option} {text!r} is empty")
    if not all(np.isfinite(values)):
        raise InputError(None, f"{option} {text!r}: give finite numbers")
    return values


def parse_frrs(text: str, option: str = "--frr") -> tuple[float, ...]:
    """False-rejection rates given in percent, as shares."""
    values = parse_numbers(text, option)
    for v in values:
        if not 0 <= v < 100:
            raise InputError(None, f"{option} {text!r}: each rate must be a percentage in [0, 100)")
    return tuple(v / 100.0 for v in values)


def parse_detector_names(text: str, option: str = "--detectors") -> list[str]:
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise InputError(None, f"{option} {text!r}: name at least one detector ({', '.join(DETECTORS)})")
    for n in names:
        detector_class(n)
    return list(dict.fromkeys(names))
