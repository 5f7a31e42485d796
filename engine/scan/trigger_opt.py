"""Reverse-engineer triggers for many classes at once (the optimiser behind the trigger scan).

For a class c, Neural Cleanse (Wang et al., IEEE S&P 2019) looks for the smallest mask m (H x W,
in [0, 1]) and pattern p (H x W x 3, in [0, 1]) that send clean images to c:

    x' = (1 - m) * x + m * p,   minimise  CE(f(x'), c) + lambda_c * mean(m)

Its authors optimise one class at a time. Here every class of a *chunk* is optimised in the same
network call: the batch holds each class's stamped copies of a few clean images, the loss is the
sum of the classes' losses (they share no parameters, so each class gets exactly its own
gradient), and Adam runs element-wise on the stacked masks and patterns. Masks and patterns are
kept in [0, 1] through tanh, as Neural Cleanse does.

Plain numpy in, numpy out; TensorFlow is used only inside. No Qt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.scoring import SCALINGS


@dataclass
class ChunkState:
    """Masks, patterns and Adam moments of the classes in one chunk (tanh-space parameters)."""

    classes: np.ndarray  # (k,) class of each slot; padding slots repeat a real class
    real: int  # the first ``real`` slots are real classes
    mask_param: np.ndarray  # (k, H, W, 1)
    pattern_param: np.ndarray  # (k, H, W, 3)
    lam: np.ndarray  # (k,) mask-size weight per class
    moments: list | None = None  # Adam (m, v) for both parameters, and the step count

    @property
    def masks(self) -> np.ndarray:
        return (np.tanh(self.mask_param[..., 0]) + 1.0) / 2.0

    @property
    def patterns(self) -> np.ndarray:
        return (np.tanh(self.pattern_param) + 1.0) / 2.0


def new_chunk(classes: np.ndarray, slots: int, shape: tuple[int, int], rng: np.random.Generator,
              lam: float, mask_start: float = 0.25) -> ChunkState:
    """Fresh parameters for ``classes`` padded to ``slots`` (fixed shapes: one compiled step)."""
    classes = np.asarray(classes, dtype=np.int64)
    real = len(classes)
    padded = np.concatenate([classes, np.full(slots - real, classes[0], dtype=np.int64)])
    h, w = shape
    a0 = np.arctanh(2 * mask_start - 1)
    mask_param = np.full((slots, h, w, 1), a0, dtype=np.float32)
    pattern_param = rng.normal(0.0, 1.0, (slots, h, w, 3)).astype(np.float32)
    return ChunkState(padded, real, mask_param, pattern_param, np.full(slots, lam, dtype=np.float32))


class ChunkOptimizer:
    """One compiled Adam step for ``slots`` classes x ``per_class`` images of a given network."""

    def __init__(self, model, scaling: str, slots: int, per_class: int, image_shape: tuple[int, int, int],
                 probabilities: bool = True, learning_rate: float = 0.1):
        import tensorflow as tf

        self.tf = tf
        self.slots, self.per_class = slots, per_class
        h, w, _ = image_shape
        factor = np.float32(255.0 * SCALINGS[scaling])  # optimise in [0, 1] pixels, feed the model's scale
        self._vars = {
            "a": tf.Variable(tf.zeros((slots, h, w, 1))),
            "b": tf.Variable(tf.zeros((slots, h, w, 3))),
            "ma": tf.Variable(tf.zeros((slots, h, w, 1))),
            "va": tf.Variable(tf.zeros((slots, h, w, 1))),
            "mb": tf.Variable(tf.zeros((slots, h, w, 3))),
            "vb": tf.Variable(tf.zeros((slots, h, w, 3))),
            "t": tf.Variable(0.0),
        }
        v = self._vars
        lr, b1, b2, eps = np.float32(learning_rate), np.float32(0.9), np.float32(0.999), np.float32(1e-8)

        def forward(x, labels):
            # x: (slots, per_class, H, W, 3) in [0, 1]; labels: (slots,)
            m = (tf.tanh(v["a"]) + 1.0) / 2.0
            p = (tf.tanh(v["b"]) + 1.0) / 2.0
            stamped = (1.0 - m[:, None]) * x + (m * p)[:, None]
            flat = tf.reshape(stamped, (-1, h, w, 3)) * factor
            out = model(flat, training=False)
            out = tf.reshape(out, (slots, per_class, -1))
            if probabilities:
                logp = tf.math.log(tf.clip_by_value(out, 1e-12, 1.0))
            else:
                logp = tf.nn.log_softmax(out, axis=-1)
            target = tf.gather(logp, labels, axis=2, batch_dims=1)  # (slots, per_class)
            hit = tf.cast(tf.equal(tf.argmax(out, axis=-1), labels[:, None]), tf.float32)
            return m, -target, hit

        @tf.function(reduce_retracing=True)
        def step(x, labels, weights, lam):
            with tf.GradientTape() as tape:
                m, ce, hit = forward(x, labels)
                total = tf.reduce_sum(weights, axis=1) + 1e-6
                ce_class = tf.reduce_sum(ce * weights, axis=1) / total
                size = tf.reduce_mean(m, axis=[1, 2, 3])
                loss = ce_class + lam * size
                objective = tf.reduce_sum(loss)
            ga, gb = tape.gradient(objective, [v["a"], v["b"]])
            v["t"].assign_add(1.0)
            t = v["t"]
            for g, param, mom, vel in ((ga, v["a"], v["ma"], v["va"]), (gb, v["b"], v["mb"], v["vb"])):
                mom.assign(b1 * mom + (1 - b1) * g)
                vel.assign(b2 * vel + (1 - b2) * g * g)
                mhat = mom / (1 - b1 ** t)
                vhat = vel / (1 - b2 ** t)
                param.assign_sub(lr * mhat / (tf.sqrt(vhat) + eps))
            success = tf.reduce_sum(hit * weights, axis=1) / total
            return ce_class, size, success

        self._step = step

    def load(self, state: ChunkState) -> None:
        v = self._vars
        v["a"].assign(state.mask_param)
        v["b"].assign(state.pattern_param)
        if state.moments is None:
            for key in ("ma", "va", "mb", "vb"):
                v[key].assign(np.zeros(v[key].shape, np.float32))
            v["t"].assign(0.0)
        else:
            for key, value in zip(("ma", "va", "mb", "vb", "t"), state.moments):
                v[key].assign(value)

    def store(self, state: ChunkState) -> None:
        v = self._vars
        state.mask_param = v["a"].numpy()
        state.pattern_param = v["b"].numpy()
        state.moments = [v[k].numpy() for k in ("ma", "va", "mb", "vb", "t")]

    def step(self, state: ChunkState, x: np.ndarray, weights: np.ndarray):
        """One Adam step on the loaded chunk: (cross-entropy, mask share, hit rate) per slot."""
        ce, size, success = self._step(x, state.classes, weights, state.lam)
        return ce.numpy(), size.numpy(), success.numpy()


def penalty_schedule(lam: np.ndarray, ok: np.ndarray, up: np.ndarray, down: np.ndarray, start: float):
    """Neural Cleanse's schedule of the size penalty's weight, per class, after a step whose batch
    the attack reached (``ok``) or not: none until the attack first works, then ``start``; raised
    x1.5 after 5 steps in a row that worked, lowered /1.5^1.5 after 5 that did not. Returns the
    new (weights as float32, up counts, down counts)."""
    lam = np.where((lam == 0) & ok, start, lam)
    up = np.where(ok, up + 1, 0)
    down = np.where(ok, 0, down + 1)
    lam = np.where((lam > 0) & (up >= 5), lam * 1.5, lam)
    lam = np.where((lam > 0) & (down >= 5), lam / 1.5 ** 1.5, lam)
    return lam.astype(np.float32), np.where(up >= 5, 0, up), np.where(down >= 5, 0, down)


def stamp(images: np.ndarray, mask: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """uint8 images (N, H, W, 3) with a reversed trigger applied: (1 - m) x + m p (p in [0, 1])."""
    x = images.astype(np.float32) / 255.0
    m = mask.astype(np.float32)[..., None]
    out = (1.0 - m) * x + m * pattern.astype(np.float32)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def smooth_trigger(model, scaling: str, images: np.ndarray, label: int, probabilities: bool = True,
                   budget: float = 0.15, cell: int = 3, steps: int = 150, learning_rate: float = 0.1,
                   smoothness: float = 1.0):
    """The shape of one class's trigger, for people to look at: a generator of step counts that
    returns ``(mask, pattern)`` (H, W) and (H, W, 3) in [0, 1].

    Neural Cleanse's smallest mask is a handful of pixels, the least of the trigger that still
    works; it proves the backdoor but does not show what the trigger looks like. Here the mask
    lives on a grid of ``cell`` x ``cell`` pixel cells (upsampled bilinearly, so it is made of
    blobs, not scattered pixels), may cover up to ``budget`` of the image for free (a hinge
    penalty above it, none below), and the pattern is smoothed by a total-variation term; so the
    mask spreads over what the network reacts to. ``images``: float (N, H, W, 3) in [0, 1] of
    faces the network puts in other classes."""
    import tensorflow as tf

    _, h, w, _ = images.shape
    hm, wm = -(-h // cell), -(-w // cell)
    factor = np.float32(255.0 * SCALINGS[scaling])
    x = tf.constant(images, tf.float32)
    a = tf.Variable(np.full((1, hm, wm, 1), np.arctanh(2 * 0.1 - 1), np.float32))
    b = tf.Variable(np.zeros((1, h, w, 3), np.float32))
    moments = [tf.Variable(tf.zeros_like(v)) for v in (a, a, b, b)]
    t = tf.Variable(0.0)
    lr, b1, b2, eps = np.float32(learning_rate), np.float32(0.9), np.float32(0.999), np.float32(1e-8)

    def parts():
        m = tf.image.resize((tf.tanh(a) + 1.0) / 2.0, (h, w), method="bilinear")
        return m, (tf.tanh(b) + 1.0) / 2.0

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            m, p = parts()
            out = model(((1.0 - m) * x + m * p) * factor, training=False)
            logp = tf.math.log(tf.clip_by_value(out, 1e-30, 1.0)) if probabilities else tf.nn.log_softmax(out)
            ce = -tf.reduce_mean(logp[:, label])
            tv = (tf.reduce_mean(tf.abs(p[:, 1:] - p[:, :-1])) + tf.reduce_mean(tf.abs(p[:, :, 1:] - p[:, :, :-1])))
            loss = ce + 50.0 * tf.nn.relu(tf.reduce_mean(m) - budget) + smoothness * tv
        grads = tape.gradient(loss, [a, b])
        t.assign_add(1.0)
        for g, param, mom, vel in ((grads[0], a, moments[0], moments[1]), (grads[1], b, moments[2], moments[3])):
            mom.assign(b1 * mom + (1 - b1) * g)
            vel.assign(b2 * vel + (1 - b2) * g * g)
            param.assign_sub(lr * (mom / (1 - b1 ** t)) / (tf.sqrt(vel / (1 - b2 ** t)) + eps))

    for s in range(steps):
        step()
        yield s + 1
    m, p = parts()
    return m.numpy()[0, ..., 0].astype(np.float32), p.numpy()[0].astype(np.float32)
