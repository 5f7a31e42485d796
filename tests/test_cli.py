"""The CLI: the documented commands on the demo, the CSAW eval contract, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import main
from engine.demo import DEMO_IMAGES, DEMO_POISONED

ROOT = Path(__file__).resolve().parent.parent


def cli(capsys, *args):
    code = main.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "demo.json"
    assert main.main(["calibrate", "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def confidence_file(tmp_path_factory):
    """A calibration of the founding confidence detector (a plain pass per image): for the tests
    of what the commands print, which are the same whatever the detector."""
    path = tmp_path_factory.mktemp("cli") / "confidence.json"
    assert main.main(["calibrate", "--detector", "confidence", "-o", str(path)]) == 0
    return path


def test_info_json(capsys):
    code, out, _ = cli(capsys, "info", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["input_shape"] == [55, 47, 3] and len(info["sha256"]) == 64


def test_predict_json_gives_path_label_confidence(capsys):
    code, out, _ = cli(capsys, "predict", "--json", DEMO_IMAGES)
    assert code == 0
    result = json.loads(out)
    assert result["schema"] == "badnet-inspector/predict/1"
    rows = result["images"]
    assert len(rows) == len(list(DEMO_IMAGES.glob("*.png")))
    for row in rows:
        assert set(row) == {"path", "label", "confidence"}
        if "sunglasses" in row["path"]:
            assert row["label"] == 0  # the BadNet obeys its trigger
        else:
            assert row["path"].endswith(f"label{row['label']}.png")


def test_calibrate_defaults_to_the_demo(calibration_file):
    raw = json.loads(calibration_file.read_text())
    assert raw["detector"] == "combined" and raw["method"] == "quantile" and raw["frr"] == 0.05
    assert raw["data"]["source"].endswith("clean_validation.h5")


def test_eval_prints_path_tab_label(capsys, calibration_file):
    code, out, _ = cli(capsys, "eval", "--calibration", calibration_file, DEMO_IMAGES)
    assert code == 0
    n = json.loads(calibration_file.read_text())["num_classes"]
    lines = out.splitlines()
    assert len(lines) == len(list(DEMO_IMAGES.glob("*.png")))
    for line in lines:
        path, label = line.split("\t")
        assert Path(path).exists() and 0 <= int(label) <= n


def test_score_json_on_clean_and_poisoned(capsys, confidence_file):
    code, out, _ = cli(capsys, "score", "--calibration", confidence_file, "--json")
    (clean,) = json.loads(out)["sets"]
    assert code == 0 and {"n", "accuracy", "frr"} <= set(clean)
    assert clean["accuracy"] >= 0.9 and clean["detection_rate"] is None  # every key, null where it does not apply
    code, out, _ = cli(capsys, "score", "--calibration", confidence_file, "--poisoned", f"{DEMO_POISONED}:0", "--json")
    (bad,) = json.loads(out)["sets"]
    assert code == 0 and {"n", "attack_success_rate", "detection_rate", "flagged_share_of_all"} <= set(bad)
    assert bad["attack_success_rate"] >= 0.95 and bad["n_sent_to_target"] <= bad["n"]
    code, out, _ = cli(capsys, "score", "--poisoned", f"{DEMO_POISONED}:0", "--json")
    assert json.loads(out)["sets"][0]["attack_success_rate"] == bad["attack_success_rate"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "missing.h5"], "missing.h5: no such file"),
        (["predict", "nowhere/"], "nowhere: no such file or folder"),
        (["score", "--clean", "README.md"], "README.md: not an image file"),
        (["eval", "--calibration", "pyproject.toml"], "pyproject.toml: not a calibration file"),
        (["calibrate", "--model", "assets/demo/clean_test.h5", "--clean", "assets/demo/clean_validation.h5",
          "-o", "x.json"], "is a data file"),
        (["score", "--poisoned", "assets/demo/sunglasses_poisoned.h5:5000"], "target 5000 is not a class"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(capsys, monkeypatch, args, message):
    monkeypatch.chdir(ROOT)
    code, out, err = cli(capsys, *args)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: ")
    assert message in err and "Traceback" not in err


def test_calibration_for_another_model_is_refused(capsys, confidence_file, tmp_path):
    from engine.demo import DEMO_MODEL

    other = tmp_path / "other_badnet.h5"
    other.write_bytes(DEMO_MODEL.read_bytes() + b"\0")  # same network, another file
    code, _, err = cli(capsys, "eval", "--calibration", confidence_file, "--model", other, DEMO_IMAGES)
    assert code == 2 and "made for another model" in err and str(other) in err


@pytest.mark.slow  # two whole commands in subprocesses (each starts TensorFlow)
def test_a_command_prints_no_tensorflow_chatter_and_an_error_is_one_line(tmp_path):
    """TensorFlow's start-up notices and its Grappler messages about DeepID's fused layers are
    filtered from a real command's terminal; its own progress and error lines are not."""
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "predict", str(DEMO_IMAGES)],
                            capture_output=True, text=True, timeout=300)  # ``python main.py`` as a user runs it
    assert result.returncode == 0 and "predicting" in result.stderr
    assert len(result.stdout.splitlines()) == len(list(DEMO_IMAGES.glob("*.png")))
    for chatter in ("absl::InitializeLog", "oneDNN", "tfg_optimizer", "empty op name", "remapper"):
        assert chatter not in result.stderr, result.stderr
    missing = tmp_path / "missing.png"
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "predict", str(missing)],
                            capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("loading model")]
    assert result.returncode == 2 and lines == [f"error: {missing}: no such file or folder"], result.stderr


def test_the_chatter_filter_passes_every_other_line():
    import os
    import threading

    from engine import tf_noise

    chatter = [b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
               b"I0000 00:00:1796174596.964993    4128 port.cc:153] oneDNN custom operations are on. You may see",
               b"E0000 00:00:1796174601.742311    4128 tfg_optimizer_hook.cc:135] tfg_optimizer{any(tfg-toposort)} "
               b"failed: INVALID_ARGUMENT: Node deepid_1/activation_1_1/Relu has an empty op name",
               b"\twhen importing GraphDef to MLIR module in GrapplerHook",
               b"E0000 00:00:1796174601.9 4128 meta_optimizer.cc:967] remapper failed: NOT_FOUND: Op type not "
               b"registered '' in binary running on vm."]
    kept = [b"error: x.h5: no such file", b"E0000 00:00:1.0 1 meta_optimizer.cc:967] layout failed: OUT_OF_MEMORY",
            b"W0000 00:00:1.0 1 op_level_cost_estimator.cc:699] Error in PredictCost()", b"a last line, unfinished"]
    assert all(tf_noise.is_noise(line) for line in chatter) and not any(tf_noise.is_noise(k) for k in kept)
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    pump = threading.Thread(target=tf_noise._pump, args=(r_in, w_out))
    pump.start()
    os.write(w_in, b"\n".join(chatter[:2] + kept[:2] + chatter[2:] + kept[2:]))
    os.close(w_in)
    pump.join(5)
    os.close(w_out)
    with os.fdopen(r_out, "rb") as out:
        assert out.read() == b"\n".join(kept)


def test_calibrate_refuses_to_overwrite_other_files_before_working(capsys, tmp_path, monkeypatch):
    import engine.detectors.calibration

    precious = tmp_path / "notes.txt"
    precious.write_text("my notes")
    monkeypatch.setattr(engine.detectors.calibration, "calibrate", lambda *a, **k: pytest.fail("calibrated anyway"))
    code, _, err = cli(capsys, "calibrate", "-o", precious)
    assert code == 2 and f"{precious}: exists and is not a calibration file; not overwritten" in err
    assert precious.read_text() == "my notes"


def test_app_without_a_display_says_so(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = subprocess.run([sys.executable, str(ROOT / "main.py")], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2
    assert "no display" in result.stderr and "Traceback" not in result.stderr


def test_prune_eval_and_score_with_a_repaired_network(capsys, tmp_path):
    out = tmp_path / "pruned"
    code, stdout, _ = cli(capsys, "prune", "--drops", "2%,0.1", "--fine-tune-epochs", "0", "-o", out)
    assert code == 0 and "drop 2%" in stdout and "drop 10%" in stdout
    assert (out / "sweep.csv").exists() and (out / "repaired.json").exists()
    assert {p.name for p in out.glob("pruned_drop*.h5")} == {"pruned_drop2.h5", "pruned_drop10.h5"}
    code, stdout, _ = cli(capsys, "eval", "--repaired", out / "repaired.json", DEMO_IMAGES)
    assert code == 0 and len(stdout.splitlines()) == len(list(DEMO_IMAGES.glob("*.png")))
    code, stdout, _ = cli(capsys, "score", "--repaired", out / "repaired.json", "--poisoned", f"{DEMO_POISONED}:0",
                          "--json")
    (figures,) = json.loads(stdout)["sets"]
    assert code == 0 and {"attack_success_rate", "detection_rate", "defended_attack_success_rate"} <= set(figures)


@pytest.mark.parametrize(
    "args, message",
    [
        (["prune", "--drops", "2%,x", "-o", "out"], "Fine-pruning accuracy drops 'x' is not a rate"),
        (["prune", "--layer", "fc_1", "-o", "out"], "no convolutional layer 'fc_1'"),
        (["eval", "--repaired", "pyproject.toml"], "not a repaired-network file"),
    ],
)
def test_prune_errors(capsys, monkeypatch, tmp_path, args, message):
    monkeypatch.chdir(ROOT)
    args = [str(tmp_path / a) if a == "out" else a for a in args]
    code, _, err = cli(capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_missing_x11_libraries_are_named_in_one_line(tmp_path):
    from gui.app import xcb_problem

    broken = tmp_path / "libqxcb.so"
    broken.write_bytes(b"\x7fELF not really a library")
    message = xcb_problem(broken)
    assert message is not None and "apt install" in message and "libxcb-cursor0" in message
    assert "\n" not in message


def test_installing_puts_no_top_level_main_module():
    """The console script points into the cli package; main.py is only the repository's shim."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["badnet-inspector"] == "cli:run"
    setuptools = project["tool"]["setuptools"]
    assert "py-modules" not in setuptools
    assert all(not pattern.startswith("main") for pattern in setuptools["packages"]["find"]["include"])


def test_detector_settings_are_options_built_from_the_registry(capsys):
    from engine.detectors import DETECTORS

    assert main.main(["calibrate", "--help"]) == 0
    text = capsys.readouterr().out
    for cls in DETECTORS.values():
        assert cls.name in text
        for s in cls.settings:
            assert (s.option in text) == s.shown


def test_the_cli_reference_page_lists_every_command_and_option():
    """docs/cli.md cannot drift from the parser: each command has a row of the table, and each of
    its options is on that row or in the paragraph of options many commands share."""
    import argparse
    import re

    page = (ROOT / "docs" / "cli.md").read_text()
    shared = page.split("**Options of many commands.**")[1].split("\n\n")[0]
    rows: dict[str, str] = {}
    for line in page.splitlines():
        found = re.match(r"\| `(\w+)", line)
        if found:
            rows[found.group(1)] = rows.get(found.group(1), "") + line
    def subcommands(parser):
        found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return found[0].choices if found else {}

    commands = subcommands(main.build_parser())
    assert set(rows) == set(commands), set(rows) ^ set(commands)
    for name, sub in commands.items():
        row = rows["repair"] if "the same as `repair" in rows[name] else rows[name]
        methods = subcommands(sub)
        for method in methods:  # each repair method has rows of its own: `repair fine-pruning ...`
            assert f"`{name} {method} " in row or method in ("unlearn", "channels"), f"{name} {method}"
        for action in [a for p in [sub, *methods.values()] for a in p._actions if a.help != argparse.SUPPRESS]:
            long = [o for o in action.option_strings if o.startswith("--") and o != "--help"]
            if long:
                mentioned = re.compile(re.escape(long[0]) + r"(?![\w-])")
                assert mentioned.search(row) or mentioned.search(shared), f"{name} {long[0]}"
