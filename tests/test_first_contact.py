"""What a new user meets first: every --help, one-line usage errors, the progress bar on a real
terminal, no demo faces standing in for the user's data, one rate convention, one definition of
detection, JSON that strict readers take, and a report that tells nothing of the machine that
wrote it."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import main
from engine.demo import DEMO_IMAGES, DEMO_MODEL

ROOT = Path(__file__).resolve().parent.parent


def cli(capsys, *args):
    code = main.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def strict(text: str):
    """json.loads that refuses NaN and Infinity, as a strict reader does."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def every_command() -> list[list[str]]:
    """Every command and sub-command of the parser, as argument lists (aliases included)."""
    found = []

    def walk(parser, words):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for action in subs:
            for name, sub in action.choices.items():
                found.append(words + [name])
                walk(sub, words + [name])

    walk(main.build_parser(), [])
    return found


COMMANDS = every_command()


def test_the_walk_finds_every_command():
    names = {" ".join(c) for c in COMMANDS}
    assert {"scan", "audit", "prune", "repair fine-pruning", "repair magnitude", "repair unlearning",
            "repair nplus1", "score", "eval", "compare", "calibrate", "explain", "info", "predict", "gui"} <= names


@pytest.mark.parametrize("command", [[]] + COMMANDS, ids=lambda c: " ".join(c) or "(none)")
def test_help_works_for_every_command(capsys, command):
    code, out, err = cli(capsys, *command, "--help")
    assert code == 0, err
    assert out.startswith("usage: badnet-inspector") and "Traceback" not in out + err


def test_version(capsys):
    from engine.versions import tool_version

    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip() == f"badnet-inspector {tool_version()}"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", tool_version())


@pytest.mark.parametrize("args, needle", [
    (["scan", "--no-such"], "unrecognized arguments: --no-such"),
    (["repair"], "the following arguments are required: METHOD"),
    (["calibrate"], "the following arguments are required: -o/--output"),
    (["compare", "--frr", "5"], "--frr '5': write a rate as a fraction (0.05) or a percent (5%)"),
    (["scan", "--sample", "none"], "--sample"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_usage_errors_are_one_line_with_exit_2(capsys, args, needle):
    code, out, err = cli(capsys, *args)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: badnet-inspector") and needle in lines[0], err


# --- the demo's data only for the demo -----------------------------------------------------------


@pytest.mark.parametrize("command, missing", [
    (["scan"], "--clean PATH"),
    (["calibrate", "-o", "OUT/c.json"], "--clean PATH"),
    (["compare"], "--clean PATH and --poisoned PATH:TARGET"),
    (["repair", "fine-pruning", "-o", "OUT/r"], "--clean PATH"),
    (["repair", "unlearning", "-o", "OUT/r"], "--clean PATH"),
    (["audit", "-o", "OUT/r.html"], "--clean PATH"),
    (["score"], "--clean PATH or --poisoned PATH:TARGET"),
])
def test_a_model_of_ones_own_needs_its_data_named(capsys, tmp_path, command, missing):
    mine = tmp_path / "my_csaw_net.h5"
    shutil.copy(DEMO_MODEL, mine)  # a copy is not the demo: its faces must not stand in
    command = [str(tmp_path / a[4:]) if a.startswith("OUT/") else a for a in command]
    code, out, err = cli(capsys, *command, "--model", mine)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and lines and lines[-1].startswith("error: "), err
    assert missing in lines[-1] and "my_csaw_net.h5" in lines[-1]
    assert [p.name for p in tmp_path.iterdir()] == ["my_csaw_net.h5"]  # nothing written


def test_compare_with_a_model_needs_a_poisoned_set(capsys, small_demo):
    code, _, err = cli(capsys, "compare", "--model", DEMO_MODEL, "--clean", small_demo["clean"])
    assert code == 2 and "--poisoned PATH:TARGET missing" in err


# --- progress -------------------------------------------------------------------------------------


def run_in_pty(args: list[str], timeout: float = 240) -> tuple[int, bytes]:
    """``python main.py ARGS`` with a pseudo-terminal as its terminal, as a user runs it."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of 120 columns, then the program
        os.environ.update(TERM="xterm", COLUMNS="120")
        for name in ("TTY_COMPATIBLE", "TTY_INTERACTIVE", "FORCE_COLOR", "NO_COLOR"):  # rich's overrides
            os.environ.pop(name, None)
        os.execv(sys.executable, [sys.executable, str(ROOT / "main.py"), *args])
    out = b""
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                os.kill(pid, 9)
                break
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            out += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out


@pytest.mark.skipif(not hasattr(os, "fork"), reason="pseudo-terminals are a POSIX thing")
@pytest.mark.slow  # a whole command under a pseudo-terminal (starts TensorFlow)
def test_a_terminal_sees_the_progress_bar_move(tmp_path):
    out_file = tmp_path / "c.json"
    code, raw = run_in_pty(["calibrate", "--detector", "strip", "--first-blends", "0", "--sample", "all",
                            "-o", str(out_file)])  # 32 blends of 300 faces: seconds, so the bar redraws
    text = raw.decode("utf-8", "replace")
    assert code == 0 and out_file.exists(), text[-2000:]
    shown = [int(p) for p in re.findall(r"(\d+)%\x1b\[0m", text)] + [int(p) for p in re.findall(r" (\d+)% ", text)]
    assert 100 in shown and len(set(shown)) >= 3, text[-2000:]  # redrawn as it went, up to the end
    assert "\r" in text and "\x1b[2K" in text  # drawn in place, not one line per step
    assert re.search(r"/s", text) and "left" in text  # the rate and the time left
    assert "oneDNN" not in text and "absl::InitializeLog" not in text  # the filter still works


@pytest.mark.slow  # two whole commands in subprocesses (each starts TensorFlow)
def test_not_a_terminal_gets_plain_lines_and_quiet_gets_none(tmp_path):
    args = [sys.executable, str(ROOT / "main.py"), "predict", str(DEMO_IMAGES)]
    plain = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and "predicting…" in plain.stderr and "\r" not in plain.stderr
    quiet = subprocess.run(args[:2] + ["--quiet"] + args[2:], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and quiet.stdout == plain.stdout
    assert "loading model" in plain.stderr and "loading model" not in quiet.stderr and "predicting" not in quiet.stderr


# --- JSON: one object, a schema, never NaN ----------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory, small_demo, short_scan):
    folder = tmp_path_factory.mktemp("json")
    cal = folder / "confidence.json"
    assert main.main(["calibrate", "--detector", "confidence", "--clean", str(small_demo["clean"]),
                      "--sample", "all", "--min-samples", "100000", "--frr", "5%", "-o", str(cal)]) == 0
    scan = folder / "scan"
    short_scan.save(scan)
    return {"cal": cal, "scan": scan, "folder": folder, **small_demo}


JSON_COMMANDS = {
    "info": lambda f: ["info"],
    "predict": lambda f: ["predict", DEMO_IMAGES],
    "calibrate": lambda f: ["calibrate", "--detector", "confidence", "--clean", f["clean"], "-o", f["folder"] / "c2.json"],
    "score": lambda f: ["score", "--calibration", f["cal"], "--clean", f["clean"], "--poisoned", f"{f['poisoned']}:0"],
    "eval": lambda f: ["eval", "--calibration", f["cal"], DEMO_IMAGES],
    "compare": lambda f: ["compare", "--detectors", "confidence", "--clean", f["clean"],
                          "--poisoned", f"{f['poisoned']}:0"],
    "repair": lambda f: ["repair", "magnitude", "--sparsity", "50%", "--clean", f["clean"],
                         "--poisoned", f"{f['poisoned']}:0", "-o", f["folder"] / "magnitude"],
    "explain": lambda f: ["explain", DEMO_IMAGES / "sunglasses_00_label0.png", "-o", f["folder"] / "x.png"],
    "audit": lambda f: ["audit", "--clean", f["clean"], "--poisoned", f"{f['poisoned']}:0", "--scan", f["scan"],
                        "--calibration", f["cal"], "-o", f["folder"] / "r.html"],
}


@pytest.mark.parametrize("name", list(JSON_COMMANDS))
def test_every_json_output_is_one_strict_object_with_its_schema(capsys, files, name):
    code, out, err = cli(capsys, *JSON_COMMANDS[name](files), "--json")
    assert code == 0, err
    result = strict(out)  # the whole of stdout: one object
    assert isinstance(result, dict) and result["schema"] == f"badnet-inspector/{name}/1"
    assert "NaN" not in out and "Infinity" not in out
    assert "\r" not in err  # no bar under --json


def test_a_figure_that_does_not_apply_is_null_not_missing_or_nan():
    from engine.jsonsafe import dumps

    text = dumps({"a": float("nan"), "b": [np.float32(np.inf), np.int64(3)], "c": None})
    assert strict(text) == {"a": None, "b": [None, 3], "c": None}


@pytest.mark.slow
def test_scan_can_fail_a_pipeline_on_a_backdoor(capsys, tmp_path):
    """The demo's default scan says backdoor (classes 7 and 0): exit code 3 with the flag, 0 without."""
    code, out, _ = cli(capsys, "scan", "--fail-on-backdoor", "--json", "-o", tmp_path / "s")
    result = strict(out)
    assert result["verdict"]["outcome"] == "backdoor" and code == 3 and result["exit_code"] == 3
    assert set(result["flagged"]) == {0, 7}


# --- one definition of detection --------------------------------------------------------------------


def test_score_compare_the_report_and_the_window_give_one_detection_figure(capsys, files, demo_net, short_scan):
    """A confidence calibration with every class on the pooled threshold, on the same clean faces
    as the comparison, has compare's threshold at 5%; so the four must agree to the image."""
    from engine import progress, report
    from engine.detectors.calibration import Calibration
    from engine.io.datasets import PoisonedSet, read
    from engine.workflow import POISONED, score_sets
    from gui.histograms import detection_text

    code, out, _ = cli(capsys, "score", "--calibration", files["cal"], "--poisoned", f"{files['poisoned']}:0",
                       "--json")
    (scored,) = strict(out)["sets"]
    code, out, _ = cli(capsys, "compare", "--detectors", "confidence", "--clean", files["clean"],
                       "--poisoned", f"{files['poisoned']}:0", "--frr", "5%", "--json")
    (compared,) = strict(out)["results"]
    point = compared["at_frr"][0]
    assert scored["n_sent_to_target"] == compared["n_sent_to_target"] < scored["n"]  # not every face sent
    assert scored["detection_rate"] == pytest.approx(point["detection"], abs=1e-12)
    assert scored["flagged_share_of_all"] == pytest.approx(point["flagged_share_of_all"], abs=1e-12)

    cal = Calibration.load(files["cal"])
    clean, poisoned = read(files["clean"]), [PoisonedSet(read(files["poisoned"]), 0)]
    audit = progress.run(report.audit_job(demo_net, clean, poisoned, "1/255", calibrations=[(cal, "a test")],
                                          scan=short_scan, detection_images=0))
    sets = {s["kind"]: s for s in report.findings(audit)["calibrations"][0]["sets"]}
    assert sets[POISONED]["detection"] == pytest.approx(scored["detection_rate"], abs=1e-12)
    assert f"{100 * scored['detection_rate']:.1f}%" in report.render(audit)

    (p_scores,) = [s for s in progress.run(score_sets(demo_net, cal, None, poisoned))]
    flagged = cal.labels(p_scores.scores.predicted, p_scores.scores.values) == cal.poisoned_label
    text = detection_text(flagged, p_scores)
    assert f"detection <b>{100 * scored['detection_rate']:.1f}%</b>" in text
    assert f"of the {scored['n_sent_to_target']} sent to class 0" in text
    assert f"flagged, all poisoned {100 * scored['flagged_share_of_all']:.1f}%" in text


# --- the report travels -------------------------------------------------------------------------------


def test_the_report_names_no_folder_of_its_machine_every_version_and_every_method(capsys, tmp_path, files):
    deep = tmp_path / ("a_rather_long_folder_name_" * 3) / "nested deeper" / "and_deeper_still"
    deep.mkdir(parents=True)
    for key in ("clean", "poisoned", "cal"):
        shutil.copy(files[key], deep / files[key].name)
    shutil.copytree(files["scan"], deep / "scan")
    shutil.copy(DEMO_MODEL, deep / "suspect.h5")
    (deep / "images").mkdir()
    shutil.copy(DEMO_IMAGES / "sunglasses_00_label0.png", deep / "images")
    out = deep / "report.html"
    code, _, err = cli(capsys, "audit", "--model", deep / "suspect.h5", "--clean", deep / files["clean"].name,
                       "--poisoned", f"{deep / files['poisoned'].name}:0", "--scan", deep / "scan",
                       "--calibration", deep / files["cal"].name, "--images", deep / "images",
                       "--detection-sample", "all", "-o", out)
    assert code == 0, err
    text = out.read_text()
    for private in {str(deep), str(tmp_path), str(deep.resolve()), str(Path.home()), str(ROOT)} - {"/"}:
        assert private not in text, private
    assert "suspect.h5" in text and files["clean"].name in text  # files by name (and digest)
    from engine.versions import versions

    for name, version in versions().items():
        assert name in text and version in text and "unknown" not in version
    references = text[text.index('<section id="references">'):]
    for method in ("MM-BD", "Neural Cleanse", "STRIP", "SCALE-UP", "SentiNet", "BadNets", "Vovk"):
        assert method in references, method
    assert ("RISE" in references) == ('alt="sensitivity map of' in text)  # cited only where a map is drawn
    assert "badnet-inspector audit --model suspect.h5" in text and "python main.py" not in text
    assert '<section id="limits">' in text
    # One p-value format: three decimals, or two significant digits in scientific notation.
    table = text[text.index('<section id="verdict">'):text.index('<section id="model">')]
    cells = re.findall(r'<td class="num">([0-9.e+-]+)</td>', table)
    ps = [c for c in cells if "e" in c or re.fullmatch(r"[01]\.\d{3}", c)]
    assert ps and all(re.fullmatch(r"[01]\.\d{3}|\d\.\de-\d\d", c) for c in ps), ps
