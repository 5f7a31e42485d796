"""Which versions computed a result: the tool's own and every library its figures depend on."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "badnet-inspector"
# (what to call it, its distributions by preference, the module that knows its version when imported)
LIBRARIES = (
    ("TensorFlow", ("tensorflow-cpu", "tensorflow"), "tensorflow"),
    ("Keras", ("keras",), "keras"),
    ("NumPy", ("numpy",), "numpy"),
    ("h5py", ("h5py",), "h5py"),
    ("Pillow", ("pillow", "Pillow"), "PIL"),
)


def tool_version() -> str:
    """The installed version, or, in a checkout that was never installed, pyproject.toml's."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    import tomllib

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        with open(pyproject, "rb") as f:
            return str(tomllib.load(f)["project"]["version"]) + " (checkout)"
    except (OSError, KeyError, ValueError):
        return "unknown"


def library_version(distributions: tuple[str, ...], module: str) -> str:
    """A library's version: the loaded module's own, else its installed distribution's."""
    loaded = sys.modules.get(module)
    version = getattr(loaded, "__version__", None) if loaded is not None else None
    if isinstance(version, str):
        return version
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def versions() -> dict[str, str]:
    """Every version that shapes a figure, by name, the tool first."""
    out = {"BadNet Inspector": tool_version(), "Python": platform.python_version()}
    for title, distributions, module in LIBRARIES:
        out[title] = library_version(distributions, module)
    return out
