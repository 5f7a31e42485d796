"""BadNet Inspector: is this image classifier backdoored, and why?

``python main.py`` starts the app; ``python main.py <command>`` does the same work
headless. Every default points at the bundled demo BadNet and its data.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import engine  # noqa: F401  (quiet TensorFlow before anything imports it)
from engine.demo import DEMO_CLEAN_TEST, DEMO_CLEAN_VALIDATION, DEMO_IMAGES, DEMO_MODEL, DEMO_POISONED
from engine.errors import InputError
from engine.progress import Job, Progress, run


# --- helpers shared by the commands ----------------------------------------------------


class ProgressBar:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, stream=sys.stderr, width: int = 30):
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self._last = 0.0
        self._stage = None

    def __call__(self, step: Progress) -> None:
        now = time.monotonic()
        final = step.done >= step.total
        if not self.tty:
            if step.stage != self._stage:
                print(f"{step.stage}…", file=self.stream, flush=True)
                self._stage = step.stage
            return
        if not final and now - self._last < 0.1 and step.stage == self._stage:
            return
        self._last, self._stage = now, step.stage
        filled = int(self.width * step.fraction)
        bar = "#" * filled + "-" * (self.width - filled)
        end = "\n" if final else ""
        self.stream.write(f"\r{step.stage:<24} [{bar}] {100 * step.fraction:5.1f}% {step.done}/{step.total}{end}")
        self.stream.flush()


def drive(job: Job, quiet: bool = False):
    return run(job, None if quiet else ProgressBar())


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def load_model(path: Path, trust: bool):
    from engine.model_io import load_badnet

    note(f"loading model {path}…")
    net = load_badnet(path, trust=trust)
    for line in net.notes:
        note(f"note: {path}: {line}")
    return net


def read_images(paths: list[Path], net):
    from engine import data_io

    images = data_io.read_many(paths, size=net.input_shape[:2])
    for w in images.warnings:
        note(f"warning: {w}")
    return images


def choose_scaling(net, scaling: str, labelled):
    from engine.scoring import resolve_scaling

    chosen, reason = drive(resolve_scaling(net, scaling, labelled))
    if scaling == "auto":
        note(f"input scaling: {reason}")
    return chosen


def load_defense(args):
    """The calibration(s) or repaired network named on the command line, and the BadNet it
    defends (``--model`` may point at the BadNet if it moved; its fingerprint must match).
    Several ``--calibration`` files are combined: an image is flagged when any flags it."""
    from engine.calibration import load_defenses
    from engine.repair import RepairedNet

    source = args.repaired or args.calibration[0]
    defense = RepairedNet.load(args.repaired) if args.repaired else load_defenses(args.calibration)
    net = load_model(Path(args.model) if args.model else Path(defense.model_path), args.trust_model)
    defense.check_model(net)
    if args.repaired:
        note(f"loading repaired model {defense.repaired_path}…")
        defense.load_repaired(trust=args.trust_model)
    if args.scale not in (None, defense.scaling):
        raise InputError(source, f"was made with input scaling {defense.scaling}, not {args.scale}")
    return defense, net


def load_model_and_sets(args):
    """``--model``, ``--clean`` and every ``--poisoned PATH:TARGET`` (the demo's sunglasses set
    when the model is the demo and none is given), sized for the model, targets checked."""
    from engine import data_io
    from engine.data_io import PoisonedSet, parse_poisoned

    specs = [parse_poisoned(s) for s in args.poisoned or []]
    if args.model is None and not specs:
        specs = [(DEMO_POISONED, 0)]
    net = load_model(Path(args.model or DEMO_MODEL), args.trust_model)
    size = net.input_shape[:2]
    clean = data_io.read(args.clean, size=size)
    poisoned = [PoisonedSet(data_io.read(path, size=size), target) for path, target in specs]
    for images in [clean] + [p.images for p in poisoned]:
        for w in images.warnings:
            note(f"warning: {w}")
    for p in poisoned:
        if not 0 <= p.target < net.num_classes:
            raise InputError(p.images.source, f"target {p.target} is not a class of this model")
    return net, clean, poisoned


def make_detectors(names: list[str], args):
    """Detectors by name, with the STRIP options from the command line."""
    from engine.detectors import make_detector

    strip_options = {k: v for k, v in (("blends", args.blends), ("alpha", args.alpha)) if v is not None}
    if strip_options and "strip" not in names:
        raise InputError(None, "--blends and --alpha are STRIP options; add --detector strip")
    return [make_detector(n, strip_options if n == "strip" else None) for n in names]


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


# --- commands --------------------------------------------------------------------------


def cmd_app(args) -> int:
    """The window, on the demo unless the command line names a model and data."""
    from gui.app import run_app

    return run_app(
        model=getattr(args, "model", None),
        clean=getattr(args, "clean", None),
        poisoned=getattr(args, "poisoned", None),
        calibration=getattr(args, "calibration", None),
        screenshot=getattr(args, "screenshot", None),
        trust=getattr(args, "trust_model", False),
    )


def cmd_info(args) -> int:
    net = load_model(Path(args.model), args.trust_model)
    report = net.report()
    if args.json:
        print(json.dumps(report))
        return 0
    width = max(len(k) for k in report)
    for key, value in report.items():
        if key == "layers":
            value = ", ".join(value)
        elif key == "input_shape":
            value = " x ".join(str(v) for v in value)
        print(f"{key.replace('_', ' '):<{width}}  {value}")
    return 0


def cmd_predict(args) -> int:
    from engine.scoring import predict

    net = load_model(Path(args.model), args.trust_model)
    images = read_images(args.paths, net)
    scaling = choose_scaling(net, args.scale, images if args.scale == "auto" else None)
    preds = drive(predict(net, images, scaling), args.json)
    for name, label, conf in zip(images.names, preds.labels, preds.confidences):
        if args.json:
            print(json.dumps({"path": name, "label": int(label), "confidence": float(conf)}))
        else:
            print(f"{name}\t{int(label)}\t{float(conf):.6f}")
    return 0


def cmd_calibrate(args) -> int:
    from engine import data_io
    from engine.calibration import calibrate, check_options, check_output

    check_options(args.method, args.frr)
    (detector,) = make_detectors([args.detector], args)
    out = check_output(args.output)
    net = load_model(Path(args.model), args.trust_model)
    clean = data_io.read(args.clean, size=net.input_shape[:2])
    for w in clean.warnings:
        note(f"warning: {w}")
    scaling = choose_scaling(net, args.scale, clean)
    cal = drive(calibrate(net, clean, scaling, detector, args.method, args.frr, args.min_samples))
    cal.save(out)
    own = sum(1 for c in range(cal.num_classes) if not cal.pooled[c])
    print(
        f"calibrated {detector.title} detector on {len(clean)} clean images ({args.method}"
        + (f", target false rejection {args.frr:g}" if args.method == "quantile" else "")
        + f"): {own} of {cal.num_classes} classes have their own threshold, "
        f"the rest use the pooled threshold {cal.pooled_threshold:.6f}; saved {out}"
    )
    return 0


def cmd_score(args) -> int:
    from engine import data_io, metrics
    from engine.scoring import predict

    if args.calibration or args.repaired:
        cal, net = load_defense(args)
        scaling = cal.scaling
    else:
        cal, net = None, load_model(Path(args.model or DEMO_MODEL), args.trust_model)
    data = data_io.read(args.data, size=net.input_shape[:2])
    for w in data.warnings:
        note(f"warning: {w}")
    if cal is None:
        scaling = choose_scaling(net, args.scale or "1/255", data)
    if args.target is None and data.labels is None and cal is None:
        raise InputError(args.data, "has no labels: give --target T for a poisoned set, or labelled clean data")
    if args.target is not None and not 0 <= args.target < net.num_classes:
        raise InputError(None, f"--target {args.target} is not a class of this model (0..{net.num_classes - 1})")
    preds = drive(predict(net, data, scaling), args.json)
    verdicts = drive(cal.judge(net, data), True) if cal else None
    result = metrics.report(preds, data.labels, args.target, verdicts)
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    names = {
        "accuracy": "clean accuracy",
        "attack_success_rate": "attack success rate",
        "detection_rate": "detection rate",
        "frr": "false-rejection rate",
        "defended_accuracy": "defended accuracy",
        "defended_attack_success_rate": "defended attack success",
    }
    print(f"{data.source}: {result.n} images")
    for key, value in result.to_dict().items():
        if key in names:
            print(f"  {names[key]:<26} {fmt(value)}")
    return 0


def cmd_eval(args) -> int:
    cal, net = load_defense(args)
    images = read_images(args.paths, net)
    verdicts = drive(cal.judge(net, images))
    for name, label in zip(verdicts.names, verdicts.labels):
        print(f"{name}\t{int(label)}")
    return 0


def cmd_compare(args) -> int:
    from engine.compare import compare
    from engine.export import write_csv

    names = [n.strip() for n in args.detectors.split(",") if n.strip()]
    detectors = make_detectors(names, args)
    frrs = _parse_floats(args.frr, "--frr", scale=0.01)
    if args.model is not None and not args.poisoned:
        raise InputError(None, "give at least one --poisoned PATH:TARGET to compare detectors on")
    net, clean, poisoned = load_model_and_sets(args)
    scaling = choose_scaling(net, args.scale, clean if clean.labels is not None else None)
    results = drive(compare(net, clean, poisoned, detectors, scaling, frrs), args.json)
    if args.roc_csv:
        rows = [[r.detector, r.poisoned, f"{f:.6f}", f"{d:.6f}"]
                for r in results for f, d in zip(r.roc.frr, r.roc.detection)]
        write_csv(args.roc_csv, ["detector", "poisoned_set", "false_rejection", "detection"], rows)
        note(f"wrote ROC curves to {args.roc_csv}")
    if args.json:
        print(json.dumps({"clean": clean.source, "n_clean": len(clean), "results": [r.to_dict() for r in results]}))
        return 0
    print(f"clean: {clean.source} ({len(clean)} images); thresholds pooled over classes, from the clean scores")
    head = "".join(f"  detection at {100 * f:g}% FRR" for f in frrs)
    width = max(len(r.title) for r in results) + 2
    for name in dict.fromkeys(r.poisoned for r in results):
        rows = [r for r in results if r.poisoned == name]
        print(f"\n{name} ({rows[0].n_poisoned} images)")
        print(f"  {'detector':<{width}}{'AUC':>6}{head}")
        for r in rows:
            cells = "".join(f"  {fmt(p.detection):>{len(f'detection at {100 * p.target_frr:g}% FRR')}}" for p in r.points)
            print(f"  {r.title:<{width}}{r.auc:6.3f}{cells}")
    return 0


def _parse_floats(text: str, option: str, scale: float = 1.0) -> tuple[float, ...]:
    try:
        values = tuple(float(v) * scale for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(None, f"{option} {text!r}: give numbers separated by commas") from None
    if not values:
        raise InputError(None, f"{option} is empty")
    return values


def cmd_prune(args) -> int:
    from engine.repair import describe_saved, fine_prune

    drops = _parse_drops(args.drops)
    net, clean, poisoned = load_model_and_sets(args)
    scaling = choose_scaling(net, args.scale, clean)
    result = drive(fine_prune(net, clean, poisoned, args.output, args.layer, drops, args.fine_tune_epochs, scaling))
    sw = result.sweep
    print(f"{sw.layer}: {sw.channels} channels; clean accuracy {fmt(sw.clean_accuracy[0])} before pruning"
          + "".join(f", attack success {fmt(v[0])} ({k})" for k, v in sw.attack_success.items()))
    for entry in result.saved:
        print(describe_saved(entry))
    for line in result.notes[1:]:
        print(line)
    print(f"wrote {Path(args.output) / 'sweep.csv'}, the pruned models and the repaired-network bundles")
    return 0


def _parse_drops(text: str) -> tuple[float, ...]:
    try:
        drops = tuple(float(d) for d in text.split(",") if d.strip())
    except ValueError:
        raise InputError(None, f"--drops {text!r}: expected percentages like 2,4,10") from None
    if not drops or any(not 0 < d < 100 for d in drops):
        raise InputError(None, f"--drops {text!r}: each drop must be between 0 and 100 (percent)")
    return drops


# --- parser ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="badnet-inspector",
        description="Inspect image classifiers for backdoors (BadNets). Without a command, starts the app.",
    )
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    parser.set_defaults(func=cmd_app)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show a traceback on errors")
        p.add_argument("--trust-model", action="store_true",
                       help="allow a model file to run its own code (Lambda layers, custom objects)")
        p.set_defaults(func=func)
        return p

    def strip_options(p):
        p.add_argument("--blends", type=int, metavar="N",
                       help="STRIP: clean images each input is blended with (default 32)")
        p.add_argument("--alpha", type=float,
                       help="STRIP: weight of the clean image in a blend, in (0, 1) (default 0.5)")

    def scale_option(p, default):
        p.add_argument("--scale", choices=("1/255", "raw", "auto"), default=default,
                       help="input scaling: 1/255 (CSAW 2020), raw 0..255 (CSAW lab), or auto "
                       "(pick the one with higher clean accuracy on labelled data)" +
                       (f"; default {default}" if default else ""))

    p = command("gui", cmd_app, "open the window (the same as no command), optionally on given files")
    p.add_argument("--model", help="a BadNet (default: the bundled demo, with its data)")
    p.add_argument("--clean", help="clean data")
    p.add_argument("--poisoned", action="append", metavar="PATH:TARGET", help="a poisoned set and its target (repeatable)")
    p.add_argument("--calibration", help="a calibration JSON to load")
    p.add_argument("--screenshot", metavar="OUT.png",
                   help="load, calibrate, save the whole window as a PNG and exit (works headless)")

    p = command("info", cmd_info, "show a model's format, input shape, classes, layers and fingerprint")
    p.add_argument("model", nargs="?", default=str(DEMO_MODEL), metavar="MODEL")
    p.add_argument("--json", action="store_true")

    p = command("predict", cmd_predict, "top class and confidence for images, folders or HDF5 sets")
    p.add_argument("--model", default=str(DEMO_MODEL))
    scale_option(p, "1/255")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("paths", nargs="*", type=Path, default=[DEMO_IMAGES], metavar="IMAGE_OR_DIR")

    p = command("calibrate", cmd_calibrate, "learn per-class thresholds on clean data")
    p.add_argument("--model", default=str(DEMO_MODEL))
    p.add_argument("--clean", default=str(DEMO_CLEAN_VALIDATION), help="clean data (HDF5, .npz, folder)")
    p.add_argument("--method", choices=("min", "quantile"), default="quantile")
    p.add_argument("--frr", type=float, default=0.01, help="target false-rejection rate for quantile (default 0.01)")
    p.add_argument("--min-samples", type=int,
                   help="classes with fewer clean images use the pooled threshold "
                   "(default: 1/frr, at least 5; 100 at 1%%)")
    p.add_argument("--detector", choices=("confidence", "strip"), default="confidence",
                   help="top-1 confidence (default) or STRIP (entropy of blends with clean images)")
    strip_options(p)
    scale_option(p, "1/255")
    p.add_argument("-o", "--output", required=True, metavar="CALIBRATION.json")

    p = command("score", cmd_score, "accuracy, attack success and detection figures on a data set")
    p.add_argument("--model", help="the model (default: the calibration's, or the demo BadNet)")
    defense = p.add_mutually_exclusive_group()
    defense.add_argument("--calibration", action="append", metavar="CAL.json",
                         help="a calibration JSON written by 'calibrate'; repeat to flag when any detector flags")
    defense.add_argument("--repaired", help="a repaired-network bundle written by 'prune' (repaired.json)")
    p.add_argument("--data", default=str(DEMO_CLEAN_TEST))
    p.add_argument("--target", type=int, help="the attack's target class: the data is poisoned")
    scale_option(p, None)
    p.add_argument("--json", action="store_true")

    p = command("eval", cmd_eval, "CSAW verdicts: one line per image, <path>\\t<label>, label N = poisoned")
    defense = p.add_mutually_exclusive_group(required=True)
    defense.add_argument("--calibration", action="append", metavar="CAL.json",
                         help="a calibration JSON written by 'calibrate'; repeat to flag when any detector flags")
    defense.add_argument("--repaired", help="a repaired-network bundle written by 'prune' (repaired.json)")
    p.add_argument("--model", help="the model, if it moved since calibration (its fingerprint must match)")
    p.add_argument("paths", nargs="*", type=Path, default=[DEMO_IMAGES], metavar="IMAGE_OR_DIR")
    p.set_defaults(scale=None)

    p = command("compare", cmd_compare, "compare detectors on clean data against poisoned sets: ROC AUC and "
                "detection at fixed false-rejection rates")
    p.add_argument("--model", help="the BadNet (default: the demo, with its sunglasses set)")
    p.add_argument("--clean", default=str(DEMO_CLEAN_VALIDATION), help="clean data")
    p.add_argument("--poisoned", action="append", metavar="PATH:TARGET", help="a poisoned set and its target (repeatable)")
    p.add_argument("--detectors", default="confidence,strip", help="comma-separated (default confidence,strip)")
    strip_options(p)
    p.add_argument("--frr", default="1,5", help="false-rejection rates in %% to report detection at (default 1,5)")
    p.add_argument("--roc-csv", metavar="OUT.csv", help="also write every ROC curve as CSV")
    scale_option(p, "1/255")
    p.add_argument("--json", action="store_true")

    p = command("prune", cmd_prune, "fine-pruning: prune a conv layer's dormant channels, save pruned models "
                "at accuracy drops, fine-tune them, and build repaired networks G")
    p.add_argument("--model", help="the BadNet (default: the demo, with its sunglasses set)")
    p.add_argument("--clean", default=str(DEMO_CLEAN_VALIDATION), help="labelled clean data")
    p.add_argument("--poisoned", action="append", metavar="PATH:TARGET", help="a poisoned set and its target (repeatable)")
    p.add_argument("--layer", help="convolutional layer to prune (default: conv_3 for DeepID, else the last one)")
    p.add_argument("--drops", default="2,4,10", help="save pruned models at these clean-accuracy drops, in %% (default 2,4,10)")
    p.add_argument("--fine-tune-epochs", type=int, default=0, metavar="E", help="fine-tune each pruned model (default 0: off)")
    scale_option(p, "1/255")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug of ours: still one line unless asked
        print(f"error: unexpected {type(err).__name__}: {err} (run with --debug for a traceback)", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
