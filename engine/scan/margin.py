"""The largest logit margin each class can reach (MM-BD, Wang et al., IEEE S&P 2024), data-free.

A backdoor gives its target class a shortcut: a few features (the trigger's) that push its logit
far above every other. So the largest margin ``z_c(x) - max_{j != c} z_j(x)`` that any input
``x`` in the image domain can reach is, for a target, much larger than for a class the network
only learnt from faces. MM-BD estimates that maximum per class by gradient ascent from a random
image and tests the largest against a null fitted to the other classes. No clean data is needed,
so this statistic is independent of the faces the user gives, which is why the trigger scan
combines it with Neural Cleanse's.

Here every class is optimised in the same batch (one image per class; the classes share no
parameters, so each gets exactly its own gradient), pixels kept in [0, 1] through tanh, Adam, a
fixed number of steps for every class so that their margins compare like with like. Logits are
the inputs of the final softmax (computed from the last layer's weights where the softmax is
that layer's activation).
"""

from __future__ import annotations

import numpy as np

from engine.io.models import BadNet
from engine.progress import Job, Progress
from engine.scoring import SCALINGS

MAX_BATCH = 1024  # classes per network call


def logit_model(net: BadNet):
    """A function tensor -> logits for ``net``: the input of its final softmax.

    Returns ``(fn, exact)``; ``exact`` is False when the logits could not be reached and log
    probabilities stand in (equal to logits up to a constant per image, but they saturate)."""
    import keras
    import tensorflow as tf

    model = net.model
    if not net.outputs_probabilities:
        return (lambda x: model(x, training=False)), True
    try:
        layer = model.outputs[0]._keras_history.operation
    except AttributeError:
        layer = model.layers[-1]
    try:
        inner = keras.Model(model.inputs[0], layer.input)  # one image input (checked on load)
    except (AttributeError, ValueError, TypeError):
        inner = None
    if inner is not None and isinstance(layer, keras.layers.Dense):
        kernel, bias = layer.kernel, layer.bias

        def dense_logits(x):
            z = tf.matmul(inner(x, training=False), kernel)
            return z + bias if bias is not None else z

        return dense_logits, True
    if inner is not None and isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
        return (lambda x: inner(x, training=False)), True
    return (lambda x: tf.math.log(tf.clip_by_value(model(x, training=False), 1e-30, 1.0))), False


def max_margins(net: BadNet, scaling: str, steps: int = 20, restarts: int = 2, learning_rate: float = 0.05,
                seed: int = 0, classes: np.ndarray | None = None) -> Job[np.ndarray]:
    """The largest margin found for each class in ``steps`` Adam steps from a random image,
    averaged over ``restarts`` random images: an array (C,) (or for ``classes`` only).

    One start is a noisy estimate of the maximum (on the real CSAW sunglasses BadNet two seeds
    correlate at 0.76 over the classes); the mean of two halves that noise in the null, which is
    what makes a target stand out (its family-wise p-value 0.027 and 0.004 from one start each,
    0.010 from their mean, at 40 steps). Progress counts steps over all chunks."""
    import tensorflow as tf

    wanted = np.arange(net.num_classes) if classes is None else np.asarray(classes, dtype=np.int64)
    classes = np.tile(wanted, restarts)
    logits, _ = logit_model(net)
    h, w, _ = net.input_shape
    factor = np.float32(255.0 * SCALINGS[scaling])
    rng = np.random.default_rng(seed)
    chunks = max(1, -(-len(classes) // MAX_BATCH))
    size = -(-len(classes) // chunks)
    k = net.num_classes
    param = tf.Variable(tf.zeros((size, h, w, 3)))
    m1, m2 = tf.Variable(tf.zeros_like(param)), tf.Variable(tf.zeros_like(param))
    t = tf.Variable(0.0)
    lr, b1, b2, eps = np.float32(learning_rate), np.float32(0.9), np.float32(0.999), np.float32(1e-8)

    @tf.function(reduce_retracing=True)
    def step(labels):
        with tf.GradientTape() as tape:
            z = logits((tf.tanh(param) + 1.0) * (0.5 * factor))
            own = tf.gather(z, labels, axis=1, batch_dims=1)
            rival = tf.reduce_max(z - 1e30 * tf.one_hot(labels, k), axis=1)
            margin = own - rival
            loss = -tf.reduce_sum(margin)
        g = tape.gradient(loss, param)
        t.assign_add(1.0)
        m1.assign(b1 * m1 + (1 - b1) * g)
        m2.assign(b2 * m2 + (1 - b2) * g * g)
        param.assign_sub(lr * (m1 / (1 - b1 ** t)) / (tf.sqrt(m2 / (1 - b2 ** t)) + eps))
        return margin

    best = np.full(len(classes), -np.inf)
    total, done = chunks * steps, 0
    yield Progress(0, total, f"largest margins of {len(wanted)} classes")
    for start in range(0, len(classes), size):
        chunk = classes[start:start + size]
        labels = np.concatenate([chunk, np.full(size - len(chunk), chunk[0])])
        param.assign(rng.uniform(-2.0, 2.0, (size, h, w, 3)).astype(np.float32))
        for v in (m1, m2):
            v.assign(tf.zeros_like(v))
        t.assign(0.0)
        for _ in range(steps):
            margin = step(tf.constant(labels)).numpy()[: len(chunk)]
            best[start:start + len(chunk)] = np.maximum(best[start:start + len(chunk)], margin)
            done += 1
            yield Progress(done, total, f"largest margins of {len(wanted)} classes")
    return best.reshape(restarts, len(wanted)).mean(axis=0)
