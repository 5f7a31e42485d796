"""The smallest smooth universal perturbation that sends clean faces to a class (in the spirit of
L-RED, Xiang et al. 2020, and of the blend and warp inversions of UNICORN and BTI-DBF).

Neural Cleanse's mask-and-pattern describes a patch: a trigger that replaces a small part of the
face. A blended image, a sinusoid, a low-frequency field or a warp changes every pixel a little,
and a patch-shaped mask expresses it badly. Here each class gets one additive pattern ``d`` that
is the same for every face (universal), lives on a grid of ``cell`` x ``cell`` pixel cells
upsampled bilinearly (smooth: it cannot be an adversarial speckle for each face, and a warp's or
a blend's change is smooth at that scale), and is applied as ``x' = clip(x + d, 0, 1)``:

    minimise  CE(f(x'), c) + lambda_c * RMS(d)

on Neural Cleanse's schedule (no size penalty until ``d`` sends ``success`` of its batch to the
class, then the weight raised while it does and lowered while it does not); the smallest RMS that
reached the success level is kept. A target needs a far smaller pattern than an innocent class.
Every class asked for is optimised in the same network call, as the mask refinement does
(:mod:`engine.scan.trigger_opt`).

Plain numpy in, numpy out; TensorFlow only inside. No Qt.
"""

from __future__ import annotations

import numpy as np

from engine.progress import Job, Progress
from engine.scan.trigger_opt import penalty_schedule
from engine.scoring import SCALINGS

CELL = 4  # pixels per side of the pattern's grid cell
STEPS = 150


def smallest_perturbations(model, scaling: str, x: np.ndarray, predicted: np.ndarray, classes, probabilities: bool,
                           steps: int = STEPS, per_class: int = 10, cell: int = CELL, learning_rate: float = 0.05,
                           size_weight: float = 1.0, success: float = 0.99, seed: int = 0) -> Job[np.ndarray]:
    """Per class of ``classes``, the RMS (pixels in [0, 1]) of the smallest smooth universal
    perturbation that sent ``success`` of a batch of clean faces to it (``inf``: never reached).

    ``x``: float32 (N, H, W, 3) clean faces in [0, 1]; ``predicted``: the network's class of each
    (a face already in class c says nothing about reaching c and is left out of c's loss). Yields
    :class:`Progress` once per step."""
    import tensorflow as tf

    classes = np.asarray(classes, dtype=np.int64)
    k = len(classes)
    if k == 0 or len(x) == 0:
        return np.full(k, np.inf)
    n, h, w, _ = x.shape
    hg, wg = -(-h // cell), -(-w // cell)
    factor = np.float32(255.0 * SCALINGS[scaling])
    rng = np.random.default_rng(seed)
    labels = tf.constant(classes)
    grid = tf.Variable(tf.zeros((k, hg, wg, 3)))
    mom = tf.Variable(tf.zeros((k, hg, wg, 3)))
    vel = tf.Variable(tf.zeros((k, hg, wg, 3)))
    t = tf.Variable(0.0)
    lr, b1, b2, eps = np.float32(learning_rate), np.float32(0.9), np.float32(0.999), np.float32(1e-8)

    @tf.function(reduce_retracing=True)
    def step(batch, weights, lam):
        with tf.GradientTape() as tape:
            d = tf.image.resize(grid, (h, w), method="bilinear")  # (k, H, W, 3)
            moved = tf.clip_by_value(batch + d[:, None], 0.0, 1.0)  # (k, per, H, W, 3)
            out = model(tf.reshape(moved, (-1, h, w, 3)) * factor, training=False)
            out = tf.reshape(out, (k, per_class, -1))
            logp = tf.math.log(tf.clip_by_value(out, 1e-12, 1.0)) if probabilities else tf.nn.log_softmax(out)
            ce = -tf.gather(logp, labels, axis=2, batch_dims=1)  # (k, per)
            total = tf.reduce_sum(weights, axis=1) + 1e-6
            rms = tf.sqrt(tf.reduce_mean(tf.square(d), axis=[1, 2, 3]) + 1e-10)
            loss = tf.reduce_sum(tf.reduce_sum(ce * weights, axis=1) / total + lam * rms)
        g = tape.gradient(loss, grid)
        t.assign_add(1.0)
        mom.assign(b1 * mom + (1 - b1) * g)
        vel.assign(b2 * vel + (1 - b2) * g * g)
        grid.assign_sub(lr * (mom / (1 - b1 ** t)) / (tf.sqrt(vel / (1 - b2 ** t)) + eps))
        hit = tf.cast(tf.equal(tf.argmax(out, axis=-1), labels[:, None]), tf.float32)
        return rms, tf.reduce_sum(hit * weights, axis=1) / total

    best = np.full(k, np.inf)
    lam = np.zeros(k, np.float32)
    up = np.zeros(k, int)
    down = np.zeros(k, int)
    for s in range(steps):
        idx = (np.argsort(rng.random((k, n)), axis=1)[:, :per_class] if n >= per_class
               else rng.integers(0, n, (k, per_class)))
        weights = (predicted[idx] != classes[:, None]).astype(np.float32)
        rms, hit = step(tf.constant(x[idx]), tf.constant(weights), tf.constant(lam))
        rms, hit = rms.numpy().astype(np.float64), hit.numpy()
        ok = (hit >= success) & (weights.sum(axis=1) > 0)
        best = np.where(ok & (rms < best), rms, best)  # (the pattern that was judged, before this step's update)
        lam, up, down = penalty_schedule(lam, ok, up, down, size_weight)
        yield Progress(s + 1, steps, f"smallest smooth perturbation of {k} candidate classes")
    return best
