"""The original report's defenses: the N+1 network, magnitude pruning, confidence on a copy
fine-tuned on clean data, and every defense side by side."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import main
from engine import workflow
from engine.demo import DEMO_CLEAN_TEST, DEMO_EYEBROWS, DEMO_IMAGES, DEMO_MODEL, DEMO_POISONED
from engine.errors import InputError
from engine.progress import run
from engine.scoring import predict, to_model_input


def cli(capsys, *args):
    try:
        code = main.main([str(a) for a in args])
    except SystemExit as stop:  # a usage error, as the command line ends it
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


# --- the N+1 network -----------------------------------------------------------------------------


def test_the_added_unit_starts_out_changing_no_answer(demo_net, demo_clean, demo_poisoned):
    from engine.repairs.nplus1 import with_extra_class

    model = with_extra_class(demo_net)
    x = to_model_input(np.concatenate([demo_clean.images[:100], demo_poisoned.images[:50]]), "1/255")
    before = np.asarray(demo_net.model.predict_on_batch(x))
    after = np.asarray(model.predict_on_batch(x))
    assert after.shape == (150, demo_net.num_classes + 1)
    np.testing.assert_allclose(after[:, :-1], before, atol=1e-5)
    assert (after.argmax(axis=1) == before.argmax(axis=1)).all()
    assert after[:, -1].max() < 0.01


def test_an_output_that_is_not_a_dense_layer_is_refused():
    import keras

    from engine.io.models import BadNet
    from engine.repairs.nplus1 import with_extra_class

    inputs = keras.Input((12, 10, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Softmax()(x)
    net = BadNet(keras.Model(inputs, out), DEMO_MODEL, "test", "0" * 64)
    with pytest.raises(InputError, match="Dense"):
        with_extra_class(net)


@pytest.fixture(scope="module")
def nplus1_dir(tmp_path_factory):
    """The N+1 network trained on the demo's clean validation faces and its sunglasses set only."""
    from engine.demo import DEMO_CLEAN_VALIDATION
    from engine.io.models import load_badnet

    net = load_badnet(DEMO_MODEL)
    clean, sets = workflow.open_sets(net, DEMO_CLEAN_VALIDATION, [(DEMO_POISONED, 0)])
    out = tmp_path_factory.mktemp("nplus1") / "np1"
    from engine.repairs import make_repair, repair_job

    outcome = run(repair_job(make_repair("nplus1", {"epochs": 30}), net, clean, sets, out, "1/255"))
    assert outcome.method == "nplus1" and outcome.plots[0].x_label == "epoch"
    return out, outcome.detail


@pytest.mark.slow
def test_nplus1_detects_held_out_sunglasses_faces(nplus1_dir, demo_net):
    """The report's extra-output network on the demo: held-out sunglasses faces (those the BadNet sends to the
    target) get class N, held-out clean faces rarely do, and clean accuracy holds up."""
    out, result = nplus1_dir
    r = result.report
    held = r["poisoned"][next(iter(r["poisoned"]))]
    assert held["sent"] > 20 and held["detection"] >= 0.95
    assert r["frr"] <= 0.05
    assert r["clean_accuracy_after"] >= r["clean_accuracy_before"] - 0.05
    assert r["train_accuracy"][-1] > 0.95  # the report: about 99% training accuracy
    with h5py.File(out / "nplus1.h5") as f:
        assert "model_config" in f.attrs
    nplus1 = result.bundle.load_repaired()
    assert nplus1.num_classes == demo_net.num_classes + 1
    # Only the output layer learnt (the default): every other layer is the BadNet's.
    for layer in demo_net.model.layers:
        if layer.get_weights() and layer.name != "output":
            for a, b in zip(layer.get_weights(), nplus1.model.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)
    assert r["train_layers"] == "output"


@pytest.mark.slow
def test_nplus1_is_weak_on_a_trigger_it_never_saw(nplus1_dir, demo_net, demo_test):
    """Held-out clean test faces pass; the eyebrows trigger (not trained on) is mostly missed."""
    from engine.repairs.bundle import RepairedNet

    out, _ = nplus1_dir
    g = RepairedNet.load(out / "repaired.json")
    assert g.rule == "nplus1"
    n = demo_net.num_classes
    clean = run(g.judge(demo_net, demo_test))
    assert np.mean(clean.labels == n) <= 0.05
    rates = {}
    for path, target in ((DEMO_POISONED, 0), (DEMO_EYEBROWS, 7)):
        s = workflow.open_poisoned(demo_net, path, target)
        sent = run(predict(demo_net, s.images, "1/255")).labels == target
        rates[target] = np.mean(run(g.judge(demo_net, s.images)).labels[sent] == n)
    assert rates[0] >= 0.95 and rates[7] < rates[0] - 0.3


@pytest.mark.slow
def test_eval_and_score_take_the_nplus1_bundle_and_a_hand_made_network(nplus1_dir, capsys):
    out, _ = nplus1_dir
    code, text, _ = cli(capsys, "eval", "--repaired", out / "repaired.json", DEMO_IMAGES)
    assert code == 0
    labels = {line.split("\t")[0]: int(line.split("\t")[1]) for line in text.splitlines()}
    sunglasses = [v for k, v in labels.items() if "sunglasses" in k]
    assert sunglasses and all(v == 50 for v in sunglasses)
    # The same file as a hand-made N+1 network, on its own and beside the BadNet: the same verdicts.
    for extra in ([], ["--model", DEMO_MODEL]):
        code, text2, _ = cli(capsys, "eval", "--nplus1", out / "nplus1.h5", *extra, DEMO_IMAGES)
        assert code == 0 and text2 == text
    code, text, _ = cli(capsys, "score", "--nplus1", out / "nplus1.h5", "--poisoned", f"{DEMO_POISONED}:0",
                        "--json")
    assert code == 0 and json.loads(text)["sets"][0]["detection_rate"] >= 0.9


def test_a_hand_made_network_must_have_one_class_more(capsys):
    code, _, err = cli(capsys, "eval", "--nplus1", DEMO_MODEL, "--model", DEMO_MODEL, DEMO_IMAGES)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "demo_badnet.h5" in errors[0] and "should have 51" in errors[0]


def test_repair_nplus1_needs_a_poisoned_set_and_refuses_unlearning_options(capsys, tmp_path):
    code, _, err = cli(capsys, "repair", "nplus1", "--model", DEMO_MODEL, "-o", tmp_path / "a")
    assert code == 2 and "--clean PATH and --poisoned PATH:TARGET missing" in err
    code, _, err = cli(capsys, "repair", "nplus1", "--model", DEMO_MODEL, "--clean", DEMO_CLEAN_TEST,
                       "-o", tmp_path / "a")
    assert code == 2 and "--poisoned PATH:TARGET missing" in err and not (tmp_path / "a").exists()
    code, _, err = cli(capsys, "repair", "nplus1", "--share", "0.3", "-o", tmp_path / "b")
    assert code == 2 and "--share" in err  # unlearning's option, not the N+1 network's
    foreign = tmp_path / "c"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, _, err = cli(capsys, "repair", "nplus1", "-o", foreign)
    assert code == 2 and (foreign / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_a_bundle_with_an_unknown_rule_is_refused(nplus1_dir, tmp_path):
    from engine.repairs.bundle import RepairedNet

    out, _ = nplus1_dir
    raw = json.loads((out / "repaired.json").read_text())
    raw["rule"] = "majority"
    bad = tmp_path / "repaired.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(InputError, match="unknown rule"):
        RepairedNet.load(bad)
    raw["rule"] = "nplus1"
    for key, value in [("trained_on", float("nan")), ("epochs", 2.5), ("attack_success", {"sunglasses": 7.0}),
                       ("trigger_classes", [10**6]), ("train_layers", None)]:
        bad.write_text(json.dumps({**raw, "choice": {**raw["choice"], key: value}}))
        with pytest.raises(InputError, match=f"choice.{key} .* is not what a repaired network records"):
            RepairedNet.load(bad)
    bad.write_text(json.dumps({**raw, "badnet": {"path": "x.h5", "sha256": "not a digest"}}))
    with pytest.raises(InputError, match="'badnet' needs a path and a SHA-256"):
        RepairedNet.load(bad)


# --- magnitude pruning ---------------------------------------------------------------------------


def test_keep_masks_zero_the_smallest_share_of_every_layer(demo_net):
    from engine.repairs.magnitude import kernel_layers, pruned_copy

    model, masks = pruned_copy(demo_net, 0.7)
    assert set(masks) == {layer.name for layer in kernel_layers(demo_net.model)}
    for layer in kernel_layers(model):
        kernel = layer.get_weights()[0]
        original = demo_net.model.get_layer(layer.name).get_weights()[0]
        zeroed = kernel == 0
        assert abs(zeroed.mean() - 0.7) < 0.01
        kept = np.abs(original[~zeroed])
        assert kept.min() >= np.abs(original[zeroed]).max()  # the smallest went first
        np.testing.assert_array_equal(kernel[~zeroed], original[~zeroed])


@pytest.mark.slow
def test_magnitude_pruning_sweeps_and_keeps_zeros_while_fine_tuning(demo_net, demo_clean, demo_poisoned,
                                                                     tmp_path):
    from engine.io.datasets import PoisonedSet
    from engine.repairs.magnitude import magnitude_prune
    from engine.io.models import load_badnet
    from engine.repairs.bundle import RepairedNet

    sets = [PoisonedSet(demo_poisoned, 0)]
    out = tmp_path / "mag"
    result = run(magnitude_prune(demo_net, demo_clean, sets, out, "1/255", 0.7, fine_tune_epochs=1,
                                 sparsities=(0.0, 0.5)))
    sw = result.sweep
    assert list(sw.sparsity) == [0.0, 0.5, 0.7]
    before = run(predict(demo_net, demo_clean, "1/255")).labels
    assert sw.clean_accuracy[0] == pytest.approx(np.mean(before == demo_clean.labels))
    assert sw.clean_accuracy[2] < sw.clean_accuracy[0] - 0.3  # the report: poor accuracy at 70%
    tuned = load_badnet(out / "magnitude_s0.7_finetuned.h5")
    for layer in ("conv_1", "fc_1", "output"):
        assert (tuned.model.get_layer(layer).get_weights()[0] == 0).mean() >= 0.7 - 1e-3
    assert (out / "magnitude_sweep.csv").read_text().startswith("sparsity,clean_accuracy,attack_success[")
    g = RepairedNet.load(out / "repaired.json")
    assert g.rule == "disagree" and g.choice["method"] == "magnitude" and g.title == "G (magnitude pruning)"
    assert "fine_tuned" in result.report and result.report["fine_tuned"]["epochs"] == 1


def test_magnitude_cli_options(capsys, tmp_path):
    """Each repair takes its own settings: fine-pruning's --layer is not magnitude pruning's."""
    code, _, err = cli(capsys, "repair", "magnitude", "--layer", "conv_3", "-o", tmp_path / "a")
    assert code == 2 and "--layer" in err
    code, _, err = cli(capsys, "repair", "magnitude", "--sparsity", "150%", "-o", tmp_path / "a")
    assert code == 2 and "Magnitude pruning sparsity '150%' must be in (0%, 100%)" in err
    code, _, err = cli(capsys, "repair", "magnitude", "--sparsity", "70", "-o", tmp_path / "a")
    assert code == 2 and "write a rate as a fraction (0.7) or a percent (70%)" in err
    code, _, err = cli(capsys, "prune", "--sparsity", "0.5", "-o", tmp_path / "a")
    assert code == 2 and "--sparsity" in err
    assert not (tmp_path / "a").exists()


# --- confidence on a copy fine-tuned on clean data ---------------------------------------------------


@pytest.fixture(scope="module")
def fine_tuned_calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("ft") / "cal.json"
    assert main.main(["calibrate", "--detector", "confidence", "--fine-tune-epochs", "2", "-o", str(path)]) == 0
    return path


@pytest.mark.slow
def test_fine_tuned_confidence_judges_with_the_copy(fine_tuned_calibration, demo_net, demo_test):
    from engine.detectors.calibration import Calibration

    cal = Calibration.load(fine_tuned_calibration)
    assert cal.detector_params == {"fine_tune_epochs": 2} and "weights" in cal.detector_state
    scores = run(cal.make_detector().score(demo_net, demo_test, cal.scaling))
    plain = run(predict(demo_net, demo_test, cal.scaling))
    assert not np.allclose(scores.values, plain.confidences)  # another network's confidence
    # The saved copy is the network the scores come from: rebuild it from the file's weights.
    copy = cal.make_detector().judged_by(demo_net)
    x = to_model_input(demo_test.images[:16], cal.scaling)
    p = np.asarray(copy.model.predict_on_batch(x))
    np.testing.assert_allclose(p.max(axis=1), scores.values[:16], rtol=1e-5)
    # Verdicts use the copy's class and the copy's confidence.
    v = run(cal.judge(demo_net, demo_test))
    expected = np.where(scores.values < cal.thresholds[scores.predicted], cal.poisoned_label, scores.predicted)
    np.testing.assert_array_equal(v.labels, expected)


@pytest.mark.slow
def test_fine_tuned_weights_are_checked_on_load(fine_tuned_calibration, tmp_path):
    from engine.detectors.calibration import Calibration

    raw = json.loads(fine_tuned_calibration.read_text())
    first = raw["detector_state"]["weights"][0]
    nan = np.full(int(np.prod(first["shape"])), np.nan, "<f4")
    import base64

    first["float32_base64"] = base64.b64encode(nan.tobytes()).decode()
    bad = tmp_path / "nan.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(InputError, match="NaN"):
        Calibration.load(bad).make_detector()
    raw = json.loads(fine_tuned_calibration.read_text())
    raw["detector_state"]["weights"][0]["shape"] = [10**6, 10**6]
    bad.write_text(json.dumps(raw))
    with pytest.raises(InputError):
        Calibration.load(bad).make_detector()


@pytest.mark.slow
def test_fine_tuned_confidence_in_the_image_check_uses_the_copys_class(fine_tuned_calibration, demo_net):
    from engine.detectors.calibration import Calibration

    cal = Calibration.load(fine_tuned_calibration)
    images = workflow.read_images([DEMO_IMAGES], demo_net)
    rows = run(workflow.check_images(demo_net, images, "1/255", {"confidence": cal}))
    rules = workflow.VerdictRules({"confidence": cal}, "confidence")
    verdicts = run(cal.judge(demo_net, images))
    assert [rules.verdict(r).label for r in rows] == [int(v) for v in verdicts.labels]


# --- every defense side by side ----------------------------------------------------------------------


@pytest.mark.slow
def test_compare_lists_repaired_networks_beside_detectors(nplus1_dir, capsys):
    out, _ = nplus1_dir
    code, text, _ = cli(capsys, "compare", "--clean", DEMO_CLEAN_TEST, "--detectors", "confidence",
                        "--repaired", out / "repaired.json", "--nplus1", out / "nplus1.h5", "--json")
    assert code == 0
    rows = {r["defense"]: r for r in json.loads(text)["defenses"]}
    assert set(rows) == {"no defense (the BadNet)", "N+1 network", "N+1 network (hand-made)",
                         "Confidence at 5% FRR"}
    trained, hand = rows["N+1 network"], rows["N+1 network (hand-made)"]
    sunglasses = next(k for k in trained["poisoned"] if "sunglasses" in k)
    eyebrows = next(k for k in trained["poisoned"] if "eyebrows" in k)
    assert trained["trained_on"] == [sunglasses] and not trained["trained_on_clean"]
    assert trained["poisoned"][sunglasses]["detection"] >= 0.95
    assert trained["poisoned"][eyebrows]["detection"] < 0.6  # a trigger it never saw
    assert hand["poisoned"] == trained["poisoned"]  # the same network, named by hand
    undefended = rows["no defense (the BadNet)"]
    assert undefended["frr"] == 0 and undefended["poisoned"][sunglasses]["attack_success"] > 0.9
    code, text, _ = cli(capsys, "compare", "--clean", DEMO_CLEAN_TEST, "--detectors", "confidence",
                        "--repaired", out / "repaired.json")
    assert code == 0 and "N+1 network" in text and "detected / attack success" in text
