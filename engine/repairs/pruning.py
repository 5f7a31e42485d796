"""Fine-pruning (Liu, Dolan-Gavitt and Garg, RAID 2018): prune dormant channels, then fine-tune.

The channels of one convolutional layer are ranked by their mean activation on clean data and
pruned one at a time, lowest first; after each step the sweep records clean accuracy and each
poisoned set's attack success rate.

Cost. The network runs once up to the pruned layer; every step then reuses that. For the CSAW
DeepID layout pruned at ``conv_3`` (the default) a step is exact linear algebra: a pruned channel
is zero after the ReLU and after max pooling, ``fc_1`` and ``conv_4`` are linear in the pooled
map, so a step subtracts that one channel's contribution, reruns ``fc_2`` as a matrix product,
and runs the output layer only for rows whose answer may have changed (see ``_DeepIDSteps``).
Any other layer goes through a Keras "head" model (layer output -> class vector) per step:
correct for every architecture, and still far cheaper than rebuilding and re-predicting the
whole network per step.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.io.datasets import ImageSet, PoisonedSet
from engine.errors import InputError
from engine.io.models import BadNet
from engine.progress import Job, Progress
from engine.scoring import to_model_input

DEFAULT_DROPS = (2.0, 4.0, 10.0)
TRUNK_BATCH = 128  # measured: the convolutions run ~5% faster in batches of 128 than 256 or 512 here


@dataclass
class PruningSweep:
    """Clean accuracy and attack success after each pruning step (row 0: nothing pruned)."""

    layer: str
    order: np.ndarray  # channels in the order they were pruned
    mean_activation: np.ndarray  # per channel, on clean data
    clean_accuracy: np.ndarray  # len(order) + 1
    attack_success: dict[str, np.ndarray] = field(default_factory=dict)  # set name -> len(order) + 1

    @property
    def channels(self) -> int:
        return len(self.order)

    def fraction(self, step: int) -> float:
        return step / self.channels

    def step_for_drop(self, drop_percent: float) -> int | None:
        """The first step whose clean accuracy is at least ``drop_percent`` points below step 0."""
        limit = self.clean_accuracy[0] - drop_percent / 100.0
        hits = np.flatnonzero(self.clean_accuracy <= limit + 1e-12)
        return int(hits[0]) if len(hits) else None

    def rows(self) -> list[list]:
        names = list(self.attack_success)
        out = []
        for step in range(self.channels + 1):
            channel = "" if step == 0 else int(self.order[step - 1])
            row = [step, channel, f"{self.fraction(step):.6f}", f"{self.clean_accuracy[step]:.6f}"]
            row += [f"{self.attack_success[n][step]:.6f}" for n in names]
            out.append(row)
        return out

    def header(self) -> list[str]:
        return ["step", "channel", "fraction_pruned", "clean_accuracy"] + [
            f"attack_success[{n}]" for n in self.attack_success
        ]

    def write_csv(self, path: str | Path) -> None:
        from engine.io.files import write_csv

        write_csv(path, self.header(), self.rows())

    @classmethod
    def read_csv(cls, path: str | Path, layer: str = "") -> PruningSweep:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        header, body = rows[0], rows[1:]
        sets = [h[len("attack_success[") : -1] for h in header[4:]]
        order = np.array([int(r[1]) for r in body[1:]])
        return cls(
            layer=layer,
            order=order,
            mean_activation=np.full(len(order), np.nan),
            clean_accuracy=np.array([float(r[3]) for r in body]),
            attack_success={s: np.array([float(r[4 + i]) for r in body]) for i, s in enumerate(sets)},
        )


def conv_layers(net: BadNet) -> list[str]:
    """The names of the network's convolutional layers, in order."""
    import keras

    return [layer.name for layer in net.model.layers if isinstance(layer, keras.layers.Conv2D)]


def default_layer(net: BadNet) -> str:
    """``conv_3`` for the CSAW DeepID layout, else the last convolutional layer."""
    convs = conv_layers(net)
    if not convs:
        raise InputError(net.path, "has no convolutional layer to prune")
    return "conv_3" if _deepid_fast_path(net, "conv_3") else convs[-1]


def check_layer(net: BadNet, layer: str) -> None:
    """The layer must be one of the network's convolutional layers."""
    convs = conv_layers(net)
    if layer not in convs:
        raise InputError(net.path, f"no convolutional layer '{layer}' (it has {', '.join(convs) or 'none'})")


def sweep(
    net: BadNet,
    clean: ImageSet,
    poisoned: list[PoisonedSet] = (),
    layer: str | None = None,
    scaling: str = "1/255",
    batch_size: int = TRUNK_BATCH,
) -> Job[PruningSweep]:
    """Prune ``layer``'s channels one at a time, lowest mean clean activation first."""
    layer = layer or default_layer(net)
    check_layer(net, layer)
    labels = clean.require_labels("a pruning sweep")
    sets = [("clean", clean.images)] + [(p.name, p.images.images) for p in poisoned]
    fast = _deepid_fast_path(net, layer)
    total = sum(len(images) for _, images in sets)
    yield Progress(0, total, "running the network up to " + layer)

    # One pass up to the layer: per-channel activation sums (clean) and what each step reuses.
    done, cached, means = 0, [], None
    trunk = _trunk(net, layer, fast)
    for name, images in sets:
        parts = []
        for start in range(0, len(images), batch_size):
            x = to_model_input(images[start : start + batch_size], scaling)
            outs = trunk.predict_on_batch(x)
            outs = outs if isinstance(outs, list) else [outs]
            act = np.asarray(outs[0])
            if name == "clean":  # per-image channel means (fast path) or whole maps: same mean
                per_image = act if act.ndim == 2 else act.mean(axis=(1, 2))
                batch_sum = per_image.sum(axis=0, dtype=np.float64)
                means = batch_sum if means is None else means + batch_sum
            parts.append([np.asarray(o, dtype=np.float32) for o in (outs[1:] if fast else outs)])
            done += len(x)
            yield Progress(done, total, "running the network up to " + layer)
        cached.append([np.concatenate(p) for p in zip(*parts)])
    channels = len(means)
    means = means / len(clean)
    order = np.argsort(means, kind="stable")

    # The class each row must reach to count: its label (clean) or the attack's target.
    keys = [np.asarray(labels, dtype=np.int64)] + [np.full(len(p.images), p.target, dtype=np.int64) for p in poisoned]
    stepper = _DeepIDSteps(net, cached, keys) if fast else _HeadSteps(net, layer, cached, keys, batch_size)
    accuracy = np.empty(channels + 1)
    success = {p.name: np.empty(channels + 1) for p in poisoned}
    for step in range(channels + 1):
        if step > 0:
            stepper.prune(int(order[step - 1]))
        hits = stepper.hits()
        accuracy[step] = np.mean(hits[0])
        for p, hit in zip(poisoned, hits[1:]):
            success[p.name][step] = np.mean(hit)
        yield Progress(step, channels, f"pruning {layer}")
    return PruningSweep(layer, order, means, accuracy, success)


# --- the two ways to take a step ------------------------------------------------------------


def _deepid_fast_path(net: BadNet, layer: str) -> bool:
    """True when ``layer`` is conv_3 of the CSAW DeepID layout, whose head is linear enough.

    Checked by structure, not by the names Keras gave the merge layers (``add_1``, ``add_9``…).
    """
    import keras

    m = net.model
    try:
        conv3, pool3, conv4 = m.get_layer(layer), m.get_layer("pool_3"), m.get_layer("conv_4")
        fc1, fc2, out = m.get_layer("fc_1"), m.get_layer("fc_2"), m.get_layer("output")
        act = _inputs_of(out)[0]
        add = _inputs_of(act)[0]
        flat1, flat2 = _inputs_of(fc1)[0], _inputs_of(fc2)[0]
    except (ValueError, IndexError, AttributeError):
        return False
    relu, linear = keras.activations.relu, keras.activations.linear
    return (
        layer == "conv_3"
        and isinstance(pool3, keras.layers.MaxPooling2D) and _inputs_of(pool3) == [conv3]
        and conv3.activation is relu and conv4.activation is relu
        and conv4.padding == "valid" and tuple(conv4.strides) == (1, 1) and _inputs_of(conv4) == [pool3]
        and isinstance(flat1, keras.layers.Flatten) and _inputs_of(flat1) == [pool3]
        and isinstance(flat2, keras.layers.Flatten) and _inputs_of(flat2) == [conv4]
        and fc1.activation is linear and fc2.activation is linear
        and isinstance(add, keras.layers.Add) and set(_inputs_of(add)) == {fc1, fc2}
        and isinstance(act, keras.layers.Activation) and act.activation is relu
        and out.activation is keras.activations.softmax
        and len(out._inbound_nodes) == 1
    )


def _inputs_of(layer) -> list:
    """The layers feeding ``layer`` (first call site)."""
    node = layer._inbound_nodes[0]
    return [t._keras_history.operation for t in node.input_tensors]


def _trunk(net: BadNet, layer: str, fast: bool):
    """The network up to ``layer``. First output: per-image channel means of the layer (fast
    path) or its whole activation (head path); then what the fast path's steps reuse."""
    import keras

    m = net.model
    act = m.get_layer(layer).output
    if not fast:
        return keras.Model(m.inputs, [act])
    means = keras.layers.GlobalAveragePooling2D()(act)
    return keras.Model(m.inputs, [means, m.get_layer("pool_3").output, m.get_layer("fc_1").output])


class _DeepIDSteps:
    """Exact steps for DeepID at conv_3.

    A pruned channel is zero after its ReLU and after max pooling; fc_1 and conv_4 are linear in
    the pooled map. So a step subtracts that channel's share from fc_1 and from conv_4's
    pre-activation and reruns fc_2, giving each row's exact 160-unit feature vector h.

    The output layer (1283 classes, the largest product) is then run only for rows whose answer
    could have changed. A step needs one fact per row: is its key class (label or attack target)
    the top class? Each row keeps what it learnt when its logits were last computed in full:
    - a row that was a hit keeps its feature vector h0 and its best other logit m0. Any other
      class j now scores at most z0_j + |h - h0| |w_j| <= m0 + |h - h0| max_j |w_j|
      (Cauchy-Schwarz), so if the key class's exact logit is above that bound it is still a hit;
    - a row that was a miss keeps a class that beat the key class; if it still does (two exact
      dot products), the row is still a miss.
    Otherwise the row's logits are computed in full. A margin well above float32 rounding keeps
    the shortcut on the safe side. Everything happens in one pass over row blocks small enough
    to stay in cache.
    """

    CHUNK = 512
    MARGIN = 1e-4  # relative to the largest possible logit, |h| max|w_j| + max|b|

    def __init__(self, net: BadNet, cached: list[list[np.ndarray]], keys: list[np.ndarray]):
        m = net.model
        k4, b4 = (w.astype(np.float32) for w in m.get_layer("conv_4").get_weights())
        w1 = m.get_layer("fc_1").get_weights()[0].astype(np.float32)
        self.w2, self.b2 = (w.astype(np.float32) for w in m.get_layer("fc_2").get_weights())
        self.wo, self.bo = (w.astype(np.float32) for w in m.get_layer("output").get_weights())
        self.wo_rows = np.ascontiguousarray(self.wo.T)  # one class's weights per row, for gathers
        self.w_norm = float(np.linalg.norm(self.wo, axis=0).max())
        self.b_max = float(np.abs(self.bo).max())
        kh, kw, channels, filters = k4.shape
        ph, pw = cached[0][0].shape[1:3]
        oh, ow = ph - kh + 1, pw - kw + 1
        self.z4_size = oh * ow * filters
        # Per channel, the linear map from its pooled map (ph*pw values) to conv_4's
        # pre-activation (flattened as (oh, ow, filters)) next to fc_1 (as Flatten orders it).
        self.maps = np.zeros((channels, ph * pw, self.z4_size + w1.shape[1]), np.float32)
        for y in range(oh):
            for x in range(ow):
                out = slice((y * ow + x) * filters, (y * ow + x + 1) * filters)
                for i in range(kh):
                    for j in range(kw):
                        self.maps[:, (y + i) * pw + x + j, out] += k4[i, j]
        self.maps[:, :, self.z4_size :] = w1.reshape(ph * pw, channels, -1).transpose(1, 0, 2)
        self.sets = []
        for (pooled, fc1), key in zip(cached, keys):
            n = len(fc1)
            z4 = np.tensordot(
                np.stack([pooled[:, i : i + oh, j : j + ow, :] for i in range(kh) for j in range(kw)], axis=3),
                k4.reshape(kh * kw, channels, -1),
                axes=([3, 4], [0, 1]),
            ) + b4
            self.sets.append({
                # channel-major, so a step reads one channel's maps contiguously
                "pooled": np.ascontiguousarray(pooled.transpose(3, 0, 1, 2).reshape(channels, n, -1)),
                "pre": np.concatenate([z4.reshape(n, -1), fc1], axis=1).astype(np.float32),
                "key": key,
                "h0": np.zeros((n, len(self.b2)), np.float32),  # h when the logits were last computed
                "hit": np.zeros(n, bool),
                "best_other": np.zeros(n, np.float32),  # top logit but the key's (hits)
                "rival": np.zeros(n, np.int64),  # a class that beat the key class (misses)
                "known": False,  # no row has been computed in full yet
            })
        self.relu4 = np.empty((self.CHUNK, self.z4_size), np.float32)
        self.pending: list[int] = []

    def prune(self, channel: int) -> None:
        self.pending.append(channel)  # applied block by block in hits()

    def hits(self) -> list[np.ndarray]:
        pending, self.pending = self.pending, []
        for s in self.sets:
            n = len(s["pre"])
            for a in range(0, n, self.CHUNK):
                b = min(n, a + self.CHUNK)
                pre = s["pre"][a:b]
                rows: slice | np.ndarray = slice(a, b)
                if s["known"]:  # rows where every pruned channel was zero did not change at all
                    fired = np.zeros(b - a, bool)
                    for c in pending:
                        fired |= s["pooled"][c, a:b].any(axis=1)
                    if not fired.any():
                        continue
                    if fired.mean() < 0.5:
                        rows = a + np.flatnonzero(fired)
                for c in pending:  # a pruned channel is never read again, so it need not be zeroed
                    pre -= s["pooled"][c, a:b] @ self.maps[c]
                pre = s["pre"][rows]
                relu4 = np.maximum(pre[:, : self.z4_size], 0.0, out=self.relu4[: len(pre)])
                h = relu4 @ self.w2
                h += self.b2
                h += pre[:, self.z4_size :]
                np.maximum(h, 0.0, out=h)
                self._classify(s, rows, h)
            s["known"] = True
        return [s["hit"].copy() for s in self.sets]

    def _classify(self, s: dict, rows: slice | np.ndarray, h: np.ndarray) -> None:
        """Update ``hit`` for ``rows`` (a slice or indices) given their feature vectors ``h``."""
        key, hit = s["key"][rows], s["hit"][rows]
        if s["known"]:
            z_key = np.einsum("ij,ij->i", h, self.wo_rows[key]) + self.bo[key]
            rival = s["rival"][rows]
            z_rival = np.einsum("ij,ij->i", h, self.wo_rows[rival]) + self.bo[rival]
            h_norm = np.sqrt(np.einsum("ij,ij->i", h, h))
            shift = h - s["h0"][rows]
            moved = np.sqrt(np.einsum("ij,ij->i", shift, shift))
            margin = self.MARGIN * (h_norm * self.w_norm + self.b_max)
            settled = np.where(
                hit,
                s["best_other"][rows] + moved * self.w_norm + margin < z_key,
                z_rival > z_key + margin,
            )
            redo = np.flatnonzero(~settled)
        else:
            redo = np.arange(len(h))
        if len(redo) == 0:
            return
        index = np.arange(rows.start, rows.stop)[redo] if isinstance(rows, slice) else rows[redo]
        hr = h[redo]
        logits = hr @ self.wo
        logits += self.bo
        k = key[redo]
        s["hit"][index] = logits.argmax(axis=1) == k
        i = np.arange(len(redo))
        logits[i, k] = -np.inf
        rival = logits.argmax(axis=1)
        s["rival"][index] = rival
        s["best_other"][index] = logits[i, rival]
        s["h0"][index] = hr


class _HeadSteps:
    """Any layer: zero the channel in the cached activations and run the rest of the network."""

    def __init__(self, net: BadNet, layer: str, cached: list[list[np.ndarray]], keys: list[np.ndarray], batch_size: int):
        import keras

        # From a private copy: a model cut at an inner tensor rewires the graph it is cut from.
        m = net.copy_model()
        self.head = keras.Model(m.get_layer(layer).output, m.outputs)
        self.sets = [c[0] for c in cached]
        self.keys = keys
        self.batch_size = batch_size

    def prune(self, channel: int) -> None:
        for acts in self.sets:
            acts[..., channel] = 0.0

    def hits(self) -> list[np.ndarray]:
        out = []
        for acts, key in zip(self.sets, self.keys):
            preds = [
                np.asarray(self.head.predict_on_batch(acts[i : i + self.batch_size])).argmax(axis=1)
                for i in range(0, len(acts), self.batch_size)
            ]
            out.append(np.concatenate(preds) == key)
        return out


# --- pruned models ---------------------------------------------------------------------------


def pruned_model(net: BadNet, layer: str, channels: np.ndarray):
    """A copy of the network with ``channels`` of ``layer`` zeroed (kernel and bias)."""
    model = net.copy_model()
    zero_channels(model, layer, channels)
    return model


def zeroer(layer: str, channels):
    """For :func:`fine_tune`: zero ``channels`` of ``layer`` again after each step."""
    return lambda model: zero_channels(model, layer, channels)


def zero_channels(model, layer: str, channels) -> None:
    """Zero the given output channels of a convolutional layer (kernel and bias), in place."""
    target = model.get_layer(layer)
    weights = target.get_weights()
    channels = np.asarray(channels, dtype=int)
    weights[0][..., channels] = 0.0
    if len(weights) > 1:
        weights[1][channels] = 0.0
    target.set_weights(weights)
