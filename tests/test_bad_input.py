"""Bad input on the command line, as a new user or an attacker would give it: every case ends with
exit code 2 and one line naming the file (or option) and the problem; nothing is overwritten or
left half-made."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import main
from engine.demo import DEMO_CLEAN_VALIDATION, DEMO_IMAGES, DEMO_MODEL
from tests.test_model_io import write_keras2_weights

ROOT = Path(__file__).resolve().parent.parent


def cli(capsys, *args):
    code = main.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    lines = err.strip().splitlines()
    assert code == 2, err
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err and "unexpected" not in err, err
    for needle in needles:
        assert str(needle) in lines[-1], (needle, lines[-1])


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "good.json"
    assert main.main(["calibrate", "--detector", "confidence", "-o", str(path)]) == 0
    return path


def edited(calibration: Path, tmp_path: Path, name: str, edit) -> Path:
    raw = json.loads(calibration.read_text())
    edit(raw)
    raw["model"]["path"] = str(DEMO_MODEL)
    out = tmp_path / name
    out.write_text(json.dumps(raw))
    return out


def deep_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


# --- model files --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, demo_net):
    path = tmp_path_factory.mktemp("weights") / "weights.h5"
    write_keras2_weights(demo_net.model, path)
    return path


def _flat_kernel(f):
    del f["conv_2"]["conv_2/kernel:0"]
    f["conv_2"].create_dataset("conv_2/kernel:0", data=np.zeros((36, 40), np.float32))


def _no_weight_names(f):
    del f["fc_1"].attrs["weight_names"]


def _integer_layer_names(f):
    f.attrs["layer_names"] = np.arange(14)


def _nan_weights(f):
    data = f["output"]["output/bias:0"]
    data[0] = np.nan


@pytest.mark.parametrize("damage, message", [
    (_flat_kernel, "layer conv_2: kernel"),
    (_no_weight_names, "layer fc_1: no weight_names"),
    (_integer_layer_names, "damaged weights-only file"),
    (_nan_weights, "NaN"),
], ids=["2-D kernel", "no weight_names", "integer layer names", "NaN weights"])
def test_malformed_weights_only_files(capsys, tmp_path, weights_file, damage, message):
    path = tmp_path / "bad_weights.h5"
    shutil.copy(weights_file, path)
    with h5py.File(path, "r+") as f:
        damage(f)
    code, _, err = cli(capsys, "info", path)
    assert_one_line_error(code, err, path, message)


@pytest.mark.parametrize("config, message", [
    (7, "model_config attribute is int"),
    (deep_json(), "nested too deeply"),
    ("{not json", "not valid JSON"),
], ids=["integer", "nested 100,000 deep", "not JSON"])
def test_model_config_that_is_not_a_model(capsys, tmp_path, config, message):
    path = tmp_path / "model.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = config
    code, _, err = cli(capsys, "info", path)
    assert_one_line_error(code, err, path, message)


# --- data files ---------------------------------------------------------------------------


def data_file(tmp_path: Path, labels, n: int = 4, name: str = "data.h5") -> Path:
    path = tmp_path / name
    images = h5py.File(DEMO_CLEAN_VALIDATION, "r")["data"][:n]
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=images)
        if labels is not None:
            f.create_dataset("label", data=np.asarray(labels))
    return path


@pytest.mark.parametrize("labels, message", [
    ([1, 2, 5000, 3], "not classes of this model (0..49)"),
    ([1, -2, 0, 3], "labels are negative"),
    ([1.0, np.nan, 0.0, 3.0], "not whole numbers"),
    ([1e300, 0.0, 0.0, 3.0], "not a plausible class number"),
], ids=["5000 for 50 classes", "negative", "NaN", "huge"])
def test_labels_outside_the_models_classes(capsys, tmp_path, labels, message):
    path = data_file(tmp_path, labels)
    code, _, err = cli(capsys, "score", "--clean", path)
    assert_one_line_error(code, err, path, message)


def test_prune_with_labels_outside_the_classes_leaves_no_folder(capsys, tmp_path):
    path = data_file(tmp_path, [1, 2, 5000, 3])
    out = tmp_path / "out"
    code, _, err = cli(capsys, "prune", "--clean", path, "-o", out)
    assert_one_line_error(code, err, path, "not classes of this model")
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--layer", "fc_1"], "no convolutional layer 'fc_1'"),
    (["--clean", "UNLABELLED"], "has no labels"),
], ids=["bad layer", "unlabelled data"])
def test_failed_prune_leaves_no_output_folder(capsys, tmp_path, args, message):
    out = tmp_path / "out"
    args = [str(data_file(tmp_path, None)) if a == "UNLABELLED" else a for a in args]
    code, _, err = cli(capsys, "prune", *args, "-o", out)
    assert_one_line_error(code, err, message)
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_prune_refuses_a_folder_of_other_files(capsys, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    code, _, err = cli(capsys, "prune", "-o", out)
    assert_one_line_error(code, err, out, "is not an empty folder or an earlier fine-pruning run's results")
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


def test_a_set_claiming_a_trillion_images_is_refused_before_allocating(capsys, tmp_path):
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", shape=(10**12, 3, 55, 47), dtype=np.uint8, chunks=(1, 3, 55, 47))
        f.create_dataset("label", shape=(10**12,), dtype=np.float32, chunks=(1024,))
    assert path.stat().st_size < 10**6
    code, _, err = cli(capsys, "score", "--clean", path)
    assert_one_line_error(code, err, path, "more than half this machine's memory")


def test_an_npz_claiming_a_huge_array_is_refused(capsys, tmp_path):
    import zipfile

    path = tmp_path / "huge.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 55, 47, 3), np.uint8))
    header["shape"] = (10**9, 55, 47, 3)
    with zipfile.ZipFile(path, "w") as z, z.open("x.npy", "w") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
    code, _, err = cli(capsys, "score", "--poisoned", f"{path}:0")
    assert_one_line_error(code, err, path, "more than half this machine's memory")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX thing")
@pytest.mark.parametrize("command", [["predict"], ["info"], ["score", "--clean"]])
def test_a_named_pipe_is_refused_not_read(capsys, tmp_path, command):
    fifo = tmp_path / "face.png"
    os.mkfifo(fifo)
    # Both ends held open here, so a command that wrongly opened the pipe would read nothing and
    # fail with another message instead of waiting for a writer forever (Linux opens a FIFO O_RDWR).
    holder = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        code, _, err = cli(capsys, *command, fifo)
    finally:
        os.close(holder)
    assert_one_line_error(code, err, fifo, "not a regular file")


def test_a_folder_with_a_named_pipe_reads_the_images_only(capsys, tmp_path):
    folder = tmp_path / "faces"
    shutil.copytree(DEMO_IMAGES, folder)
    os.mkfifo(folder / "zz_pipe.png")
    code, out, _ = cli(capsys, "predict", folder)
    assert code == 0 and len(out.splitlines()) == len(list(DEMO_IMAGES.glob("*.png")))


# --- calibration files --------------------------------------------------------------------


def _nan(raw):
    raw["thresholds"][3] = float("nan")


def _five_classes(raw):
    for key in ("thresholds", "counts"):
        raw[key] = raw[key][:5]
    raw["num_classes"] = 5
    raw["pooled_classes"] = [c for c in raw["pooled_classes"] if c < 5]


def _weird_scaling(raw):
    raw["scaling"] = "weird"


def _tiny_blends(raw):
    import base64

    raw["detector"] = "strip"
    raw["detector_params"] = {"blends": 2, "alpha": 0.5, "seed": 0}
    raw["detector_state"] = {"overlays": {"shape": [2, 10, 10, 3],
                                          "uint8_base64": base64.b64encode(bytes(600)).decode()}}


def _pooled_out_of_range(raw):
    raw["pooled_classes"] = [0, 5000]


def _string_classes(raw):
    raw["num_classes"] = "fifty"


@pytest.mark.parametrize("edit, message", [
    (_nan, "NaN"),
    (_five_classes, "thresholds for 5 classes; the model has 50"),
    (_weird_scaling, "unknown input scaling 'weird'"),
    (_tiny_blends, "STRIP blend images are 10x10"),
    (_pooled_out_of_range, "pooled_classes"),
    (_string_classes, "damaged calibration file"),
], ids=["NaN threshold", "5 of 50 classes", "weird scaling", "10x10 blends", "pooled out of range", "string count"])
def test_damaged_calibrations_are_refused_naming_the_file(capsys, calibration, tmp_path, edit, message):
    bad = edited(calibration, tmp_path, "bad.json", edit)
    code, _, err = cli(capsys, "eval", "--calibration", bad, DEMO_IMAGES)
    assert_one_line_error(code, err, bad, message)


def test_a_calibration_nested_too_deep(capsys, tmp_path):
    bad = tmp_path / "deep.json"
    bad.write_text(deep_json())
    code, _, err = cli(capsys, "eval", "--calibration", bad, DEMO_IMAGES)
    assert_one_line_error(code, err, bad, "nested too deeply")


def test_calibrations_for_different_models_do_not_combine(capsys, calibration, tmp_path):
    other = edited(calibration, tmp_path, "other.json", lambda raw: raw["model"].update(sha256="0" * 64))
    code, _, err = cli(capsys, "eval", "--calibration", calibration, "--calibration", other, DEMO_IMAGES)
    assert_one_line_error(code, err, other, "made for another model")


# --- options ------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["calibrate", "--min-samples", "-1", "-o", "x.json"], "--min-samples: '-1' must be 0 or more"),
    (["prune", "--fine-tune-epochs", "-1", "-o", "out"], "Fine-pruning fine-tuning epochs -1 must be in [0, 1000]"),
    (["compare", "--detectors", ","], "--detectors ',': name at least one detector"),
    (["compare", "--frr", "150%"], "--frr '150%' must be in [0%, 100%)"),
    (["compare", "--frr", "1,5"], "--frr '1': write a rate as a fraction (0.01) or a percent (1%)"),
    (["compare", "--frr", "nan"], "--frr 'nan' is not a finite rate"),
    (["prune", "--drops", "0", "-o", "out"], "Fine-pruning accuracy drops '0' must be in (0%, 100%]"),
    (["prune", "--drops", "2,4", "-o", "out"], "accuracy drops '2': write a rate as a fraction (0.02) or a percent"),
    (["repair", "unlearning", "--classes", "7,x", "-o", "out"], "Unlearning classes 'x' is not a number"),
    (["repair", "nplus1", "--train-layers", "some", "-o", "out"], "invalid choice: 'some'"),
    (["calibrate", "--frr", "1.5", "-o", "x.json"], "--frr '1.5': write a rate as a fraction (0.015) or a percent"),
    (["calibrate", "--frr", "150%", "-o", "x.json"], "--frr '150%' must be in (0%, 100%)"),
    (["calibrate", "--detector", "strip", "--blend-weight", "0", "-o", "x.json"], "blend weight 0.0 must be in (0, 1)"),
    (["calibrate", "--detector", "strip", "--alpha", "0.5", "-o", "x.json"], "--alpha is now --blend-weight"),
    (["scan", "--alpha", "0.05"], "--alpha is now --false-alarm"),
    (["scan", "--max-images", "20"], "--max-images is now --sample N|all"),
    (["audit", "--detection-images", "20", "-o", "r.html"], "--detection-images is now --detection-sample N|all"),
    (["score", "--data", "x.h5", "--target", "0"], "--data is now --clean PATH or --poisoned PATH:TARGET"),
    (["score", "--poisoned", "x.h5:-3"], "expected PATH:TARGET"),
    (["score", "--poisoned", "assets/demo/sunglasses_poisoned.h5:5000"], "target 5000 is not a class"),
    (["compare", "--poisoned", "assets/demo/sunglasses_poisoned.h5:99"], "target 99 is not a class"),
    (["info", "--no-such-option"], "unrecognized arguments"),
], ids=lambda v: v if isinstance(v, str) else " ".join(v)[:40])
def test_bad_options_are_one_line(capsys, monkeypatch, tmp_path, args, message):
    monkeypatch.chdir(ROOT)
    args = [str(tmp_path / "out") if a == "out" else a for a in args]
    try:
        code, _, err = cli(capsys, *args)
    except SystemExit as stop:  # argparse
        code, err = stop.code, capsys.readouterr().err
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "out").exists() and not (ROOT / "x.json").exists()


# --- outputs ------------------------------------------------------------------------------


def test_roc_csv_never_replaces_another_file(capsys, tmp_path):
    precious = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", precious)
    before = precious.read_bytes()
    code, _, err = cli(capsys, "compare", "--detectors", "confidence", "--roc-csv", precious)
    assert_one_line_error(code, err, precious, "not a ROC curve CSV")
    assert precious.read_bytes() == before


def test_roc_csv_replaces_its_own_file(capsys, tmp_path):
    out = tmp_path / "roc.csv"
    for _ in range(2):
        code, _, _ = cli(capsys, "compare", "--detectors", "confidence", "--roc-csv", out)
        assert code == 0
    assert out.read_text().splitlines()[0] == "detector,poisoned_set,false_rejection,detection"


def test_a_newline_in_a_file_name_stays_on_one_line(capsys, tmp_path):
    odd = tmp_path / "two\nlines.h5"
    odd.write_text("not data")
    code, _, err = cli(capsys, "score", "--clean", odd)
    assert_one_line_error(code, err, "two\\nlines.h5")


# --- the window's command line (a process of its own, offscreen) ------------------------


def gui(*args, timeout=300):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, str(ROOT / "main.py"), "gui", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("edit, message", [
    (_nan, "NaN"),
    (_five_classes, "thresholds for 5 classes; the model has 50"),
    ("deep", "nested too deeply"),
    ("text", "not readable JSON"),
], ids=["NaN", "5 of 50 classes", "nested too deep", "not JSON"])
@pytest.mark.slow
def test_gui_screenshot_with_a_bad_calibration_exits_2_and_writes_nothing(calibration, tmp_path, edit, message):
    if edit == "deep":
        bad = tmp_path / "bad.json"
        bad.write_text(deep_json())
    elif edit == "text":
        bad = tmp_path / "bad.json"
        bad.write_text("thresholds: high")
    else:
        bad = edited(calibration, tmp_path, "bad.json", edit)
    out = tmp_path / "shot.png"
    result = gui("--calibration", bad, "--screenshot", out)
    assert_one_line_error(result.returncode, result.stderr, message)
    assert not out.exists()


def test_gui_screenshot_never_truncates_another_file(tmp_path):
    precious = tmp_path / "notes.png"
    precious.write_text("not an image, but mine")
    result = gui("--screenshot", precious, timeout=120)
    assert_one_line_error(result.returncode, result.stderr, precious, "not a PNG image")
    assert precious.read_text() == "not an image, but mine"
