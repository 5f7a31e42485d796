"""The repair registry: every repair declares itself, and a new one needs no edit outside its module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import main
from engine.demo import DEMO_IMAGES
from engine.errors import InputError
from engine.repairs import REPAIRS, Repair, RepairOutcome, make_repair, register, repair_class


def cli(capsys, *args):
    try:
        code = main.main([str(a) for a in args])
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_four_repairs_declare_themselves():
    assert list(REPAIRS) == ["fine-pruning", "magnitude", "unlearning", "nplus1"]
    for cls in REPAIRS.values():
        assert cls.title and cls.summary and cls.settings
        repair = cls()  # every default is valid
        assert set(repair.params()) == {s.name for s in cls.settings}
    assert repair_class("unlearn") is REPAIRS["unlearning"] and repair_class("channels") is REPAIRS["fine-pruning"]
    assert REPAIRS["nplus1"].needs_poisoned and REPAIRS["unlearning"].uses_scan


@pytest.mark.parametrize("name, params, message", [
    ("fine-pruning", {"drops": "2%,0"}, "accuracy drops '0' must be in (0%, 100%]"),
    ("fine-pruning", {"drops": "2,4"}, "accuracy drops '2': write a rate as a fraction (0.02) or a percent (2%)"),
    ("magnitude", {"sparsity": 1.0}, "sparsity 1.0 must be in (0%, 100%)"),
    ("nplus1", {"train_layers": "half"}, "layers to train 'half': choose output or all"),
    ("unlearning", {"epochs": 0}, "epochs 0 must be in [1, 1000]"),
    ("nplus1", {"share": 0.2}, "N+1 network has no setting share"),
])
def test_settings_are_checked_by_the_declaration(name, params, message):
    import re

    with pytest.raises(InputError, match=re.escape(message)):
        make_repair(name, params)


def test_a_folder_is_an_earlier_run_only_if_it_holds_that_repairs_files(tmp_path, capsys):
    from engine.repairs import check_output_folder

    code, _, _ = cli(capsys, "repair", "fine-pruning", "--fine-tune-epochs", "0", "--drops", "10%", "-o",
                     tmp_path / "fp")
    assert code == 0
    assert REPAIRS["fine-pruning"].is_output(tmp_path / "fp")
    assert not REPAIRS["magnitude"].is_output(tmp_path / "fp")  # another repair's folder is not ours
    with pytest.raises(InputError, match="not an empty folder or an earlier magnitude pruning run"):
        check_output_folder(tmp_path / "fp", REPAIRS["magnitude"])


class _Copy(Repair):
    """A repair of a test's own: B' is the BadNet itself (so G never answers N)."""

    name = "copy-for-test"
    title = "Copy"
    summary = "B' is a copy of the BadNet."
    from engine.settings import Setting

    settings = (Setting("note", "note", str, "plain", 0, 0, "a word recorded in the bundle", choices=("plain", "odd")),)
    files = r"copy\.h5|repaired\.json"

    def run(self, net, clean, poisoned, outdir, scaling, scan=None):
        from engine.io.files import staged_folder
        from engine.progress import Progress
        from engine.repairs.bundle import moved, save_model, write_bundle

        yield Progress(0, 1, "copying")
        with staged_folder(Path(outdir), self.is_output, "copy results") as stage:
            bundle = write_bundle(stage, net, save_model(net.copy_model(), stage / "copy.h5"),
                                  {"method": self.name, "note": self.note}, scaling)
        return RepairOutcome(self.name, Path(outdir), moved(bundle, outdir), [f"copied ({self.note})"])


def test_a_new_repair_is_one_module(capsys, tmp_path):
    """Registered from outside the package, it gets its CLI command and options, runs as a job,
    and its bundle loads, judges and is listed in the comparison: no other edit."""
    register(_Copy)
    try:
        code, out, err = cli(capsys, "repair", "copy-for-test", "--help")
        assert code == 0 and "--note" in out and "plain or odd" in out
        code, out, err = cli(capsys, "repair", "copy-for-test", "--note", "odd", "-o", tmp_path / "c")
        assert code == 0, err
        assert "copied (odd)" in out and {p.name for p in (tmp_path / "c").iterdir()} == {"copy.h5", "repaired.json"}
        bundle = tmp_path / "c" / "repaired.json"
        assert json.loads(bundle.read_text())["choice"] == {"method": "copy-for-test", "note": "odd"}
        code, out, _ = cli(capsys, "eval", "--repaired", bundle, DEMO_IMAGES)
        assert code == 0 and all(int(line.split("\t")[1]) < 50 for line in out.splitlines())  # never N
        code, out, _ = cli(capsys, "compare", "--detectors", "confidence", "--repaired", bundle)
        assert code == 0 and "G (copy)" in out
    finally:
        del REPAIRS[_Copy.name]
    code, _, err = cli(capsys, "eval", "--repaired", bundle, DEMO_IMAGES)
    assert code == 2 and "unknown repair 'copy-for-test'" in err
