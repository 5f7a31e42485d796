"""Where the window writes unless the user chooses: ``~/BadNetInspector/<model>_<what>``."""

from __future__ import annotations

from pathlib import Path


def output_home() -> Path:
    return Path.home() / "BadNetInspector"


def default_folder(model_path: Path, what: str) -> Path:
    return output_home() / f"{Path(model_path).stem}_{what}"


def make_output_home(outdir: str | Path) -> None:
    """Create ``~/BadNetInspector`` when ``outdir`` is a default folder in it (a fresh machine has
    none); any other missing parent stays the user's to create, and the run says so."""
    home = output_home()
    if Path(outdir).expanduser().parent == home:
        home.mkdir(parents=True, exist_ok=True)
