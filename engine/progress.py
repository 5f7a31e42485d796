"""Long work is a generator that yields :class:`Progress` and returns its result."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """A step of long work: done of total, the stage in words, and optionally a partial result."""
    done: int
    total: int
    stage: str = ""
    partial: object = None  # a job's results so far, for a window that shows them as they come

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)


Job = Generator[Progress, None, T]


def run(job: Job[T], on_progress: Callable[[Progress], None] | None = None) -> T:
    """Drive ``job`` to the end and return its result (the CLI's and the tests' loop)."""
    while True:
        try:
            step = next(job)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(step)
