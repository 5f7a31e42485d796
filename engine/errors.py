"""The one error type the CLI and the GUI show to users as a one-line message."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """A file or value from the user that cannot be used, and why.

    ``str(err)`` is a single line that names the file and the problem, so
    callers can show it as is.
    """

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = " ".join(str(problem).split())  # one line, whatever the cause said
        super().__init__(f"{shown_path(path)}: {self.problem}" if path is not None else self.problem)


class UntrustedModelError(InputError):
    """A model file would run code of its own when loaded."""


def shown_path(path: str | Path) -> str:
    """A path as one line: control characters (a newline in a file name) shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))


def first_line(err: BaseException) -> str:
    """The first line of an exception's text, short enough for a one-line message."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]
