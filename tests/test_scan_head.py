"""The output layer's statistic (data-free): where it reads the weights, what stands out, and that
it neither flags on its own what it cannot see nor stops a network without a dense head."""

from __future__ import annotations

import numpy as np
import pytest

from engine.scan import evidence as ev
from engine.scan.stats import head, laplace_tail


def upper(value, others):
    return laplace_tail(value, others, lower=False)


def _kernel(rng, features=160, classes=400):
    return rng.normal(0.0, 0.05, (features, classes))


def test_a_class_a_few_features_feed_alone_stands_out():
    rng = np.random.default_rng(0)
    kernel = _kernel(rng)
    kernel[[3, 17, 42, 99, 120], 250] += 0.6  # the trigger's features feed the target and nothing else
    index = head.head_index(kernel)
    assert int(np.argmax(index)) == 250 and index[250] > 10
    others = np.delete(index, 250)
    z, p = upper(float(index[250]), others)
    assert z == pytest.approx(index[250], rel=0.05) and p * 400 / 0.2 < ev.ALPHA  # flagged with a fifth of the budget
    # An innocent network's largest index is nowhere near a flag.
    clean = head.head_index(_kernel(np.random.default_rng(1)))
    top = int(np.argmax(clean))
    _, p = upper(float(clean[top]), np.delete(clean, top))
    assert p * 400 / 0.2 > ev.ALPHA


def test_the_null_needs_spread_and_enough_classes():
    assert upper(5.0, np.zeros(100)) == (None, None)
    assert upper(5.0, np.arange(5.0)) == (None, None)
    assert upper(float("nan"), np.arange(50.0)) == (None, None)
    _, p = upper(-10.0, np.arange(50.0))  # far below: the tail's other side
    assert p > 0.9


def test_the_output_kernel_is_the_last_dense_layer_with_a_unit_per_class(demo_net):
    import keras

    kernel = head.output_kernel(demo_net.model, demo_net.num_classes)
    assert kernel is not None and kernel.shape[1] == demo_net.num_classes and kernel.shape[0] > 1
    dense = [layer for layer in demo_net.model.layers if isinstance(layer, keras.layers.Dense)][-1]
    assert np.array_equal(kernel, dense.get_weights()[0])

    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(5, 3)(inputs)  # a convolutional head: 5 classes, no dense layer
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(conv))
    assert head.output_kernel(model, 5) is None


def test_a_network_without_a_dense_head_is_scanned_without_it(demo_net):
    """The statistic measures nothing and drops out of the verdict; the notes say why."""
    from engine.scan import ScanResult

    result = ScanResult("m.h5", "0" * 64, "1/255", 50, (55, 47), 20, 5, np.arange(50.0), np.zeros(50), {})

    class Headless:
        class model:  # noqa: N801  (a stand-in with no layers)
            layers = []

    list(head.OutputLayer().measure(Headless, None, "1/255", result))
    assert "head" not in result.extra and any("output-layer statistic" in n for n in result.notes)
    # The demo's 50 classes are too few for it (it ranked the 50-identity zoo's targets 3rd to 50th).
    result.notes.clear()
    list(head.OutputLayer().measure(demo_net, None, "1/255", result))
    assert "head" not in result.extra and any("too few for the output-layer statistic" in n for n in result.notes)


def test_it_is_measured_with_enough_classes():
    import keras

    from engine.scan import ScanResult

    classes = head.MIN_CLASSES
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(inputs))

    class Net:
        pass

    Net.model = model
    result = ScanResult("m.h5", "0" * 64, "1/255", classes, (55, 47), 20, 5, np.arange(float(classes)),
                        np.zeros(classes), {})
    list(head.OutputLayer().measure(Net, None, "1/255", result))
    assert len(result.extra["head"]) == classes and not result.notes


def test_real_sunglasses_output_layer_flags_no_class_alone(csaw):
    """On the real CSAW BadNet an innocent class stands out most in the output layer (the target
    does not): with its share of the budget the statistic alone must flag none of them."""
    from engine.io.models import load_badnet

    net = load_badnet(csaw / "models" / "sunglasses_bd_net.h5")
    index = head.head_index(head.output_kernel(net.model, net.num_classes))
    share = ev.shares()["head"]
    ps = [upper(float(index[c]), np.delete(index, c))[1] for c in np.argsort(-index)[:5]]
    assert min(ps) * net.num_classes / share > ev.ALPHA
