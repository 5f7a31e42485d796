"""Files in and out: what may be read (regular files and folders only), what may be replaced
(only files of the kind we write), atomic writes, and JSON read with one check of its kind."""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import InputError, first_line

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_JSON_BYTES = 512 * 1024 * 1024  # a calibration with STRIP blend images is a few MB


def check_readable_file(path: str | Path, what: str = "file") -> Path:
    """``path`` as a regular file that exists, or an InputError. Named pipes, sockets and devices
    are refused before anything opens them (opening a pipe waits for a writer forever)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except OSError as err:
        raise InputError(path, f"cannot read: {err.strerror or err}") from None
    if stat.S_ISDIR(mode):
        raise InputError(path, f"is a folder, not a {what}")
    if not stat.S_ISREG(mode):
        raise InputError(path, f"is not a regular file (a pipe, socket or device); not a {what}")
    return path


def is_regular_or_folder(path: Path) -> bool:
    """Whether ``path`` is a regular file or a folder (not a FIFO, device or socket)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


def check_writable(path: str | Path) -> Path:
    """Fail early, naming the file, when ``path`` cannot be an output file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a folder; give a file name for the output")
    if not path.parent.exists():
        raise InputError(path, f"folder {path.parent} does not exist")
    if path.exists() and not path.is_file():
        raise InputError(path, "exists and is not a regular file; not overwritten")
    return path


def check_output(path: str | Path, is_ours: Callable[[Path], bool], what: str) -> Path:
    """An output path that is new, or holds a file of the kind we write (``is_ours``)."""
    path = check_writable(path)
    if path.exists() and not is_ours(path):
        raise InputError(path, f"exists and is not a {what}; not overwritten")
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; users expect an ordinary file
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | Path, newline: str | None = None) -> Iterator:
    """A text file that replaces ``path`` only once fully written and synced."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline=newline) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def write_json_atomic(path: str | Path, payload: dict) -> None:
    """``payload`` as indented JSON at ``path``, complete or not at all."""
    with atomic_open(path) as fh:
        json.dump(payload, fh, indent=1)
        fh.write("\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_csv(path: str | Path, header: list[str], rows: list[list]) -> None:
    """Write a CSV atomically; an existing file is replaced only if it is a CSV with this header."""
    path = check_output(path, lambda p: csv_header(p) == header, f"CSV with columns {', '.join(header[:3])}…")
    with atomic_open(path, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def csv_header(path: Path) -> list[str] | None:
    """The first row of a CSV file, or None when it cannot be read as one."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return next(csv.reader(fh), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def is_png(path: Path) -> bool:
    """Whether the file starts with the PNG signature."""
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == PNG_SIGNATURE
    except OSError:
        return False


def check_png_output(path: str | Path) -> Path:
    """A PNG output path: new, or an existing PNG image (never another kind of file)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(path, "give a file name ending in .png for the image")
    return check_output(path, is_png, "PNG image")


def write_png(path: str | Path, save: Callable[[Path], bool]) -> Path:
    """Write a PNG atomically: ``save(tmp)`` writes it (Qt or pyqtgraph); it replaces ``path``
    only when it succeeded and what it wrote is a PNG."""
    path = check_png_output(path)
    with atomic_path(path) as tmp:
        png_tmp = tmp.with_name(tmp.name + ".png")  # writers pick the format by the suffix
        try:
            ok = save(png_tmp) is not False and is_png(png_tmp)
            if not ok:
                raise InputError(path, "could not write the PNG image")
            os.replace(png_tmp, tmp)
        finally:
            png_tmp.unlink(missing_ok=True)
    return path


def read_json_file(path: str | Path, kind: str, what: str) -> dict:
    """A JSON object whose ``kind`` is ``kind``, or an InputError naming the file and the problem."""
    path = check_readable_file(path, f"{what} file")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise InputError(path, f"is {path.stat().st_size / 2**20:.0f} MiB, too large for a {what} file")
    try:
        raw = loads_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(path, f"not a {what} file (not readable JSON: {first_line(err)})") from None
    if not isinstance(raw, dict) or raw.get("kind") != kind:
        raise InputError(path, f"not a {what} file (JSON without kind '{kind}')")
    return raw


def loads_json(text: str | bytes):
    """``json.loads``, with nesting too deep for Python reported as a ValueError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def is_json_of_kind(path: Path, kind: str) -> bool:
    """Whether the file is a JSON object of ours of this ``kind`` (so it may be replaced)."""
    try:
        raw = loads_json(check_readable_file(path).read_text(encoding="utf-8"))
        return isinstance(raw, dict) and raw.get("kind") == kind
    except (OSError, ValueError, UnicodeDecodeError, InputError):
        return False


def check_output_folder(path: str | Path, is_ours: Callable[[Path], bool], what: str) -> Path:
    """Before any long work: ``path`` may be new, empty, or ``what`` (an earlier run's folder, ``is_ours``)."""
    out = Path(path)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_ours(out))):
        raise InputError(out, f"is not an empty folder or {what}; choose a new folder")
    return out


@contextmanager
def staged_folder(outdir: str | Path, is_ours: Callable[[Path], bool], what: str) -> Iterator[Path]:
    """Build an output folder beside ``outdir`` and put it in place only if the block succeeds.

    ``outdir`` may be new, empty, or a folder we wrote before (``is_ours``); anything else is
    refused before any work. A failed or cancelled run leaves ``outdir`` as it was.
    """
    outdir = Path(outdir)
    if outdir.exists():
        if not outdir.is_dir():
            raise InputError(outdir, "exists and is not a folder")
        if any(outdir.iterdir()) and not is_ours(outdir):
            raise InputError(outdir, f"is a folder that holds other files, not {what}; choose a new or empty folder")
    if not outdir.parent.exists():
        raise InputError(outdir, f"folder {outdir.parent} does not exist")
    staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", suffix=".tmp", dir=outdir.parent))
    try:
        yield staging
        if outdir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", suffix=".old", dir=outdir.parent))
            os.rmdir(old)
            os.replace(outdir, old)
            os.replace(staging, outdir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, outdir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
