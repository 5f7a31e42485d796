"""The commands: parse, drive the engine's workflow, print."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cli import options
from cli.console import drive, note, warn
from cli.parser import given_scan_settings, given_settings
from engine import workflow
from engine.io.datasets import parse_poisoned
from engine.jsonsafe import dumps, schema
from engine.scan.evidence import p_text


def emit(name: str, body: dict) -> None:
    """A command's one JSON object on stdout, tagged with its schema (docs/formats.md)."""
    print(dumps({"schema": schema(name), **body}))


def optional_path(value) -> Path | None:
    return None if value is None else Path(value)


def paths(values) -> tuple[Path, ...]:
    return tuple(Path(v) for v in values or ())


def sources(args) -> workflow.Sources:
    """Where the network and its data are, from ``--model``, ``--clean`` and every ``--poisoned
    PATH:TARGET`` (the engine fills in the demo's when no model is named)."""
    return workflow.Sources(optional_path(getattr(args, "model", None)), optional_path(getattr(args, "clean", None)),
                            tuple(parse_poisoned(s) for s in getattr(args, "poisoned", None) or []),
                            getattr(args, "trust_model", False))


def defense(args) -> workflow.Defense:
    return workflow.Defense(paths(args.calibration), optional_path(args.repaired), optional_path(args.nplus1))


def run(request, args):
    """The one engine call: ``request`` on the files the options name, with progress and notes."""
    quiet = getattr(args, "json", False)
    return drive(workflow.run(request, sources(args), getattr(args, "scale", None), warn if quiet else note), quiet)


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


def info_request(args) -> workflow.InfoRequest:
    return workflow.InfoRequest()


def cmd_info(args) -> int:
    report = run(info_request(args), args)
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


def predict_request(args) -> workflow.PredictRequest:
    return workflow.PredictRequest(paths(args.paths))


def cmd_predict(args) -> int:
    out = run(predict_request(args), args)
    rows = [{"path": name, "label": int(label), "confidence": float(conf)}
            for name, label, conf in zip(out.images.names, out.results.labels, out.results.confidences)]
    if args.json:
        emit("predict", {"model": out.net.path.name, "scaling": out.scaling, "images": rows})
        return 0
    for r in rows:
        print(f"{r['path']}\t{r['label']}\t{r['confidence']:.6f}")
    return 0


def calibrate_request(args) -> workflow.CalibrateRequest:
    return workflow.CalibrateRequest.from_options(args.detector, given_settings(args), method=args.method,
                                                  frr=args.frr, min_samples=args.min_samples, sample=args.sample,
                                                  output=Path(args.output))


def cmd_calibrate(args) -> int:
    request = calibrate_request(args)
    cal, _ = run(request, args)
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


def score_request(args) -> workflow.ScoreRequest:
    return workflow.ScoreRequest(defense(args))


def cmd_score(args) -> int:
    out = run(score_request(args), args)
    if args.json:
        emit("score", {"model": out.net.path.name, "model_sha256": out.net.sha256, "scaling": out.scaling,
                       "defense": out.defense,
                       "sets": [{"file": Path(d.source).name, "target": t, **r.to_dict()} for d, t, r in out.sets]})
        return 0
    for data, target, result in out.sets:
        kind = "clean" if target is None else f"poisoned, target {target}"
        print(f"{data.source}: {result.n} images ({kind})")
        for key, value in result.to_dict().items():
            if key in SCORE_NAMES and value is not None:
                shown = str(value) if key == "n_sent_to_target" else fmt(value)
                print(f"  {SCORE_NAMES[key]:<26} {shown}")
    return 0


def eval_request(args) -> workflow.EvalRequest:
    return workflow.EvalRequest(defense(args), paths(args.paths))


def cmd_eval(args) -> int:
    out = run(eval_request(args), args)
    verdicts, n = out.results, out.extra["poisoned_label"]
    if args.json:
        emit("eval", {"model": out.net.path.name, "model_sha256": out.net.sha256, "defense": out.extra["defense"],
                      "poisoned_label": n,
                      "images": [{"path": name, "label": int(label), "poisoned": int(label) == n}
                                 for name, label in zip(verdicts.names, verdicts.labels)]})
        return 0
    for name, label in zip(verdicts.names, verdicts.labels):
        print(f"{name}\t{int(label)}")
    return 0


def compare_request(args) -> workflow.CompareRequest:
    names = tuple(options.parse_detector_names(args.detectors))
    return workflow.CompareRequest(names, workflow.detector_params(list(names), given_settings(args)),
                                   tuple(args.frr), optional_path(args.roc_csv), paths(args.repaired),
                                   paths(args.nplus1))


def cmd_compare(args) -> int:
    out = run(compare_request(args), args)
    results, clean = out.results, out.clean
    if args.json:
        emit("compare", {"model": out.net.path.name, "model_sha256": out.net.sha256, "clean": Path(clean.source).name,
                         "n_clean": len(clean), "results": [r.to_dict() for r in results],
                         "defenses": [r.to_dict() for r in out.defenses]})
        return 0
    print(f"clean: {clean.source} ({len(clean)} images); thresholds pooled over classes, from the clean scores")
    head = "".join(f"  detection at {100 * f:g}% FRR" for f in out.frrs)
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
    print_defenses(out.defenses, [p.name for p in out.poisoned])
    return 0


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


def scan_request(args) -> workflow.ScanRequest:
    from engine.scan import ScanSettings

    return workflow.ScanRequest(args.sample, ScanSettings.from_params(given_scan_settings(args)),
                                optional_path(args.output))


def cmd_scan(args) -> int:
    result = run(scan_request(args), args)
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


def repair_request(args) -> workflow.RepairRequest:
    return workflow.RepairRequest(args.method, given_settings(args), optional_path(args.output),
                                  optional_path(getattr(args, "scan", None)))


def cmd_repair(args) -> int:
    """Any registered repair: its settings from the options, one request, its lines printed."""
    outcome = run(repair_request(args), args)
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


def explain_request(args) -> workflow.ExplainRequest:
    return workflow.ExplainRequest(paths(args.paths), optional_path(args.scan), optional_path(args.output))


def cmd_explain(args) -> int:
    out = run(explain_request(args), args)
    scan = out.extra["scan"]
    rows = []
    for name, e in zip(out.images.names, out.results):
        y, x = np.unravel_index(int(e.heat.argmax()), e.heat.shape)
        rows.append((name, e, int(y), int(x), bool(scan is not None and e.predicted in scan.flagged)))
    if args.json:
        emit("explain", {"model": out.net.path.name, "output": str(args.output), "images": [
            {"path": name, "predicted": int(e.predicted), "confidence": float(e.confidence),
             "hottest": {"row": y, "column": x, "gain": float(e.peak)}, "scan_flagged": flagged}
            for name, e, y, x, flagged in rows]})
        return 0
    for name, e, y, x, flagged in rows:
        mask = f", the scan flagged class {e.predicted}: mask drawn" if flagged else ""
        print(f"{name}\tclass {e.predicted} ({e.confidence:.4f}); hottest pixel row {y}, column {x} "
              f"(probability {e.peak:.2f} higher when kept){mask}")
    print(f"wrote {args.output}")
    return 0


def audit_request(args):
    from engine.report.request import AuditRequest

    return AuditRequest(Path(args.output), paths(args.calibration), optional_path(args.scan), paths(args.repaired),
                        paths(args.images), args.scan_sample, args.detection_sample)


def cmd_audit(args) -> int:
    from engine import report

    audit = run(audit_request(args), args)
    if args.json:
        emit("audit", {"report": str(args.output), **report.findings(audit)})
        return 0
    verdict = audit.scan.summary() if audit.scan is not None else "no scan"
    print(f"wrote audit report {args.output}: {verdict}")
    return 0


# Each command's request from its parsed options (what a reproduce line must parse back into).
REQUESTS = {"info": info_request, "predict": predict_request, "calibrate": calibrate_request,
            "score": score_request, "eval": eval_request, "compare": compare_request, "scan": scan_request,
            "repair": repair_request, "explain": explain_request, "audit": audit_request}
