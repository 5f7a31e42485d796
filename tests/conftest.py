"""Shared fixtures: the bundled demo (always there) and the real CSAW slice (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import engine  # noqa: E402,F401  (quiet TensorFlow first)

ROOT = Path(__file__).resolve().parent.parent
CSAW = Path(os.environ.get("BADNET_SHARED", ROOT.parent / "shared")) / "csaw"

# The layers, by file: `-m gui`, `-m cli`, `-m engine` run one of them.
LAYERS = {"test_gui.py": "gui", "test_controllers.py": "gui", "test_cli.py": "cli", "test_bad_input.py": "cli"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(getattr(pytest.mark, LAYERS.get(Path(str(item.fspath)).name, "engine")))


@pytest.fixture(scope="session")
def demo_net():
    from engine.demo import DEMO_MODEL
    from engine.model_io import load_badnet

    return load_badnet(DEMO_MODEL)


@pytest.fixture(scope="session")
def demo_clean():
    from engine import data_io
    from engine.demo import DEMO_CLEAN_VALIDATION

    return data_io.read(DEMO_CLEAN_VALIDATION)


@pytest.fixture(scope="session")
def demo_test():
    from engine import data_io
    from engine.demo import DEMO_CLEAN_TEST

    return data_io.read(DEMO_CLEAN_TEST)


@pytest.fixture(scope="session")
def demo_poisoned():
    from engine import data_io
    from engine.demo import DEMO_POISONED

    return data_io.read(DEMO_POISONED)


@pytest.fixture(scope="session")
def demo_eyebrows():
    from engine import data_io
    from engine.demo import DEMO_EYEBROWS

    return data_io.read(DEMO_EYEBROWS)


@pytest.fixture(scope="session")
def csaw() -> Path:
    if not (CSAW / "models" / "sunglasses_bd_net.h5").exists():
        pytest.skip(f"real CSAW sample not found at {CSAW}")
    return CSAW
