"""The engine's imports run one way: each part imports only parts on layers below it.

Read from the source with ``ast`` (imports inside functions included), so a test run catches an
upward import however it is hidden. docs/developers.md draws the same layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A part is a module or a package directly under engine/; its layer, bottom first. A part may
# import parts of lower layers only (and itself): so no cycle, no plug-in family importing the
# workflow, and the families beside each other only through what lies below them.
LAYERS = {
    "__init__": 0, "errors": 0, "jsonsafe": 0, "tf_noise": 0, "versions": 0,  # leaves
    "io": 1, "progress": 1, "rates": 1,  # files, data and models; jobs; rates as people write them
    "settings": 2, "scoring": 2, "demo": 2,  # declared settings; running the network; the bundled demo
    "training": 3, "explain": 3,  # training loops shared by detectors and repairs; sensitivity maps
    "detectors": 4, "scan": 4,  # per-image detectors; the model-level scan
    "repairs": 5, "evaluation": 5,  # repairs (use the scan and detectors' verdicts); comparisons
    "workflow": 6,  # requests and jobs for the CLI and the window
    "report": 7,  # the audit report, made from everything
}


def part(module: str) -> str:
    """engine.detectors.strip -> detectors; engine -> __init__."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def engine_imports(engine_dir: Path) -> list[tuple[str, str, str]]:
    """(importing part, imported part, file:line) for every import between two parts."""
    out = []
    for path in sorted(engine_dir.rglob("*.py")):
        rel = path.relative_to(engine_dir.parent).with_suffix("").parts
        module = ".".join(rel[:-1] if rel[-1] == "__init__" else rel)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                # "from engine import workflow" imports the part engine.workflow
                targets = [target] + ([f"engine.{a.name}" for a in node.names] if target == "engine" else [])
            else:
                continue
            for target in targets:
                if target.startswith("engine.") and part(target) != part(module):
                    out.append((part(module), part(target), f"{path.relative_to(engine_dir.parent)}:{node.lineno}"))
    return out


def violations(imports: list[tuple[str, str, str]]) -> list[str]:
    """Every import that does not go down a layer, said as a line."""
    bad = []
    for src, dst, where in imports:
        if src not in LAYERS or dst not in LAYERS:
            bad.append(f"{where}: engine part {src if src not in LAYERS else dst!r} has no layer; add it to LAYERS")
        elif LAYERS[dst] >= LAYERS[src]:
            bad.append(f"{where}: {src} (layer {LAYERS[src]}) imports {dst} (layer {LAYERS[dst]})")
    return bad


def test_the_engine_imports_run_one_way():
    imports = engine_imports(ROOT / "engine")
    assert len(imports) > 100  # the walk sees the engine's imports, not nothing
    assert violations(imports) == []


def test_every_part_of_the_engine_has_a_layer():
    parts = {p.stem for p in (ROOT / "engine").iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert parts == set(LAYERS)


@pytest.mark.parametrize("source, expected", [
    ("from engine.workflow import run\n", "detectors (layer 4) imports workflow (layer 6)"),
    ("def later():\n    from engine import workflow\n", "detectors (layer 4) imports workflow (layer 6)"),
    ("import engine.repairs.bundle\n", "detectors (layer 4) imports repairs (layer 5)"),
    ("from engine.scan import scan_job\n", "detectors (layer 4) imports scan (layer 4)"),
])
def test_a_plugin_importing_upward_or_sideways_is_caught(tmp_path, source, expected):
    """A detector module that imports the workflow (even inside a function), a repair or the scan fails."""
    plugin = tmp_path / "engine" / "detectors"
    plugin.mkdir(parents=True)
    (tmp_path / "engine" / "__init__.py").write_text("")
    (plugin / "__init__.py").write_text("from engine.io.datasets import ImageSet\n")
    (plugin / "bad.py").write_text(source)
    found = violations(engine_imports(tmp_path / "engine"))
    assert len(found) == 1 and expected in found[0] and "engine/detectors/bad.py:" in found[0]


def test_every_public_engine_definition_says_what_it_is():
    """Every public class and function at a module's top level has a docstring."""
    missing = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        for node in ast.parse(path.read_text(), str(path)).body:
            if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_")
                    and ast.get_docstring(node) is None):
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert missing == []
