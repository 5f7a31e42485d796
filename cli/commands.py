"""The commands: parse, drive the engine's workflow, print."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from cli import options
from cli.parser import given_settings
from engine import workflow
from engine.io.datasets import parse_poisoned
from engine.demo import DEMO_MODEL
from engine.errors import InputError
from engine.progress import Job, Progress, run


class ProgressBar:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, stream=None, width: int = 30):
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
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


def warn_about(images) -> None:
    workflow.warn_about(images, note)


def load_model(path, trust: bool):
    return workflow.Sources(Path(path), trust=trust).open_model(note)


def choose_scaling(net, scaling: str, labelled, quiet: bool = False) -> str:
    chosen, reason = drive(workflow.choose_scaling(net, scaling, labelled), quiet)
    if scaling == "auto":
        note(f"input scaling: {reason}")
    return chosen


def load_defense(args):
    return workflow.load_defense(args.calibration, args.repaired, args.model, args.trust_model, args.scale,
                                 on_model=lambda p: note(f"loading model {p}…"), nplus1=args.nplus1)


def optional_path(value) -> Path | None:
    return None if value is None else Path(value)


def sources(args) -> workflow.Sources:
    """Where the network and its data are, from ``--model``, ``--clean`` and every ``--poisoned
    PATH:TARGET`` (the demo's when no model is named)."""
    return workflow.Sources(optional_path(args.model), optional_path(getattr(args, "clean", None)),
                            tuple(parse_poisoned(s) for s in getattr(args, "poisoned", None) or []), args.trust_model)


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
    images = workflow.read_images(args.paths, net)
    warn_about(images)
    scaling = choose_scaling(net, args.scale, images if args.scale == "auto" else None, args.json)
    preds = drive(predict(net, images, scaling), args.json)
    for name, label, conf in zip(images.names, preds.labels, preds.confidences):
        if args.json:
            print(json.dumps({"path": name, "label": int(label), "confidence": float(conf)}))
        else:
            print(f"{name}\t{int(label)}\t{float(conf):.6f}")
    return 0


def cmd_calibrate(args) -> int:
    request = workflow.CalibrateRequest.from_options(args.detector, given_settings(args), method=args.method,
                                                     frr=args.frr, min_samples=args.min_samples,
                                                     sample=args.sample, output=Path(args.output))
    cal, reason = drive(workflow.run(request, sources(args), args.scale, note))
    if args.scale == "auto":
        note(f"input scaling: {reason}")
    print(f"calibrated {cal.summary()}; saved {request.output}")
    return 0


def cmd_score(args) -> int:
    from engine.evaluation import metrics
    from engine.scoring import predict

    if args.calibration or args.repaired or args.nplus1:
        cal, net = load_defense(args)
    else:
        cal, net = None, load_model(Path(args.model or DEMO_MODEL), args.trust_model)
    if args.target is not None:
        workflow.check_target(net, args.target)
    data = workflow.read_set(args.data, net)
    warn_about(data)
    scaling = cal.scaling if cal is not None else choose_scaling(net, args.scale or "1/255", data, args.json)
    if args.target is None and data.labels is None and cal is None:
        raise InputError(args.data, "has no labels: give --target T for a poisoned set, or labelled clean data")
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
    images = workflow.read_images(args.paths, net)
    warn_about(images)
    verdicts = drive(cal.judge(net, images))
    for name, label in zip(verdicts.names, verdicts.labels):
        print(f"{name}\t{int(label)}")
    return 0


def cmd_compare(args) -> int:
    from engine.evaluation.compare import ROC_CSV_HEADER
    from engine.io.files import write_csv

    names = options.parse_detector_names(args.detectors)
    detectors = workflow.make_detectors(names, workflow.detector_params(names, given_settings(args)))
    frrs = options.parse_frrs(args.frr)
    if args.model is not None and not args.poisoned:
        raise InputError(None, "give at least one --poisoned PATH:TARGET to compare detectors on")
    if args.roc_csv:
        from engine.io.files import check_output, csv_header

        check_output(args.roc_csv, lambda p: csv_header(p) == ROC_CSV_HEADER, "ROC curve CSV")
    from engine.evaluation.compare import detector_rows
    from engine.repairs.bundle import RepairedNet

    repaired = [RepairedNet.load(b) for b in args.repaired or []]  # damaged bundles fail before any work
    net, clean, poisoned = sources(args).open_all(note)
    repaired += [RepairedNet.hand_made_nplus1(m, repaired_scaling(args), net, args.trust_model)
                 for m in args.nplus1 or []]
    for g in repaired:  # before the long comparison: a bundle for another model fails now
        g.check_model(net)
        g.load_repaired(trust=args.trust_model)
    results = drive(workflow.compare_job(net, clean, poisoned, detectors, args.scale, frrs), args.json)
    defenses = detector_rows(results, frrs[-1])
    if repaired:
        defenses = drive(workflow.repairs_job(net, clean, poisoned, repaired, args.scale), args.json) + defenses
    if args.roc_csv:
        rows = [[r.detector, r.poisoned, f"{f:.6f}", f"{d:.6f}"]
                for r in results for f, d in zip(r.roc.frr, r.roc.detection)]
        write_csv(args.roc_csv, ROC_CSV_HEADER, rows)
        note(f"wrote ROC curves to {args.roc_csv}")
    if args.json:
        print(json.dumps({"clean": clean.source, "n_clean": len(clean), "results": [r.to_dict() for r in results],
                          "defenses": [r.to_dict() for r in defenses]}))
        return 0
    print(f"clean: {clean.source} ({len(clean)} images); thresholds pooled over classes, from the clean scores")
    head = "".join(f"  detection at {100 * f:g}% FRR" for f in frrs)
    width = max(len(r.title) for r in results) + 2
    for name in dict.fromkeys(r.poisoned for r in results):
        rows = [r for r in results if r.poisoned == name]
        print(f"\n{name} ({rows[0].sent_text()}; detection counts those)")
        print(f"  {'detector':<{width}}{'AUC':>6}{head}")
        for r in rows:
            cells = "".join(f"  {fmt(p.detection):>{len(f'detection at {100 * p.target_frr:g}% FRR')}}"
                            for p in r.points)
            print(f"  {r.title:<{width}}{r.auc:6.3f}{cells}")
    print()
    print_defenses(defenses, [p.name for p in poisoned])
    return 0


def repaired_scaling(args) -> str:
    return "1/255" if args.scale in (None, "auto") else args.scale


def print_defenses(rows, sets: list[str]) -> None:
    """The defenses side by side: one line each, the same columns for detectors and repaired networks."""
    print("defenses side by side: final answer N counts as flagged; detection counts the poisoned faces the "
          "BadNet sends to the target; attack success is over all the set's faces (* = a set the network "
          "was trained on, not held out: compare on a clean set it did not see)")
    width = max(len(r.title) for r in rows) + 2
    head = "".join(f"  {name[:28]:>28}" for name in sets)
    print(f"  {'defense':<{width}}{'clean acc':>10}{'FRR':>8}{head}")
    print(f"  {'':<{width}}{'':>10}{'':>8}" + "".join(f"  {'detected / attack success':>28}" for _ in sets))
    for r in rows:
        cells = ""
        for name in sets:
            o = r.sets.get(name)
            mark = "*" if name in r.trained_on else " "
            cells += f"  {'n/a':>28}" if o is None else f"  {fmt(o.detection):>13} / {fmt(o.attack_success):>10}{mark}"
        acc = "n/a" if r.clean_accuracy is None else fmt(r.clean_accuracy)
        mark = "*" if r.trained_on_clean else " "
        print(f"  {r.title:<{width}}{acc:>10}{fmt(r.frr):>8}{mark}{cells}")
        if r.note:
            print(f"  {'':<{width}}  ({r.note})")


def cmd_scan(args) -> int:
    from engine.scan import ScanSettings

    settings = ScanSettings(margin_candidates=args.candidates, refine_steps=args.steps, alpha=args.alpha)
    request = workflow.ScanRequest(args.max_images, settings, optional_path(args.output))
    result = drive(workflow.run(request, sources(args), args.scale, note), args.json)
    if args.output is not None:
        note(f"wrote {Path(args.output) / 'scan.json'}, triggers.npz and PNGs")
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    print(f"{result.model_path}: scanned {result.num_classes} classes with {result.n_clean} clean images "
          f"({result.n_holdout} held out) in {result.seconds:.0f} s")
    print(result.summary())
    print(f"\n{'rank':>4} {'class':>6} {'margin':>8} {'mask':>7} {'index':>6} {'p':>8} {'held-out ASR':>13}")
    for row in result.rows()[: max(10, len(result.flagged))]:
        if not row["refined"]:
            break
        asr = "n/a" if row["attack_success"] is None else f"{100 * row['attack_success']:.0f}%"
        index = "n/a" if row["anomaly_index"] is None else f"{row['anomaly_index']:.2f}"
        p = "n/a" if row["p"] is None else f"{row['p']:.2g}"
        if row["flagged"]:
            mark = "  flagged (" + " + ".join(row["support"]) + ")"
        else:
            mark = "" if row["reached"] else "  (never reached 99%)"
        print(f"{row['rank']:>4} {row['class']:>6} {row['margin']:>8.1f} {100 * row['mask_share']:>6.2f}% "
              f"{index:>6} {p:>8} {asr:>13}{mark}")
    return 0


def cmd_repair(args) -> int:
    """Any registered repair: its settings from the options, one request, its lines printed."""
    request = workflow.RepairRequest(args.method, given_settings(args), optional_path(args.output),
                                     optional_path(getattr(args, "scan", None)))
    outcome = drive(workflow.run(request, sources(args), args.scale, note))
    out = Path(outcome.outdir)
    for line in outcome.table + outcome.lines:
        print(line)
    if outcome.bundle is not None:
        bundle = out / "repaired.json"
        print(f"wrote {out}: {bundle.name} and {Path(outcome.bundle.repaired_path).name} "
              f"(use: eval/score --repaired {bundle})")
    else:
        print(f"wrote {out}; no repaired network was built")
    return 0


def cmd_explain(args) -> int:
    from engine.io.files import check_png_output

    check_png_output(args.output)
    net = load_model(Path(args.model), args.trust_model)
    scan = workflow.load_scan(args.scan, net) if args.scan else None
    images = workflow.read_images(args.paths, net)
    warn_about(images)
    scaling = scan.scaling if scan is not None else args.scale
    explanations = drive(workflow.explain_images(net, images, scaling))
    workflow.write_explanations(args.output, explanations, scan)
    for name, e in zip(images.names, explanations):
        y, x = np.unravel_index(int(e.heat.argmax()), e.heat.shape)
        flagged = scan is not None and e.predicted in scan.flagged
        mask = f", the scan flagged class {e.predicted}: mask drawn" if flagged else ""
        print(f"{name}\tclass {e.predicted} ({e.confidence:.4f}); hottest pixel row {y}, column {x} "
              f"(probability {e.peak:.2f} higher when kept){mask}")
    print(f"wrote {args.output}")
    return 0


def cmd_audit(args) -> int:
    from engine import report
    from engine.detectors.calibration import Calibration
    from engine.repairs.bundle import RepairedNet

    out = report.check_output(args.output)  # before any long work
    calibrations = [(Calibration.load(c), f"loaded from {c}") for c in args.calibration or []]
    repaired = [RepairedNet.load(b) for b in args.repaired or []]
    net, clean, poisoned = sources(args).open_all(note)
    scan = workflow.load_scan(args.scan, net) if args.scan else None
    for g in repaired:
        g.check_model(net)
        g.load_repaired(trust=args.trust_model)
    images = workflow.read_images(args.images, net) if args.images else None
    audit = drive(report.audit_job(net, clean, poisoned, args.scale, calibrations=calibrations, scan=scan,
                                    scan_source=f"read from {args.scan}" if args.scan else "",
                                    repaired=repaired, images=images, scan_images=args.scan_images,
                                    detection_images=args.detection_images,
                                    commands=audit_commands(args, net, clean, poisoned)))
    report.write(audit, out)
    verdict = audit.scan.summary() if audit.scan is not None else "no scan"
    print(f"wrote audit report {out}: {verdict}")
    return 0


def audit_commands(args, net, clean, poisoned) -> list[str]:
    """The CLI lines that recompute each of the report's figures."""
    from engine import report
    from engine.report import command_line

    base = ["python", "main.py"]
    model = ["--model", str(net.path)]
    sets = [w for p in poisoned for w in ("--poisoned", f"{p.images.source}:{p.target}")]
    scale = ["--scale", args.scale]
    lines = [command_line(base + ["scan"] + model + ["--clean", clean.source, "--max-images",
                                                     str(args.scan_images)] + scale + ["-o", "scan-out"])]
    if poisoned:
        lines.append(command_line(base + ["compare"] + model + ["--clean", clean.source] + sets + ["--frr", "1,5"]
                                  + scale + [w for r in args.repaired or [] for w in ("--repaired", r)]))
    lines.append(command_line(base + ["calibrate"] + model + ["--clean", clean.source] + scale
                              + ["-o", "calibration.json"]))
    again = base + ["audit"] + model + ["--clean", clean.source] + sets
    again += [w for c in args.calibration or [] for w in ("--calibration", c)]
    again += ["--scan", args.scan] if args.scan else ["--scan-images", str(args.scan_images)]
    again += [w for r in args.repaired or [] for w in ("--repaired", r)]
    again += [w for i in args.images or [] for w in ("--images", str(i))]
    if args.detection_images != report.DETECTION_IMAGES:
        again += ["--detection-images", str(args.detection_images)]
    lines.append(command_line(again + scale + ["-o", str(args.output)]))
    return lines
