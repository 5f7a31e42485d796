"""Fine-pruning (Liu, Dolan-Gavitt and Garg, RAID 2018): prune the channels of a convolutional
layer that stay dormant on clean faces, save the pruned model B' at each requested drop in clean
accuracy, fine-tune it on clean faces when asked (pruned channels kept at zero), and build a
repaired network G from each (B and B' disagree -> N). The sweep itself is :mod:`engine.repairs.pruning`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.io.datasets import ImageSet, PoisonedSet
from engine.settings import Setting
from engine.io.files import staged_folder
from engine.io.models import BadNet, load_badnet, sha256_file
from engine.progress import Job, Progress
from engine.repairs.pruning import DEFAULT_DROPS, check_layer, conv_layers, default_layer, pruned_model, sweep, zeroer
from engine.repairs import Curve, Plot, Repair, RepairOutcome, register
from engine.repairs.bundle import RepairedNet, save_model
from engine.training import fine_tune
from engine.scoring import predict

SWEEP_HEADER = ("step", "channel", "fraction_pruned", "clean_accuracy")


@dataclass
class FinePruneResult:
    """What a fine-pruning run made: the sweep, the networks saved at each drop, the chosen G."""
    sweep: object  # PruningSweep
    saved: list[dict]  # one entry per requested drop that was reached
    chosen: RepairedNet | None
    notes: list[str]
    bundles: list[RepairedNet] = field(default_factory=list)


def fine_prune(net: BadNet, clean: ImageSet, poisoned: list[PoisonedSet], outdir: str | Path,
               layer: str | None = None, drops: tuple[float, ...] = DEFAULT_DROPS, fine_tune_epochs: int = 0,
               scaling: str = "1/255") -> Job[FinePruneResult]:
    """Sweep, save B' at each accuracy drop (fine-tuned when asked), and build G bundles in ``outdir``.

    Everything is written into a staging folder beside ``outdir`` that replaces it only when the
    run succeeds; ``outdir`` may be new, empty, or an earlier run's results. The checks of the
    request are :func:`engine.repairs.repair_job`'s."""
    outdir = Path(outdir)
    layer = layer or default_layer(net)
    with staged_folder(outdir, FinePruning.is_output, "fine-pruning results") as stage:
        result = yield from _fine_prune_into(stage, net, clean, poisoned, layer, drops, fine_tune_epochs, scaling)
    _moved(result, stage, outdir)
    return result


def _moved(result: FinePruneResult, old: Path, new: Path) -> None:
    """Point the in-memory paths of a finished run at the folder it was moved to."""
    def fix(p: str) -> str:
        q = Path(p)
        return str(new / q.name) if q.parent == old else p

    for entry in result.saved:
        entry["path"] = fix(entry["path"])
        if "fine_tuned" in entry:
            entry["fine_tuned"]["path"] = fix(entry["fine_tuned"]["path"])
    for g in result.bundles:
        g.repaired_path = fix(g.repaired_path)


def _fine_prune_into(outdir: Path, net, clean, poisoned, layer, drops, fine_tune_epochs, scaling) -> Job[FinePruneResult]:
    result = yield from sweep(net, clean, poisoned, layer, scaling)
    result.write_csv(outdir / "sweep.csv")
    notes = [f"swept {result.channels} channels of {layer}; clean accuracy {result.clean_accuracy[0]:.4f} at step 0"]

    saved = []
    for drop in drops:
        step = result.step_for_drop(drop)
        if step is None:
            notes.append(f"clean accuracy never dropped by {drop:g}%: no model saved for it")
            continue
        channels = result.order[:step]
        model = pruned_model(net, layer, channels)
        entry = {
            "drop": drop,
            "step": step,
            "fraction_pruned": result.fraction(step),
            "channels": [int(c) for c in channels],
            "clean_accuracy": float(result.clean_accuracy[step]),
            "attack_success": {k: float(v[step]) for k, v in result.attack_success.items()},
            "path": str(save_model(model, outdir / f"pruned_drop{drop:g}.h5")),
        }
        if fine_tune_epochs > 0:
            report = yield from fine_tune(model, zeroer(layer, channels), clean, scaling, fine_tune_epochs,
                                          from_logits=not net.outputs_probabilities)
            tuned_path = save_model(model, outdir / f"pruned_drop{drop:g}_finetuned.h5")
            tuned = load_badnet(tuned_path)
            success = {}
            for p in poisoned:
                preds = yield from predict(tuned, p.images, scaling)
                success[p.name] = float(np.mean(preds.labels == p.target))
            entry["fine_tuned"] = {"path": str(tuned_path), "attack_success": success, **report}
        saved.append(entry)
        yield Progress(len(saved), len(drops), "saving pruned models")

    bundles = []
    for entry in saved:
        variant = entry.get("fine_tuned", entry)
        choice = {
            "method": "fine-pruning",
            "layer": layer,
            "drop": entry["drop"],
            "step": entry["step"],
            "fraction_pruned": entry["fraction_pruned"],
            "fine_tuned": "fine_tuned" in entry,
            "attack_success": variant["attack_success"],
        }
        # B' is only named and fingerprinted here; it is loaded when G first judges.
        g = RepairedNet(str(net.path), net.sha256, variant["path"], sha256_file(variant["path"]), scaling,
                        net.num_classes, choice)
        g.save(outdir / f"repaired_drop{entry['drop']:g}.json")
        bundles.append(g)
    chosen = _choose(bundles)
    if chosen is not None:
        chosen.choice["reason"] = (
            "lowest attack success of B' on the poisoned sets, then the smallest accuracy drop"
            if poisoned else "no poisoned set given: the smallest accuracy drop"
        )
        chosen.save(outdir / "repaired.json")
        notes.append(f"repaired.json uses the B' saved at a {chosen.choice['drop']:g}% drop ({chosen.choice['reason']})")
    return FinePruneResult(result, saved, chosen, notes, bundles)


def describe_saved(entry: dict) -> str:
    """One line for a saved B': where it was cut, what it keeps, what fine-tuning made of it."""
    line = (f"drop {entry['drop']:g}%: {entry['step']} channels pruned ({100 * entry['fraction_pruned']:.0f}%), "
            f"clean accuracy {100 * entry['clean_accuracy']:.1f}%"
            + "".join(f", attack success {100 * v:.1f}%" for v in entry["attack_success"].values()))
    tuned = entry.get("fine_tuned")
    if tuned:
        line += (f"; fine-tuned {tuned['epochs']} epochs: held-out accuracy {100 * tuned['holdout_accuracy_after']:.1f}%"
                 + "".join(f", attack success {100 * v:.1f}%" for v in tuned["attack_success"].values()))
    return line


def _choose(bundles: list[RepairedNet]) -> RepairedNet | None:
    if not bundles:
        return None

    def key(g: RepairedNet):
        success = g.choice["attack_success"]
        return (np.mean(list(success.values())) if success else 0.0, g.choice["drop"])

    return min(bundles, key=key)




@register
class FinePruning(Repair):
    """Fine-pruning (Liu et al., RAID 2018) as a registered repair."""
    name = "fine-pruning"
    title = "Fine-pruning"
    summary = ("Prune the channels of one convolutional layer that stay dormant on clean faces, save the "
               "pruned model at each drop in clean accuracy (fine-tuned on clean faces when asked), and "
               "answer N where it and the BadNet disagree.")
    settings = (
        Setting("layer", "layer", str, "", 0, 0, "convolutional layer to prune (empty: conv_3 for DeepID, else "
                "the last one)"),
        Setting("drops", "accuracy drops", tuple, tuple(d / 100 for d in DEFAULT_DROPS), 0.0, 1.0,
                "save a pruned model at each of these drops in clean accuracy", low_open=True, rate=True),
        Setting("fine_tune_epochs", "fine-tuning epochs", int, 2, 0, 1000,
                "fine-tune each pruned model on clean faces, pruned channels kept at zero (0: off)"),
    )
    files = r"sweep\.csv|pruned_drop[0-9.]+(_finetuned)?\.h5|repaired(_drop[0-9.]+)?\.json"
    marker = "sweep.csv"
    marker_header = SWEEP_HEADER
    order = 10

    def check(self, net: BadNet) -> None:
        check_layer(net, self.layer or default_layer(net))

    @classmethod
    def choices_for(cls, setting: str, net: BadNet) -> tuple[list[str], str] | None:
        return (conv_layers(net), default_layer(net)) if setting == "layer" else None

    @classmethod
    def describe(cls, choice: dict) -> str:
        return (f"{choice.get('layer', '?')} pruned to a {choice.get('drop', '?')}% accuracy drop"
                + (", fine-tuned" if choice.get("fine_tuned") else ""))

    @classmethod
    def bundle_title(cls, choice: dict) -> str:
        return "G (fine-pruning)"

    def run(self, net, clean, poisoned, outdir, scaling, scan=None) -> Job[RepairOutcome]:
        result = yield from fine_prune(net, clean, poisoned, outdir, self.layer or None,
                                       tuple(round(100 * d, 6) for d in self.drops),
                                       self.fine_tune_epochs, scaling)
        sw = result.sweep
        x = np.arange(sw.channels + 1) / sw.channels
        plot = Plot(f"pruning {sw.layer}, lowest mean clean activation first", "share of channels pruned",
                    "rate", [Curve("clean accuracy", x, sw.clean_accuracy)]
                    + [Curve(f"attack success: {n}", x, v, "attack") for n, v in sw.attack_success.items()],
                    [(e["fraction_pruned"], e["clean_accuracy"], f"-{e['drop']:g}%") for e in result.saved], (0, 1))
        head = (f"{sw.layer}: {sw.channels} channels; clean accuracy {100 * sw.clean_accuracy[0]:.1f}% before pruning"
                + "".join(f", attack success {100 * v[0]:.1f}% ({k})" for k, v in sw.attack_success.items()))
        lines = [head] + [describe_saved(e) for e in result.saved] + result.notes[1:]
        return RepairOutcome(self.name, Path(outdir), result.chosen, lines, [plot], result)
