"""Fine-pruning on the demo BadNet: the sweep, saved models read back, fine-tuning, and G."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest

import engine.repairs.pruning as pruning
from engine import progress
from engine.io.datasets import PoisonedSet
from engine.errors import InputError
from engine.evaluation.metrics import accuracy
from engine.io.models import load_badnet
from engine.repairs.bundle import RepairedNet
from engine.repairs.fine_pruning import fine_prune
from engine.scoring import predict


@pytest.fixture(scope="module")
def bad_set(demo_poisoned):
    return PoisonedSet(demo_poisoned, 0)


@pytest.fixture(scope="module")
def demo_sweep(demo_net, demo_clean, bad_set):
    return progress.run(pruning.sweep(demo_net, demo_clean, [bad_set]))


@pytest.fixture(scope="module")
def pruned_dir(demo_net, demo_clean, bad_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("prune")
    result = progress.run(fine_prune(demo_net, demo_clean, [bad_set], out, fine_tune_epochs=1))
    return out, result


def test_default_layer_is_conv_3_for_deepid(demo_net):
    assert pruning.default_layer(demo_net) == "conv_3"
    assert pruning._deepid_fast_path(demo_net, "conv_3")
    assert not pruning._deepid_fast_path(demo_net, "conv_2")


def test_sweep_ranks_by_mean_activation_and_matches_the_plain_model(demo_sweep, demo_net, demo_clean, bad_set):
    sw = demo_sweep
    assert sw.channels == 60 and sorted(sw.order) == list(range(60))
    assert np.all(np.diff(sw.mean_activation[sw.order]) >= 0)
    plain = progress.run(predict(demo_net, demo_clean, "1/255"))
    assert sw.clean_accuracy[0] == pytest.approx(accuracy(plain.labels, demo_clean.labels))
    assert sw.attack_success[bad_set.name][0] >= 0.95


def test_pruning_alone_keeps_the_backdoor_until_accuracy_collapses(demo_sweep, bad_set):
    """The published picture, measured on the demo BadNet."""
    sw = demo_sweep
    asr = sw.attack_success[bad_set.name]
    at_2 = sw.step_for_drop(2)
    assert at_2 is not None and asr[at_2] >= 0.9  # a 2% accuracy drop leaves the attack working
    low = int(np.argmax(asr <= 0.1))  # the first step with attack success at most 10%
    assert asr[low] <= 0.1 and low > at_2
    assert sw.clean_accuracy[low] < sw.clean_accuracy[0] - 0.3  # ...but only with clean accuracy gone


def test_fast_steps_equal_the_general_head_model(demo_net, demo_clean, bad_set, demo_sweep, monkeypatch):
    monkeypatch.setattr(pruning, "_deepid_fast_path", lambda net, layer: False)
    general = progress.run(pruning.sweep(demo_net, demo_clean, [bad_set], "conv_3"))
    np.testing.assert_array_equal(general.order, demo_sweep.order)
    np.testing.assert_array_equal(general.clean_accuracy, demo_sweep.clean_accuracy)
    np.testing.assert_array_equal(general.attack_success[bad_set.name], demo_sweep.attack_success[bad_set.name])


def test_any_conv_layer_can_be_swept(demo_net, demo_test):
    sw = progress.run(pruning.sweep(demo_net, demo_test, [], "conv_2"))
    assert sw.layer == "conv_2" and sw.channels == 40 and len(sw.clean_accuracy) == 41
    with pytest.raises(InputError, match="no convolutional layer 'fc_1'"):
        progress.run(pruning.sweep(demo_net, demo_test, [], "fc_1"))


def test_step_for_drop():
    sw = pruning.PruningSweep("x", np.arange(4), np.zeros(4), np.array([0.9, 0.89, 0.87, 0.5, 0.1]))
    assert sw.step_for_drop(2) == 2 and sw.step_for_drop(4) == 3 and sw.step_for_drop(85) is None


@pytest.mark.slow
def test_sweep_csv(pruned_dir, bad_set):
    out, result = pruned_dir
    with open(out / "sweep.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 61
    assert set(rows[0]) == {"step", "channel", "fraction_pruned", "clean_accuracy", f"attack_success[{bad_set.name}]"}
    assert rows[1]["channel"] == str(result.sweep.order[0])
    back = pruning.PruningSweep.read_csv(out / "sweep.csv")
    np.testing.assert_allclose(back.clean_accuracy, result.sweep.clean_accuracy, atol=1e-6)


@pytest.mark.slow
def test_saved_pruned_models_have_zeroed_channels_and_the_swept_accuracy(pruned_dir, demo_net, demo_clean):
    import keras

    out, result = pruned_dir
    assert [e["drop"] for e in result.saved] == [2.0, 4.0, 10.0]
    original = demo_net.model.get_layer("conv_3").get_weights()
    for entry in result.saved:
        path = out / f"pruned_drop{entry['drop']:g}.h5"
        channels = np.array(entry["channels"])
        with h5py.File(path) as f:  # read the file itself, not what Keras makes of it
            group = f["model_weights"]["conv_3"]
            names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
            kernel = np.asarray(group[next(n for n in names if "kernel" in n)])
            bias = np.asarray(group[next(n for n in names if "bias" in n)])
        assert np.all(kernel[..., channels] == 0) and np.all(bias[channels] == 0)
        kept = np.setdiff1d(np.arange(60), channels)
        np.testing.assert_array_equal(kernel[..., kept], original[0][..., kept])
        plain = keras.models.load_model(path, compile=False)  # plain Keras reads it too
        net = load_badnet(path)
        preds = progress.run(predict(net, demo_clean, "1/255"))
        assert accuracy(preds.labels, demo_clean.labels) == pytest.approx(entry["clean_accuracy"])
        assert plain.count_params() == net.model.count_params()


@pytest.mark.slow
def test_fine_tuning_keeps_pruned_channels_at_zero(pruned_dir):
    out, result = pruned_dir
    for entry in result.saved:
        tuned = entry["fine_tuned"]
        assert tuned["holdout_images"] == 60 and tuned["train_images"] == 240
        weights = load_badnet(tuned["path"]).model.get_layer("conv_3").get_weights()
        assert np.all(weights[0][..., entry["channels"]] == 0) and np.all(weights[1][entry["channels"]] == 0)
        assert 0.0 <= tuned["holdout_accuracy_after"] <= 1.0


@pytest.mark.slow
def test_repaired_network_verdicts(pruned_dir, demo_net, demo_test, bad_set):
    out, result = pruned_dir
    g = RepairedNet.load(out / "repaired.json")
    assert g.choice["fine_tuned"] and g.choice["drop"] in (2.0, 4.0, 10.0) and "reason" in g.choice
    raw = json.loads((out / "repaired.json").read_text())
    assert not raw["badnet"]["path"].startswith("/") and not raw["repaired"]["path"].startswith("/")
    for data in (demo_test, bad_set.images):
        verdicts = progress.run(g.judge(demo_net, data))
        b = progress.run(predict(demo_net, data, "1/255")).labels
        second = progress.run(predict(g.load_repaired(), data, "1/255")).labels
        expected = np.where(b == second, b, demo_net.num_classes)
        np.testing.assert_array_equal(verdicts.labels, expected)
    assert verdicts.flagged.mean() == pytest.approx(np.mean(b != second))


@pytest.mark.slow
def test_repaired_network_refuses_another_badnet(pruned_dir, tmp_path):
    out, _ = pruned_dir
    g = RepairedNet.load(out / "repaired.json")
    other = load_badnet(g.repaired_path)  # B' is not B
    with pytest.raises(InputError, match="built for another model"):
        g.check_model(other)
