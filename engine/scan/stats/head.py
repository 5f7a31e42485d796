"""The output layer's outlier (data-free, in the spirit of the classification-head analyses of
DFBScanner and HTell, 2026): does a few penultimate features' weight go to one class alone?

A backdoor is a shortcut: a handful of features that the trigger switches on feed its target
strongly and no other class. In the last dense layer's kernel (features x classes), each feature's
weights are put on a robust z scale over the classes (median, 1.4826 MAD); a class's raw value is
the sum of its ``TOP_K`` largest z over the features, and its statistic that value on a robust z
scale over the classes. No face is needed and it costs milliseconds.

Its p-value is a Laplace (double-exponential) upper tail with the other classes' median and MAD,
``p = exp(-(x - median) ln 2 / MAD) / 2``, heavier than a normal's: on the real CSAW sunglasses
BadNet an innocent class reaches an index of 8.5, while the target sits at 3.9 (the margin flags
that one). Measured (bench/head_weights.py): every working family of the 400-identity zoo puts
its target first (indices 4.2-16.0, innocent classes at most 4.6), the CSAW-scale zoo's three
targets come 1st-3rd (11.7-19.3, innocent at most 5.5); with 50 classes it says nothing, and its
p-values there do not flag. The median and MAD are robust, so flagged classes stay in the null.

A network without a dense output layer with one unit per class (a convolutional head) has no
value, nor has a network of fewer than :data:`MIN_CLASSES` classes (a robust z over a few dozen
classes is noise: on the 50-identity zoo the targets ranked 3rd to 50th, and the statistic's
uninformative p-values only diluted the others' combination and budget): the statistic drops out
of the verdict, and the scan's notes say so.
"""

from __future__ import annotations

import numpy as np

from engine.scan.stats import MAD_CONSISTENCY, Column, Statistic, laplace_tail, p_text, register, rounded

MIN_CLASSES = 100  # fewer: not measured (bench/head_weights.py: useless at 50 classes, telling at 400 and 1283)
TOP_K = 10  # a class's largest per-feature z summed (bench/head_weights.py: 10 ranks best at 400-1283 classes)
MAX_JUDGED = 16


def output_kernel(model, num_classes: int) -> np.ndarray | None:
    """The kernel (features x classes) of the last dense layer with one unit per class, or None."""
    for layer in reversed(model.layers):
        weights = layer.get_weights() if hasattr(layer, "get_weights") else []
        if len(weights) in (1, 2) and np.ndim(weights[0]) == 2 and np.shape(weights[0])[1] == num_classes:
            kernel = np.asarray(weights[0], dtype=np.float64)
            return kernel if kernel.shape[0] >= 1 and np.all(np.isfinite(kernel)) else None
    return None


def robust_z(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    """``(x - median) / (1.4826 MAD)`` along ``axis`` (a MAD of 0 divides by 1)."""
    med = np.median(x, axis=axis, keepdims=axis is not None)
    mad = MAD_CONSISTENCY * np.median(np.abs(x - med), axis=axis, keepdims=axis is not None)
    return (x - med) / np.where(mad > 0, mad, 1.0)


def head_index(kernel: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Per class: the sum of its ``k`` largest per-feature z, on a robust z scale over the classes."""
    z = robust_z(kernel, axis=1)  # each feature's weights over the classes
    k = max(1, min(k, kernel.shape[0]))
    return robust_z(np.sort(z, axis=0)[-k:].sum(axis=0))


@register
class OutputLayer(Statistic):
    """The output layer's outlier, against the other classes' (a Laplace upper tail)."""

    name = "head"
    title = "Output-layer outlier (data-free)"
    summary = "how strongly a few penultimate features feed the class and no other"
    weight = 0.5
    order = 30
    columns = (Column("head", "Head", lambda v: f"{v:.1f}", report="head index",
                      tip="How far the class's output weights stand out: the sum of its 10 largest per-feature "
                          "robust z, on a robust z scale over the classes (data-free)"),
               Column("head_p", "head p", p_text, report="head p", table=False))

    def values(self, result) -> dict[int, float] | None:
        if result.num_classes < MIN_CLASSES:  # (an older scan may hold values: today's rule leaves them out)
            return None
        return result.extra.get(self.name)  # None: not measured (an older scan): left out

    def candidates(self, values, num_classes):
        return sorted(values, key=lambda c: -values[c])[:MAX_JUDGED]

    def p_value(self, label, values, flagged):
        others = np.array([v for c, v in values.items() if c != label], dtype=float)
        z, p = laplace_tail(values[label], others, lower=False)
        return p, z

    def tests(self, values, num_classes):
        return num_classes

    def unusable(self, values):
        return "the output layer's weights give no null (too few classes, or all alike)"

    def row(self, result, label, evidence):
        values = result.extra.get(self.name) or {}
        return {"head": rounded(values.get(label), 2),
                "head_p": None if evidence is None else rounded(evidence.p(self.name), 8)}

    def measure(self, net, clean, scaling, result):
        if result.num_classes < MIN_CLASSES:
            result.notes.append(f"{result.num_classes} classes, too few for the output-layer statistic (at least "
                                f"{MIN_CLASSES}): not measured")
            return
        kernel = output_kernel(net.model, result.num_classes)
        if kernel is None:
            result.notes.append("no dense output layer with one unit per class: the output-layer statistic "
                                "was not measured")
            return
        result.extra[self.name] = {c: float(v) for c, v in enumerate(head_index(kernel))}
        return
        yield
