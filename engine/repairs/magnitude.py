"""Magnitude pruning, the report's first try: in every layer with a kernel (convolutions and dense
layers), zero the given share of its weights with the smallest magnitude; biases stay. Optionally
fine-tune on clean data with the zeroed weights held at zero.

The report reached 70% sparsity gradually with the Keras pruning API while training (batch 10,
10 epochs) and saw poor accuracy. Here the weights are cut at once, per layer, and a sweep over
sparsity shows what each share costs in clean accuracy and what it does to each trigger's attack
success, as the channel sweep of fine-pruning does. The pruned (fine-tuned) copy becomes B' of a
repaired network G (B and B' disagree -> N), like fine-pruning's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.io.datasets import ImageSet, PoisonedSet
from engine.settings import Setting
from engine.io.files import staged_folder, write_csv
from engine.io.models import BadNet, load_badnet
from engine.progress import Job, Progress
from engine.repairs import Curve, Plot, Repair, RepairOutcome, register
from engine.repairs.bundle import RepairedNet, moved, save_model, write_bundle
from engine.training import fine_tune
from engine.scoring import model_accuracy, predict

DEFAULT_SPARSITY = 0.7
SWEEP_SPARSITIES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
CSV_HEADER = ["sparsity", "clean_accuracy"]


@dataclass
class MagnitudeSweep:
    """Clean accuracy and attack success at each sparsity (the share of every layer's weights zeroed)."""

    sparsity: np.ndarray
    clean_accuracy: np.ndarray
    attack_success: dict[str, np.ndarray] = field(default_factory=dict)

    def header(self) -> list[str]:
        return CSV_HEADER + [f"attack_success[{n}]" for n in self.attack_success]

    def rows(self) -> list[list]:
        return [[f"{s:.4f}", f"{a:.6f}"] + [f"{v[i]:.6f}" for v in self.attack_success.values()]
                for i, (s, a) in enumerate(zip(self.sparsity, self.clean_accuracy))]

    def write_csv(self, path: str | Path) -> None:
        write_csv(path, self.header(), self.rows())


@dataclass
class MagnitudeResult:
    """What a magnitude-pruning run made: the sweep, the chosen sparsity and its report."""
    sweep: MagnitudeSweep
    sparsity: float
    report: dict
    bundle: RepairedNet

    def lines(self) -> list[str]:
        r = self.report
        line = (f"magnitude pruning to {100 * r['sparsity']:.0f}% of every layer's weights: clean accuracy "
                f"{100 * r['clean_accuracy_before']:.1f}% -> {100 * r['clean_accuracy']:.1f}%"
                + "".join(f", attack success {100 * v:.1f}% ({k})" for k, v in r["attack_success_pruned"].items()))
        out = [line]
        tuned = r.get("fine_tuned")
        if tuned:
            out.append(f"fine-tuned {tuned['epochs']} epochs (zeroed weights kept at zero): held-out accuracy "
                       f"{100 * tuned['holdout_accuracy_before']:.1f}% -> {100 * tuned['holdout_accuracy_after']:.1f}%"
                       + "".join(f", attack success {100 * v:.1f}% ({k})" for k, v in r["attack_success"].items()))
        return out


def kernel_layers(model) -> list:
    """Layers with a kernel to prune: convolutions and dense layers."""
    import keras

    kinds = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Dense)
    return [layer for layer in model.layers if isinstance(layer, kinds) and layer.get_weights()]


def keep_masks(kernels: dict[str, np.ndarray], sparsity: float) -> dict[str, np.ndarray]:
    """Per layer, True for the weights kept: all but the ``sparsity`` share with the smallest magnitude."""
    masks = {}
    for name, kernel in kernels.items():
        flat = np.abs(kernel).ravel()
        keep = np.ones(flat.size, bool)
        keep[np.argsort(flat, kind="stable")[:int(np.floor(sparsity * flat.size))]] = False
        masks[name] = keep.reshape(kernel.shape)
    return masks


def apply_masks(model, masks: dict[str, np.ndarray]) -> None:
    """Zero the pruned weights of each masked layer."""
    for name, keep in masks.items():
        layer = model.get_layer(name)
        weights = layer.get_weights()
        weights[0] = np.where(keep, weights[0], 0.0).astype(weights[0].dtype)
        layer.set_weights(weights)


def kernels_of(model) -> dict[str, np.ndarray]:
    """Each prunable layer's kernel, by layer name."""
    return {layer.name: layer.get_weights()[0] for layer in kernel_layers(model)}


def pruned_copy(net: BadNet, sparsity: float):
    """A copy of the BadNet with ``sparsity`` of each kernel layer's weights zeroed, and its masks."""
    model = net.copy_model()
    masks = keep_masks(kernels_of(model), sparsity)
    apply_masks(model, masks)
    return model, masks


def sweep(net: BadNet, clean: ImageSet, poisoned: list[PoisonedSet], scaling: str,
          sparsities=SWEEP_SPARSITIES) -> Job[MagnitudeSweep]:
    """Clean accuracy and every poisoned set's attack success at each sparsity."""
    labels = clean.require_labels("a magnitude-pruning sweep")
    model = net.copy_model()
    original = model.get_weights()
    kernels = kernels_of(model)
    sets = [(clean.images, labels)] + [(p.images.images, np.full(len(p.images), p.target)) for p in poisoned]
    sparsities = np.asarray(sorted({float(s) for s in sparsities}))
    accuracy = np.empty(len(sparsities))
    success = {p.name: np.empty(len(sparsities)) for p in poisoned}
    for i, s in enumerate(sparsities):
        model.set_weights(original)
        apply_masks(model, keep_masks(kernels, s))
        rates = [model_accuracy(model, images, keys, scaling) for images, keys in sets]
        accuracy[i] = rates[0]
        for p, r in zip(poisoned, rates[1:]):
            success[p.name][i] = r
        yield Progress(i + 1, len(sparsities), f"sweeping sparsity ({100 * s:.0f}%)")
    return MagnitudeSweep(sparsities, accuracy, success)


def magnitude_prune(net: BadNet, clean: ImageSet, poisoned: list[PoisonedSet], outdir: str | Path, scaling: str,
                    sparsity: float = DEFAULT_SPARSITY, fine_tune_epochs: int = 0,
                    sparsities=SWEEP_SPARSITIES) -> Job[MagnitudeResult]:
    """Sweep, prune at ``sparsity``, fine-tune when asked, and write the sweep CSV, the pruned
    model(s) and a G bundle into ``outdir`` (atomically, as a whole)."""
    result = yield from sweep(net, clean, poisoned, scaling, tuple(sparsities) + (sparsity,))
    step = int(np.flatnonzero(np.isclose(result.sparsity, sparsity))[0])
    model, masks = pruned_copy(net, sparsity)
    report = {
        "method": "magnitude",
        "sparsity": sparsity,
        "clean_accuracy_before": float(result.clean_accuracy[0]),
        "clean_accuracy": float(result.clean_accuracy[step]),
        "attack_success_pruned": {k: float(v[step]) for k, v in result.attack_success.items()},
        "attack_success": {k: float(v[step]) for k, v in result.attack_success.items()},
        "layers": sorted(masks),
        "clean_digest": clean.digest,
    }
    if fine_tune_epochs > 0:
        tuned = yield from fine_tune(model, lambda m: apply_masks(m, masks), clean, scaling, fine_tune_epochs,
                                     from_logits=not net.outputs_probabilities)
        report["fine_tuned"] = tuned
    name = f"magnitude_s{sparsity:g}{'_finetuned' if fine_tune_epochs > 0 else ''}.h5"
    outdir = Path(outdir)
    with staged_folder(outdir, Magnitude.is_output, "magnitude-pruning results") as stage:
        result.write_csv(stage / "magnitude_sweep.csv")
        staged = save_model(model, stage / name)
        if fine_tune_epochs > 0:
            pruned = load_badnet(staged)
            for p in poisoned:
                preds = yield from predict(pruned, p.images, scaling)
                report["attack_success"][p.name] = float(np.mean(preds.labels == p.target))
        bundle = write_bundle(stage, net, staged, report, scaling)
    return MagnitudeResult(result, sparsity, report, moved(bundle, outdir))


@register
class Magnitude(Repair):
    """Magnitude pruning as a registered repair."""
    name = "magnitude"
    title = "Magnitude pruning"
    summary = ("Zero the given share of smallest-magnitude weights in every convolution and dense layer "
               "(fine-tuned on clean faces when asked, zeros kept); N where it and the BadNet disagree.")
    settings = (
        Setting("sparsity", "sparsity", float, DEFAULT_SPARSITY, 0.0, 1.0,
                "share of each layer's weights to zero", low_open=True, high_open=True, step=0.05, rate=True),
        Setting("fine_tune_epochs", "fine-tuning epochs", int, 0, 0, 1000,
                "fine-tune the pruned model on clean faces, zeroed weights kept at zero (0: off)"),
    )
    files = r"magnitude_sweep\.csv|magnitude_s[0-9.]+(_finetuned)?\.h5|repaired\.json"
    marker = "magnitude_sweep.csv"
    marker_header = ("sparsity", "clean_accuracy")
    order = 20

    @classmethod
    def describe(cls, choice: dict) -> str:
        return f"{100 * float(choice.get('sparsity', 0)):.0f}% of each layer's weights zeroed" + (
            f", fine-tuned {choice['fine_tuned']['epochs']} epochs" if isinstance(choice.get("fine_tuned"), dict) else "")

    @classmethod
    def bundle_title(cls, choice: dict) -> str:
        return "G (magnitude pruning)"

    def run(self, net, clean, poisoned, outdir, scaling, scan=None) -> Job[RepairOutcome]:
        result = yield from magnitude_prune(net, clean, poisoned, outdir, scaling, self.sparsity, self.fine_tune_epochs)
        sw = result.sweep
        plot = Plot("magnitude pruning, all layers", "share of every layer's weights zeroed (smallest magnitude first)",
                    "rate", [Curve("clean accuracy", sw.sparsity, sw.clean_accuracy)]
                    + [Curve(f"attack success: {n}", sw.sparsity, v, "attack") for n, v in sw.attack_success.items()],
                    [(result.sparsity, result.report["clean_accuracy"], f"{100 * result.sparsity:.0f}%")], (0, 1))
        table = ["sparsity  clean acc" + "".join(f"  ASR {name}" for name in sw.attack_success)]
        for i, sp in enumerate(sw.sparsity):
            table.append(f"{100 * sp:7.0f}%  {100 * sw.clean_accuracy[i]:8.1f}%"
                         + "".join(f"  {100 * v[i]:{len(name) + 3}.1f}%" for name, v in sw.attack_success.items()))
        return RepairOutcome(self.name, Path(outdir), result.bundle, result.lines(), [plot], result, table=table)
