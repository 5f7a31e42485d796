"""The commands: parse, drive the engine's workflow, print."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cli import options
from cli.console import drive, note, warn
from cli.parser import given_scan_settings, given_settings
from engine import workflow
from engine.io.datasets import parse_poisoned
from engine.demo import DEMO_CLEAN_TEST, DEMO_MODEL
from engine.errors import InputError
from engine.jsonsafe import dumps, schema
from engine.scan.evidence import p_text


def warn_about(images) -> None:
    workflow.warn_about(images, warn)


def emit(name: str, body: dict) -> None:
    """A command's one JSON object on stdout, tagged with its schema (docs/formats.md)."""
    print(dumps({"schema": schema(name), **body}))


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


def sources(args, poisoned_needed: bool = False) -> workflow.Sources:
    """Where the network and its data are, from ``--model``, ``--clean`` and every ``--poisoned
    PATH:TARGET``: the demo's when no model is named. A model of the user's own needs its data
    named too; the demo's synthetic faces never stand in for it."""
    poisoned = getattr(args, "poisoned", None)
    if args.model is not None:
        missing = [o for o, given in (("--clean PATH", args.clean),
                                      ("--poisoned PATH:TARGET", poisoned or not poisoned_needed)) if not given]
        if missing:
            raise InputError(args.model, f"{' and '.join(missing)} missing: with a model of your own, name its "
                             "data (the demo's faces stand in only for the demo's network)")
    return workflow.Sources(optional_path(args.model), optional_path(getattr(args, "clean", None)),
                            tuple(parse_poisoned(s) for s in poisoned or []), args.trust_model)


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


def is_demo(net) -> bool:
    try:
        return Path(net.path).resolve() == Path(DEMO_MODEL).resolve()
    except (OSError, TypeError):
        return False


def cmd_info(args) -> int:
    net = load_model(Path(args.model), args.trust_model)
    report = net.report()
    if args.json:
        emit("info", report)
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
    rows = [{"path": name, "label": int(label), "confidence": float(conf)}
            for name, label, conf in zip(images.names, preds.labels, preds.confidences)]
    if args.json:
        emit("predict", {"model": net.path.name, "scaling": scaling, "images": rows})
        return 0
    for r in rows:
        print(f"{r['path']}\t{r['label']}\t{r['confidence']:.6f}")
    return 0


def cmd_calibrate(args) -> int:
    request = workflow.CalibrateRequest.from_options(args.detector, given_settings(args), method=args.method,
                                                     frr=args.frr, min_samples=args.min_samples,
                                                     sample=args.sample, output=Path(args.output))
    cal, reason = drive(workflow.run(request, sources(args), args.scale, note), args.json)
    if args.scale == "auto":
        note(f"input scaling: {reason}")
    if args.json:
        emit("calibrate", {"output": str(request.output), "summary": cal.summary(),
                           "calibration": cal.to_dict(relative_to=Path(request.output).parent)})
        return 0
    print(f"calibrated {cal.summary()}; saved {request.output}")
    return 0


SCORE_NAMES = {
    "accuracy": "clean accuracy",
    "attack_success_rate": "attack success rate",
    "n_sent_to_target": "sent to the target",
    "detection_rate": "detection (of those sent)",
    "flagged_share_of_all": "flagged, all poisoned",
    "frr": "false-rejection rate",
    "defended_accuracy": "defended accuracy",
    "defended_attack_success_rate": "defended attack success",
}


def cmd_score(args) -> int:
    from engine.evaluation import metrics
    from engine.scoring import predict

    defended = bool(args.calibration or args.repaired or args.nplus1)
    if defended:
        cal, net = load_defense(args)
    else:
        cal, net = None, load_model(Path(args.model or DEMO_MODEL), args.trust_model)
    specs = [(Path(args.clean), None)] if args.clean else []
    specs += [parse_poisoned(s) for s in args.poisoned or []]
    if not specs:
        if not is_demo(net):
            raise InputError(net.path, "--clean PATH or --poisoned PATH:TARGET missing: name the data to score "
                             "(the demo's faces stand in only for the demo's network)")
        specs = [(DEMO_CLEAN_TEST, None)]
    for path, target in specs:
        if target is not None:
            workflow.check_target(net, target, path)
    sets = []
    for path, target in specs:
        data = workflow.read_set(path, net)
        warn_about(data)
        if target is None and data.labels is None and cal is None:
            raise InputError(path, "has no labels: give it as --poisoned PATH:TARGET, or give labelled clean data")
        sets.append((data, target))
    scaling = cal.scaling if cal is not None else choose_scaling(net, args.scale or "1/255", sets[0][0], args.json)
    out = []
    for data, target in sets:
        preds = drive(predict(net, data, scaling), args.json)
        verdicts = drive(cal.judge(net, data), True) if cal else None
        result = metrics.report(preds, data.labels if target is None else None, target, verdicts,
                                badnet=not (args.nplus1 and not args.model))
        out.append((data, target, result))
    if args.json:
        emit("score", {"model": net.path.name, "model_sha256": net.sha256, "scaling": scaling,
                       "defense": defense_name(args),
                       "sets": [{"file": Path(d.source).name, "target": t, **r.to_dict()} for d, t, r in out]})
        return 0
    for data, target, result in out:
        kind = "clean" if target is None else f"poisoned, target {target}"
        print(f"{data.source}: {result.n} images ({kind})")
        for key, value in result.to_dict().items():
            if key in SCORE_NAMES and value is not None:
                shown = str(value) if key == "n_sent_to_target" else fmt(value)
                print(f"  {SCORE_NAMES[key]:<26} {shown}")
    return 0


def defense_name(args) -> str | None:
    """The defense a command judged with, as the user named it (file names only)."""
    if args.calibration:
        return ", ".join(Path(c).name for c in args.calibration)
    for value in (args.repaired, args.nplus1):
        if value:
            return Path(value).name
    return None


def cmd_eval(args) -> int:
    cal, net = load_defense(args)
    images = workflow.read_images(args.paths, net)
    warn_about(images)
    verdicts = drive(cal.judge(net, images), args.json)
    if args.json:
        emit("eval", {"model": net.path.name, "model_sha256": net.sha256, "defense": defense_name(args),
                      "poisoned_label": int(cal.poisoned_label),
                      "images": [{"path": name, "label": int(label), "poisoned": int(label) == cal.poisoned_label}
                                 for name, label in zip(verdicts.names, verdicts.labels)]})
        return 0
    for name, label in zip(verdicts.names, verdicts.labels):
        print(f"{name}\t{int(label)}")
    return 0


def cmd_compare(args) -> int:
    from engine.evaluation.compare import ROC_CSV_HEADER
    from engine.io.files import write_csv

    names = options.parse_detector_names(args.detectors)
    detectors = workflow.make_detectors(names, workflow.detector_params(names, given_settings(args)))
    frrs = tuple(args.frr)
    src = sources(args, poisoned_needed=True)
    if args.roc_csv:
        from engine.io.files import check_output, csv_header

        check_output(args.roc_csv, lambda p: csv_header(p) == ROC_CSV_HEADER, "ROC curve CSV")
    from engine.evaluation.compare import detector_rows
    from engine.repairs.bundle import RepairedNet

    repaired = [RepairedNet.load(b) for b in args.repaired or []]  # damaged bundles fail before any work
    net, clean, poisoned = src.open_all(warn if args.json else note)
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
        emit("compare", {"model": net.path.name, "model_sha256": net.sha256, "clean": Path(clean.source).name,
                         "n_clean": len(clean), "results": [r.to_dict() for r in results],
                         "defenses": [r.to_dict() for r in defenses]})
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

    settings = ScanSettings.from_params(given_scan_settings(args))
    request = workflow.ScanRequest(args.sample, settings, optional_path(args.output))
    result = drive(workflow.run(request, sources(args), args.scale, warn if args.json else note), args.json)
    if args.output is not None:
        note(f"wrote {Path(args.output) / 'scan.json'}, triggers.npz and PNGs")
    code = 3 if args.fail_on_backdoor and result.outcome == "backdoor" else 0
    if args.json:
        emit("scan", {"exit_code": code, **result.to_dict()})
        return code
    print(f"{result.model_path}: scanned {result.num_classes} classes with {result.n_clean} clean images "
          f"({result.n_holdout} held out) in {result.seconds:.0f} s")
    print(result.summary())
    print()
    print(scan_table(result))
    if code:
        note("exit code 3: the verdict is backdoor (--fail-on-backdoor)")
    return code


def scan_table(result) -> str:
    """The scan's ranked table as the CLI prints it: rank, class, each registered statistic's
    columns, the combined p-value and the held-out attack success of the reversed trigger."""
    from engine.scan import stats

    columns = [c for s in stats.active() for c in s.columns if c.table]
    widths = [max(7, len(c.header)) for c in columns]
    lines = [f"{'rank':>4} {'class':>6} " + " ".join(f"{c.header.lower():>{w}}" for c, w in zip(columns, widths))
             + f" {'p':>8} {'held-out ASR':>13}"]
    for row in result.rows()[: max(10, len(result.flagged))]:
        if not row["refined"]:
            break
        asr = "n/a" if row["attack_success"] is None else f"{100 * row['attack_success']:.0f}%"
        cells = " ".join(f"{c.text(row.get(c.key)) or 'n/a':>{w}}" for c, w in zip(columns, widths))
        if row["flagged"]:
            mark = "  flagged (" + " + ".join(row["support"]) + ")"
        else:
            mark = "" if row["reached"] else "  (never reached 99%)"
        lines.append(f"{row['rank']:>4} {row['class']:>6} {cells} {p_text(row['p']):>8} {asr:>13}{mark}")
    return "\n".join(lines)


def cmd_repair(args) -> int:
    """Any registered repair: its settings from the options, one request, its lines printed."""
    request = workflow.RepairRequest(args.method, given_settings(args), optional_path(args.output),
                                     optional_path(getattr(args, "scan", None)))
    from engine.repairs import repair_class

    needs = repair_class(args.method).needs_poisoned
    outcome = drive(workflow.run(request, sources(args, poisoned_needed=needs), args.scale,
                                 warn if args.json else note), args.json)
    out = Path(outcome.outdir)
    if args.json:
        b = outcome.bundle
        emit("repair", {"method": outcome.method, "output": str(out), "lines": outcome.lines,
                        "bundle": None if b is None else str(out / "repaired.json"),
                        "repaired_model": None if b is None else Path(b.repaired_path).name,
                        "scan": None if outcome.scan is None else {"outcome": outcome.scan.outcome,
                                                                    "flagged": list(outcome.scan.flagged)},
                        "plots": [{"title": pl.title, "curves": [{"name": c.name, "x": c.x, "y": c.y}
                                                                 for c in pl.curves]} for pl in outcome.plots]})
        return 0
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
    explanations = drive(workflow.explain_images(net, images, scaling), args.json)
    workflow.write_explanations(args.output, explanations, scan)
    if args.json:
        rows = []
        for name, e in zip(images.names, explanations):
            y, x = np.unravel_index(int(e.heat.argmax()), e.heat.shape)
            rows.append({"path": name, "predicted": int(e.predicted), "confidence": float(e.confidence),
                         "hottest": {"row": int(y), "column": int(x), "gain": float(e.peak)},
                         "scan_flagged": bool(scan is not None and e.predicted in scan.flagged)})
        emit("explain", {"model": net.path.name, "output": str(args.output), "images": rows})
        return 0
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

    out = report.check_report_output(args.output)  # before any long work
    src = sources(args)
    calibrations = [(Calibration.load(c), f"loaded from {Path(c).name}") for c in args.calibration or []]
    repaired = [RepairedNet.load(b) for b in args.repaired or []]
    net, clean, poisoned = src.open_all(warn if args.json else note)
    scan = workflow.load_scan(args.scan, net) if args.scan else None
    for g in repaired:
        g.check_model(net)
        g.load_repaired(trust=args.trust_model)
    images = workflow.read_images(args.images, net) if args.images else None
    commands = report.reproduce_lines(
        str(net.path), clean.source, [(p.images.source, p.target) for p in poisoned], args.scale, str(args.output),
        calibrations=args.calibration or [], scan=args.scan, repaired=args.repaired or [],
        images=[str(i) for i in args.images or []], scan_sample=args.scan_sample,
        detection_sample=args.detection_sample)
    audit = drive(report.audit_job(net, clean, poisoned, args.scale, calibrations=calibrations, scan=scan,
                                    scan_source=f"read from {Path(args.scan).name}" if args.scan else "",
                                    repaired=repaired, images=images, scan_images=args.scan_sample,
                                    detection_images=args.detection_sample, commands=commands), args.json)
    report.write(audit, out)
    if args.json:
        emit("audit", {"report": str(out), **report.findings(audit)})
        return 0
    verdict = audit.scan.summary() if audit.scan is not None else "no scan"
    print(f"wrote audit report {out}: {verdict}")
    return 0
