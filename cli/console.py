"""What the command line shows while it works: progress, notes and warnings, all on standard error.

Progress is drawn with ``rich.progress`` (a Keras dependency, so no new install) on the real
terminal: :mod:`engine.tf_noise` moves file descriptor 2 onto a pipe that drops TensorFlow's
chatter line by line, so a bar that redraws with ``\\r`` could never pass through it. The bar
therefore writes to the descriptor the filter saved. When standard error is not a terminal (a
log file, CI, a pipe), each stage is one plain line instead. ``--quiet`` silences progress and
notes; warnings and errors always show.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from rich.progress import ProgressColumn
from rich.text import Text

from engine.progress import Job, Progress, run

_quiet = False
_stream: TextIO | None = None


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = bool(quiet)


def terminal() -> TextIO:
    """Where progress goes: the terminal the TensorFlow filter saved, else standard error."""
    global _stream
    from engine import tf_noise

    fd = tf_noise.terminal_fd()
    if fd is None:
        return sys.stderr
    if _stream is None or _stream.closed:
        _stream = os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")
    return _stream


def note(text: str) -> None:
    """A line about what is happening (silenced by --quiet)."""
    if not _quiet:
        print(text, file=terminal(), flush=True)


def warn(text: str) -> None:
    """A line the user must see, --quiet or not."""
    print(text, file=terminal(), flush=True)


class PlainLines:
    """Not a terminal: one line as each stage begins."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self._stage: str | None = None

    def __call__(self, step: Progress) -> None:
        if step.stage != self._stage:
            self._stage = step.stage
            print(f"{step.stage}…", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class Bar:
    """A terminal: a ``rich`` bar per stage with its count, rate, time spent and time left."""

    def __init__(self, stream: TextIO):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TaskProgressColumn,
                                   TextColumn, TimeElapsedColumn, TimeRemainingColumn)

        console = Console(file=stream, stderr=True, highlight=False)
        self.progress = RichProgress(
            TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), MofNCompleteColumn(),
            RateColumn(), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
            console=console, redirect_stdout=False, redirect_stderr=False, refresh_per_second=10,
        )
        self._task = None
        self._stage: str | None = None
        self._last = 0.0
        self.progress.start()

    def __call__(self, step: Progress) -> None:
        now = time.monotonic()
        if step.stage == self._stage and step.done < step.total and now - self._last < 0.05:
            return  # rich redraws 10 times a second: a job of tiny steps need not tell it more often
        self._last = now
        total = max(int(step.total), 1)
        if step.stage != self._stage or self._task is None:
            if self._task is not None:  # the stage before ends full
                t = self.progress.tasks[-1]
                self.progress.update(self._task, completed=t.total)
            self._stage = step.stage
            self._task = self.progress.add_task(step.stage or "working", total=total)
        self.progress.update(self._task, completed=min(step.done, total), total=total)

    def close(self) -> None:
        self.progress.stop()


class RateColumn(ProgressColumn):
    """Steps a second (images, blends, classes: whatever the stage counts)."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("   -/s", style="progress.data.speed")
        return Text(f"{speed:6.1f}/s" if speed < 1000 else f"{speed:6.0f}/s", style="progress.data.speed")


def reporter(stream: TextIO | None = None):
    """The progress display for this process: a bar on a terminal, plain lines elsewhere."""
    stream = stream if stream is not None else terminal()
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError, OSError):
        tty = False
    return Bar(stream) if tty and os.environ.get("TERM") != "dumb" else PlainLines(stream)


def drive(job: Job, quiet: bool = False):
    """Run ``job`` to its end, showing its progress unless quiet (``--quiet``, or a JSON output)."""
    if quiet or _quiet:
        return run(job)
    show = reporter()
    try:
        return run(job, show)
    finally:
        show.close()
