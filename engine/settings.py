"""A plug-in's user-visible settings: declared once, checked once, and from them the CLI's options
and the window's forms are built. Detectors and repairs (and anything else that takes settings)
import this module; it imports nothing of theirs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from engine import rates
from engine.errors import InputError


@dataclass(frozen=True)
class Setting:
    """One user-visible setting of a detector."""

    name: str  # the keyword, the saved key and (with dashes) the CLI option
    label: str  # for people: "blend images"
    kind: type  # int, float, str (a word, from `choices` when given), tuple (of floats, written "3,5,7") or list (of names)
    default: int | float | tuple
    low: int | float  # inclusive unless low_open (for a tuple: each of its numbers)
    high: int | float  # inclusive unless high_open
    help: str
    low_open: bool = False
    high_open: bool = False
    step: float | None = None  # spin-box step in the window
    shown: bool = True  # False: saved, but neither a CLI option nor a form field
    item: type = float  # a tuple's numbers: float, or int for whole numbers
    choices: tuple[str, ...] = ()  # a str setting: the words allowed (empty: any text)
    rate: bool = False  # a float (or tuple of floats) that is a rate: typed as 0.05 or 5% (engine.rates)
    flag: str = ""  # the CLI option when it differs from the name (a saved key kept for old files)

    @property
    def option(self) -> str:
        return "--" + (self.flag or self.name.replace("_", "-"))

    def range_text(self) -> str:
        if self.kind is str:
            return " or ".join(self.choices) if self.choices else "text"
        if self.kind is list:
            return "names"
        if self.rate:
            return rates.range_text(self.low, self.high, self.low_open, self.high_open)
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open else "]"
        return f"{lo}{self.low:g}, {self.high:g}{hi}"

    MAX_ITEMS: ClassVar[int] = 32

    @property
    def is_list(self) -> bool:
        return self.kind in (tuple, list)

    def default_text(self) -> str:
        return self.text(self.default)

    def text(self, value) -> str:
        """``value`` written as a user types it (``3,5,7``, ``5%``, a word): what the option takes."""
        if self.kind is str:
            return str(value)
        if self.kind is list:
            return ",".join(value)
        if self.rate:
            values = value if self.kind is tuple else (value,)
            return ",".join(rates.percent(v) for v in values)
        return ",".join(f"{v:g}" for v in value) if self.kind is tuple else f"{value:g}"

    def words(self, value) -> list[str]:
        """The command-line words that give this setting ``value`` (as given: text or its type):
        its option and the value's text."""
        return [self.option, self.text(self.check(value, self.option))]

    def check(self, value, title: str):
        """``value`` as this setting's type, or an InputError saying what is allowed."""
        if self.kind is str:
            if not isinstance(value, str) or len(value) > 200:
                raise InputError(None, f"{title} {self.label} {value!r} is not a word")
            if self.choices and value not in self.choices:
                raise InputError(None, f"{title} {self.label} {value!r}: choose {self.range_text()}")
            return value
        if self.kind is list:
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
                raise InputError(None, f"{title} {self.label} {value!r} is not a list of names")
            names = tuple(v.strip() for v in items if v.strip())
            if not 1 <= len(names) <= self.MAX_ITEMS:
                raise InputError(None, f"{title} {self.label} {value!r}: give 1 to {self.MAX_ITEMS} names "
                                 "separated by commas")
            return names
        if self.kind is tuple:
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)):
                raise InputError(None, f"{title} {self.label} {value!r} is not a list of numbers")
            items = [v for v in items if not (isinstance(v, str) and not v.strip())]
            if not 1 <= len(items) <= self.MAX_ITEMS:
                raise InputError(None, f"{title} {self.label} {value!r}: give 1 to {self.MAX_ITEMS} numbers "
                                 "separated by commas")
            number = Setting(self.name, self.label, self.item, 0, self.low, self.high, self.help,
                             self.low_open, self.high_open, rate=self.rate)
            return tuple(number.check(v.strip() if isinstance(v, str) else v, title) for v in items)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating, str)):
            raise InputError(None, f"{title} {self.label} {value!r} is not a number")
        if self.rate:
            return rates.parse_rate(value, f"{title} {self.label}", self.low, self.high, self.low_open,
                                    self.high_open)
        try:
            number = float(value)
        except ValueError:
            raise InputError(None, f"{title} {self.label} {value!r} is not a number") from None
        if not math.isfinite(number):
            raise InputError(None, f"{title} {self.label} {value!r} is not a finite number")
        if self.kind is int:
            if number != round(number):
                raise InputError(None, f"{title} {self.label} {value!r} must be a whole number")
            number = int(round(number))
        too_low = number <= self.low if self.low_open else number < self.low
        too_high = number >= self.high if self.high_open else number > self.high
        if too_low or too_high:
            raise InputError(None, f"{title} {self.label} {value!r} must be in {self.range_text()}")
        return self.kind(number)


def apply_settings(target, settings: tuple[Setting, ...], params: dict, title: str) -> None:
    """Check ``params`` against ``settings`` and set each on ``target`` (its default where absent or
    None): what a detector or a repair does with the settings it is given."""
    known = {s.name: s for s in settings}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InputError(None, f"{title} has no setting {', '.join(unknown)}; it has {', '.join(known) or 'none'}")
    for s in settings:
        value = params.get(s.name)
        setattr(target, s.name, s.default if value is None else s.check(value, title))
