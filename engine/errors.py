"""The one error type the CLI and the GUI show to users as a one-line message."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """A file or value from the user that cannot be used, and why.

    ``str(err)`` is a single line that names the file and the problem, so
    callers can show it as is.
    """

    def __init__(self, path: str | Path | None, problem: str, settings: tuple[str, ...] = ()):
        self.path = None if path is None else Path(path)
        # A setting the problem names is written {name} in it (one of SETTING_WORDS), so each
        # front end says it in its own words: the CLI its flag, the window its field.
        self.template = " ".join(str(problem).split())  # one line, whatever the cause said
        self.settings = tuple(settings)
        self.problem = self._fill(SETTING_WORDS)
        super().__init__(self._line(self.problem))

    def said_as(self, names: dict[str, str]) -> str:
        """The one-line message with each setting it names said as ``names`` say it (a CLI's
        flags); settings ``names`` lacks keep their plain words."""
        return self._line(self._fill({**SETTING_WORDS, **names}))

    def _fill(self, names: dict[str, str]) -> str:
        text = self.template
        for setting in self.settings:  # plain replacement: user text in the message may hold braces
            text = text.replace("{" + setting + "}", names.get(setting, setting))
        return text

    def _line(self, problem: str) -> str:
        return f"{shown_path(self.path)}: {problem}" if self.path is not None else problem


# The settings an engine message may name, in plain words (what the window says). The CLI says
# them as its flags (cli.options.FLAGS).
SETTING_WORDS = {
    "scale": "input scaling",
    "trust_model": "tick Trust model code",
    "target": "target",
    "poisoned": "poisoned set",
    "scan": "scan",
    "clean_data": "clean data",
    "poisoned_data": "a poisoned set with its target",
    "images": "images",
}


class UntrustedModelError(InputError):
    """A model file would run code of its own when loaded."""


def shown_path(path: str | Path) -> str:
    """A path as one line: control characters (a newline in a file name) shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))


def first_line(err: BaseException) -> str:
    """The first line of an exception's text, short enough for a one-line message."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]
