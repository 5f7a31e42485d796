"""Our files: written atomically, so nothing a user had is left half-written; read with one check
of what kind of file they are."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import InputError, first_line


def check_writable(path: str | Path) -> Path:
    """Fail early, naming the file, when ``path`` cannot be an output file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a folder; give a file name for the output")
    if not path.parent.exists():
        raise InputError(path, f"folder {path.parent} does not exist")
    return path


@contextmanager
def atomic_open(path: str | Path, newline: str | None = None) -> Iterator:
    """A text file that replaces ``path`` only once fully written and synced."""
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; users expect an ordinary file
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_csv(path: str | Path, header: list[str], rows: list[list]) -> None:
    with atomic_open(path, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def read_json_file(path: str | Path, kind: str, what: str) -> dict:
    """A JSON object whose ``kind`` is ``kind``, or an InputError naming the file and the problem."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(path, f"not a {what} file (not readable JSON: {first_line(err)})") from None
    if not isinstance(raw, dict) or raw.get("kind") != kind:
        raise InputError(path, f"not a {what} file (JSON without kind '{kind}')")
    return raw
