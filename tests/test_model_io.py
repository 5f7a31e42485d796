"""Model loading: formats, reports, refusals of untrusted code, and bad files."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from engine.errors import InputError, UntrustedModelError
from engine.io.models import FORMAT_KERAS2_H5, FORMAT_KERAS3, FORMAT_WEIGHTS_ONLY, build_deepid, load_badnet


def write_keras2_weights(model, path):
    """Write weights the way Keras 2 save_weights did (root attr layer_names, weight_names per layer)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([layer.name.encode() for layer in model.layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.3.1"
        for layer in model.layers:
            g = f.create_group(layer.name)
            names = [f"{layer.name}/{kind}:0".encode() for kind in ("kernel", "bias")][: len(layer.weights)]
            g.attrs["weight_names"] = np.array(names)
            for name, value in zip(names, layer.get_weights()):
                g.create_dataset(name.decode(), data=value)


def test_demo_model_report(demo_net):
    report = demo_net.report()
    assert report["format"] == FORMAT_KERAS2_H5
    assert report["input_shape"] == [55, 47, 3]
    assert report["num_classes"] >= 50
    assert {"conv_1", "conv_3", "fc_1", "fc_2", "output"} <= set(report["layers"])
    assert len(report["sha256"]) == 64
    assert report["output"] == "probabilities"


def test_weights_only_file_builds_the_network_and_agrees(demo_net, demo_test, tmp_path):
    path = tmp_path / "weights_only.h5"
    write_keras2_weights(demo_net.model, path)
    net = load_badnet(path)
    assert net.format == FORMAT_WEIGHTS_ONLY
    assert net.num_classes == demo_net.num_classes
    x = demo_test.images[:32].astype(np.float32) / 255
    np.testing.assert_allclose(net.model.predict_on_batch(x), demo_net.model.predict_on_batch(x), atol=1e-5)


def test_keras3_archive_loads(demo_net, tmp_path):
    path = tmp_path / "model.keras"
    demo_net.model.save(path)
    net = load_badnet(path)
    assert net.format == FORMAT_KERAS3
    x = np.random.default_rng(0).uniform(0, 1, (4, 55, 47, 3)).astype(np.float32)
    np.testing.assert_allclose(net.model.predict_on_batch(x), demo_net.model.predict_on_batch(x), atol=1e-5)


def test_logit_output_gets_softmax_note(tmp_path):
    import keras

    inp = keras.Input((55, 47, 3))
    out = keras.layers.Dense(5)(keras.layers.Flatten()(inp))
    path = tmp_path / "logits.keras"
    keras.Model(inp, out).save(path)
    net = load_badnet(path)
    assert not net.outputs_probabilities
    assert any("softmax" in n for n in net.notes)


MAKE_LAMBDA_MODELS = """
import sys, keras
inp = keras.Input((55, 47, 3))
# The marker path is a literal inside the lambda, so its bytecode needs no globals.
payload = eval("lambda t: (open(%r, 'w').close(), t)[1]" % sys.argv[1])
x = keras.layers.Lambda(payload)(inp)
x = keras.layers.Flatten()(x)
model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
for out in sys.argv[2:]:
    model.save(out)
"""


@pytest.fixture(scope="module")
def lambda_models(tmp_path_factory):
    """A model whose Lambda layer creates a marker file when it runs, as .keras and .h5, written in
    another process (one, for both) so the lambda is not already defined in this one."""
    folder = tmp_path_factory.mktemp("lambda")
    marker = folder / "marker"
    paths = {suffix: folder / f"evil{suffix}" for suffix in (".keras", ".h5")}
    subprocess.run([sys.executable, "-c", MAKE_LAMBDA_MODELS, str(marker), *map(str, paths.values())], check=True,
                   capture_output=True)
    return marker, paths


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_model_is_refused_and_runs_nothing(lambda_models, suffix):
    marker, paths = lambda_models
    path = paths[suffix]
    marker.unlink(missing_ok=True)  # building the model ran the lambda; start clean
    with pytest.raises(UntrustedModelError) as err:
        load_badnet(path)
    assert "Lambda" in str(err.value) and str(path) in str(err.value)
    # The engine names the setting; the window says it as its checkbox, the CLI as its flag.
    assert "tick Trust model code" in str(err.value) and "--" not in err.value.problem
    assert "pass --trust-model only if you trust" in err.value.said_as({"trust_model": "pass --trust-model"})
    assert not marker.exists()


def test_lambda_model_loads_when_trusted(lambda_models):
    marker, paths = lambda_models
    marker.unlink(missing_ok=True)
    net = load_badnet(paths[".keras"], trust=True)
    net.model.predict_on_batch(np.zeros((1, 55, 47, 3), np.float32))
    assert marker.exists()  # the test above would notice code running


def test_custom_module_object_is_refused(tmp_path):
    import json
    import zipfile

    path = tmp_path / "custom.keras"
    config = {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": {"layers": [{"module": "os", "class_name": "system", "config": {"name": "x"}, "name": "x"}]},
    }
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps(config))
    with pytest.raises(UntrustedModelError, match="outside Keras"):
        load_badnet(path)


def test_unknown_layer_class_in_legacy_h5_is_refused(tmp_path):
    import json

    path = tmp_path / "custom.h5"
    config = {"class_name": "Functional", "config": {"layers": [{"class_name": "MyBackdoorLayer", "config": {"name": "m"}, "name": "m"}]}}
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
    with pytest.raises(UntrustedModelError, match="unknown custom layer 'MyBackdoorLayer'"):
        load_badnet(path)


def test_output_that_is_not_a_class_vector(tmp_path):
    import keras

    inp = keras.Input((55, 47, 3))
    path = tmp_path / "segmenter.keras"
    keras.Model(inp, keras.layers.Conv2D(2, 3, padding="same")(inp)).save(path)
    with pytest.raises(InputError, match="not a class vector"):
        load_badnet(path)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_text("hello, I am a text file"), "not a Keras model file"),
        (lambda p: p.write_bytes(b""), "not a Keras model file"),
    ],
    ids=["missing", "text", "empty"],
)
def test_bad_model_files(tmp_path, setup, message):
    path = tmp_path / "model.h5"
    setup(path)
    with pytest.raises(InputError, match=message) as err:
        load_badnet(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_model_file(tmp_path):
    from engine.demo import DEMO_MODEL

    path = tmp_path / "truncated.h5"
    path.write_bytes(DEMO_MODEL.read_bytes()[:20000])
    with pytest.raises(InputError, match="truncated|damaged|could not build") as err:
        load_badnet(path)
    assert str(path) in str(err.value)


def test_data_file_given_as_model():
    from engine.demo import DEMO_CLEAN_TEST

    with pytest.raises(InputError, match="is a data file"):
        load_badnet(DEMO_CLEAN_TEST)


def test_deepid_builder_matches_csaw_shapes():
    model = build_deepid(1283)
    assert model.get_layer("fc_1").kernel.shape == (1200, 160)
    assert model.get_layer("fc_2").kernel.shape == (960, 160)
    assert model.count_params() == 601_643
