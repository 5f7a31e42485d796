"""One convention for every rate, share and budget a user types (false rejection, false alarms,
accuracy drops, sparsity, held-out and stamped shares): a fraction (``0.05``) or a percent with
its sign (``5%``), the two read the same way. A bare number of 1 or more is refused rather than
guessed at, since ``5`` could mean either; it is what older versions took as a percent."""

from __future__ import annotations

import math

from engine.errors import InputError


def parse_rate(text, what: str, low: float = 0.0, high: float = 1.0, low_open: bool = False,
               high_open: bool = False) -> float:
    """``text`` (``"5%"``, ``"0.05"`` or a number) as a fraction in the given range, or an
    InputError naming ``what`` and the two ways to write it."""
    if isinstance(text, bool):
        raise InputError(None, f"{what} {text!r} is not a rate")
    percent = isinstance(text, str) and text.strip().endswith("%")
    body = text.strip()[:-1].strip() if percent else text
    try:
        value = float(body)
    except (TypeError, ValueError):
        raise InputError(None, f"{what} {text!r} is not a rate: write a fraction such as 0.05 or a percent "
                         "such as 5%") from None
    if not math.isfinite(value):
        raise InputError(None, f"{what} {text!r} is not a finite rate")
    if percent:
        value /= 100.0
    elif isinstance(text, str) and value >= 1 and high <= 1:
        raise InputError(None, f"{what} {text!r}: write a rate as a fraction ({value / 100:g}) or a percent "
                         f"({value:g}%), not a bare number of 1 or more")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        raise InputError(None, f"{what} {text!r} must be in {range_text(low, high, low_open, high_open)}")
    return value


def percent(value: float) -> str:
    """A fraction as a short percent: 0.05 -> ``5%``, 0.025 -> ``2.5%``."""
    return f"{100 * value:g}%"


def range_text(low: float, high: float, low_open: bool = False, high_open: bool = False) -> str:
    """An interval of rates as people read it: ``[0%, 100%)``."""
    return f"{'(' if low_open else '['}{percent(low)}, {percent(high)}{')' if high_open else ']'}"
