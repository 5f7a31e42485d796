"""Model-level statistics as plug-ins: each says how it reads what the scan measured, its null
and p-value per class, its share of the false-alarm budget, and its columns.

A statistic is one module in this package: a subclass of :class:`Statistic` decorated with
:func:`register`. The verdict (:func:`engine.scan.evidence.judge`) loops over what is registered,
and so do the scan's rows (JSON), the CLI's table, the window's table and the audit report, each
through the statistic's :attr:`Statistic.columns`. Adding a statistic touches its module, its
tests and a section in docs/scan.md.

The scan's two built-in statistics read what its stages measure (the margin ascent and the mask
refinement); a statistic that needs a measurement of its own implements :meth:`Statistic.measure`,
a job run on the network and the clean faces after those stages, whose values it keeps on the
result (``result.extra[name]``).
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

from engine.progress import Job


@dataclass(frozen=True)
class Column:
    """One column a statistic adds: ``key`` in a scan row (the JSON), its header in the tables
    (``header``, CLI and window) and in the report (``report``), and how a value reads."""

    key: str
    header: str
    fmt: Callable[[object], str]
    report: str | None = None  # None: not in the report's table
    table: bool = True  # in the CLI's and the window's tables
    tip: str = ""  # what the column means, for the window's tooltip

    def text(self, value) -> str:
        """The value as the tables show it ("" when there is none)."""
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            return ""
        return self.fmt(value)


class Statistic(ABC):
    """A model-level statistic: one value per class, a p-value per class against the other
    classes, a share of the family-wise false-alarm budget."""

    name: ClassVar[str]  # "margin"
    title: ClassVar[str]  # "Largest margin (MM-BD)"
    summary: ClassVar[str]
    weight: ClassVar[float] = 1.0  # its share of the budget, before the shares are normalised
    order: ClassVar[int] = 100
    columns: ClassVar[tuple[Column, ...]] = ()
    steps: ClassVar[int] = 0  # the Progress steps its own measurement yields (the scan's bar counts them)

    @abstractmethod
    def values(self, result) -> dict[int, float]:
        """What the scan measured of each class it can speak for (read from ``result``)."""

    def candidates(self, values: dict[int, float], num_classes: int) -> list[int]:
        """The classes it judges (default: every class it has a value for)."""
        return list(values)

    @abstractmethod
    def p_value(self, label: int, values: dict[int, float], flagged: list[int]) -> tuple[float | None, float | None]:
        """(p-value, an index to show or None) of class ``label`` against the others; p None when
        the others give no null. ``flagged``: classes already flagged (step-down)."""

    def tests(self, values: dict[int, float], num_classes: int) -> int:
        """How many classes it tests: the Bonferroni factor of its p-values."""
        return len(values)

    def unusable(self, values: dict[int, float]) -> str:
        """Why no class got a p-value, said in the verdict's reasons."""
        return f"{self.title} gives no null (too few classes, or all alike)"

    def row(self, result, label: int, evidence) -> dict:
        """This statistic's fields of class ``label``'s row (keys of :attr:`columns` and more)."""
        return {}

    def measure(self, net, clean, scaling: str, result) -> Job[None]:
        """A measurement of its own, after the scan's stages (none by default): yields Progress of
        :attr:`steps` steps and keeps its values in ``result.extra[name]``. ``clean``: the scan's
        clean faces, fitted to the network (None when re-judging a saved scan without them: a
        statistic that needs faces then measures nothing and says so in ``result.notes``)."""
        return
        yield


def p_text(p: float | None) -> str:
    """The one way a p-value is written (the CLI, the window, the report): three decimals down to
    0.001, then two significant digits in scientific notation; "n/a" when there is none."""
    if p is None or not np.isfinite(p):
        return "n/a"
    if p >= 0.001:
        return f"{p:.3f}"
    return f"{p:.1e}"


MIN_NULL = 8  # fewer usable other classes than this: a statistic's null cannot be estimated
MAD_CONSISTENCY = 1.4826  # MAD x this estimates a normal's standard deviation


def laplace_tail(value: float, others: np.ndarray, lower: bool) -> tuple[float | None, float | None]:
    """(robust z, one-sided p-value) of ``value`` among ``others`` under a Laplace (double-
    exponential) null with their median and MAD: ``p = exp(-d ln 2 / MAD) / 2`` at a distance
    ``d`` beyond the median on the side asked for (the ``lower`` tail or the upper). Heavier than a
    normal's tail, robust to a few outliers among ``others``; (None, None) when they are too few or
    all alike."""
    others = others[np.isfinite(others)]
    if len(others) < MIN_NULL or not np.isfinite(value):
        return None, None
    median = float(np.median(others))
    mad = float(np.median(np.abs(others - median)))
    if not mad > 0:
        return None, None
    beyond = (median - value) if lower else (value - median)
    scaled = beyond * math.log(2.0) / mad
    return beyond / (MAD_CONSISTENCY * mad), (0.5 * math.exp(-scaled) if scaled >= 0 else 1.0 - 0.5 * math.exp(scaled))


def rounded(v, digits: int = 4) -> float | None:
    """A value as a row keeps it: rounded, None when missing or not finite (JSON null)."""
    return None if v is None or not np.isfinite(v) else round(float(v), digits)


STATISTICS: dict[str, Statistic] = {}


def register(cls: type[Statistic]) -> type[Statistic]:
    """Class decorator: make a statistic count in every verdict (its name must be new)."""
    if cls.name in STATISTICS:
        raise ValueError(f"statistic {cls.name!r} registered twice")
    STATISTICS[cls.name] = cls()
    return cls


def unregister(name: str) -> None:
    """Take a statistic out again (tests that register a toy one)."""
    STATISTICS.pop(name, None)


def active() -> list[Statistic]:
    """The registered statistics, in their order."""
    return sorted(STATISTICS.values(), key=lambda s: (s.order, s.name))


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_discover()
