"""Every per-image detector on every attack family of the zoo, and the trigger scan's answer.

For each member of ``engine.demo.attack_zoo`` (build it first: ``python -m engine.demo.attack_zoo``,
about half a minute a member on two cores), each detector (the founding confidence idea, STRIP,
SCALE-UP, Transplant, BaDExpert, the default before issue 30 and the default) is calibrated at 5 % and 1 % on the member's 300 clean
validation faces (or a random ``--fit`` of them), then measured on faces the threshold was not set on:

- false rejection: the share of the 300 clean test faces flagged;
- detection: the share flagged among the member's triggered faces the BadNet sends to its target
  (the faces the trigger works on; engine.evaluation.metrics.detection);
- AUC: scores of the clean test faces against those triggered faces, threshold-free.

With ``--scan`` it also runs the trigger scan (300 clean validation faces, the defaults) and gives
its verdict and the target's rank, and the scan's verdict on the clean twin. The table goes to stdout as Markdown (docs/attacks.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import ROOT  # noqa: F401  (puts the project on sys.path)

from engine import progress  # noqa: E402
from engine.demo import attack_zoo  # noqa: E402
from engine.detectors import make_detector  # noqa: E402
from engine.detectors.calibration import calibrate  # noqa: E402
from engine.evaluation.compare import roc  # noqa: E402
from engine.evaluation.metrics import detection  # noqa: E402
from engine.io.datasets import read  # noqa: E402
from engine.io.models import load_badnet  # noqa: E402

DETECTORS = ("confidence", "strip", "scaleup", "transplant", "expert", "before", "combined")
TITLES = {"confidence": "Confidence", "strip": "STRIP", "scaleup": "SCALE-UP", "transplant": "Transplant",
          "expert": "BaDExpert", "before": "Default before issue 30 (Transplant + STRIP, Bonferroni)",
          "combined": "Default (Transplant + SCALE-UP, Fisher)"}
SETTINGS = {"before": ("combined", {"members": ["transplant", "strip"], "rule": "bonferroni"})}
RATES = (0.05, 0.01)


def measure(name: str, fit: int, scan: bool, detectors=DETECTORS, draws: int = 1,
            scale: attack_zoo.Scale = attack_zoo.DEMO) -> dict:
    """Every detector on one member: calibrated on ``fit`` of its clean validation faces (all when
    0; ``draws`` random draws of them, figures averaged), measured on its clean test faces and its
    triggered faces."""
    folder = attack_zoo.folder(name, scale)
    facts = attack_zoo.facts(name, scale)
    net = load_badnet(folder / "model.h5")
    validation = read(folder / "clean_validation.h5")
    held_out = read(folder / "clean_test.h5")
    poisoned = read(folder / "poisoned.h5")
    target = facts["target"]
    out = {"facts": facts, "detectors": {}}
    for d in detectors:
        each = []
        for draw in range(draws if fit else 1):
            fit_on = validation
            if fit and fit < len(validation):
                pick = np.random.default_rng(draw).choice(len(validation), fit, replace=False)
                fit_on = validation.subset(np.sort(pick))
            row = {}
            for rate in RATES:
                cal = progress.run(calibrate(net, fit_on, "1/255", make_detector(*SETTINGS.get(d, (d, {}))),
                                             frr=rate, sample=0))
                clean_v = progress.run(cal.judge(net, held_out))
                bad_v = progress.run(cal.judge(net, poisoned))
                found, n_sent = detection(bad_v.flagged, bad_v.predicted, target)
                row[rate] = {"frr": float(clean_v.flagged.mean()), "detection": found, "sent": n_sent}
                if rate == RATES[0]:
                    sent = bad_v.predicted == target
                    bad_scores = bad_v.scores[sent] if sent.any() else bad_v.scores
                    row["auc"] = roc(clean_v.scores, bad_scores).auc
            each.append(row)
        out["detectors"][d] = {
            **{rate: {k: float(np.mean([e[rate][k] for e in each])) for k in ("frr", "detection")}
               | {"sent": each[0][rate]["sent"]} for rate in RATES},
            "auc": float(np.mean([e["auc"] for e in each])),
        }
    if scan:
        out["scan"] = scan_member(net, validation, target)
    return out


def scan_member(net, validation, target: int | None) -> dict:
    """The trigger scan with its defaults on 300 clean faces: its verdict, what it flagged and
    where the true target (if any) ranks."""
    from engine import workflow

    result = progress.run(workflow.scan_job(net, workflow.sample_images(validation, 300), "1/255"))
    ranking = result.ranking()
    return {"outcome": result.outcome, "flagged": result.flagged,
            "target_rank": ranking.index(target) + 1 if target in ranking else None,
            "classes": net.num_classes}


def scan_twin(scale: attack_zoo.Scale) -> dict | None:
    """The scan on the clean twin, whose right answer is no backdoor (None when it is not built)."""
    if not attack_zoo.built(attack_zoo.CLEAN, scale):
        return None
    folder = attack_zoo.folder(attack_zoo.CLEAN, scale)
    return scan_member(load_badnet(folder / "model.h5"), read(folder / "clean_validation.h5"), None)


def record(results: dict) -> None:
    """What the window and the audit report say of each detector's reach (engine.evaluation.families)."""
    from engine.evaluation import families

    payload = {
        "schema": families.SCHEMA,
        "measured_with": "python bench/attacks.py --record",
        "setting": (f"demo-scale attack zoo ({attack_zoo.DEMO.identities} identities), each detector with its "
                    "default settings calibrated at 5 % on 300 clean faces, false rejection on 300 others, "
                    "detection over the triggered faces the BadNet sends to its target"),
        "families": {name: {"title": r["facts"]["family"]["title"], "paper": r["facts"]["family"]["paper"],
                            "attack_success": r["facts"]["attack_success_rate"]} for name, r in results.items()},
        "detectors": {d: {name: {"detection": r["detectors"][d][0.05]["detection"],
                                 "frr": r["detectors"][d][0.05]["frr"], "auc": r["detectors"][d]["auc"]}
                          for name, r in results.items()}
                      for d in DETECTORS if d not in SETTINGS},
    }
    families.write(payload)
    print(f"recorded in {families.RECORD}")


def table(results: dict, detectors) -> None:
    print("| family | target | clean acc. | attack success | sent | detector | AUC | detection at 5 % | FRR at 5 % "
          "| detection at 1 % | FRR at 1 % |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        f = r["facts"]
        for i, d in enumerate(detectors):
            row = r["detectors"][d]
            head = (f"| {name} | {f['target']} | {100 * f['clean_accuracy']:.1f} % | "
                    f"{100 * f['attack_success_rate']:.1f} % | {row[RATES[0]]['sent']} |") if i == 0 else "| | | | | |"
            print(head + f" {TITLES[d]} | {row['auc']:.3f} | {100 * row[0.05]['detection']:.1f} % | "
                  f"{100 * row[0.05]['frr']:.1f} % | {100 * row[0.01]['detection']:.1f} % | "
                  f"{100 * row[0.01]['frr']:.1f} % |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="members (default: every built one)")
    parser.add_argument("--fit", type=int, default=0, help="calibrate on this many clean faces (default: all 300)")
    parser.add_argument("--draws", type=int, default=1, help="with --fit: average over this many draws of the faces")
    parser.add_argument("--detectors", default=",".join(DETECTORS), help="which (default: all of them)")
    parser.add_argument("--scan", action="store_true", help="also the trigger scan's verdict and the target's rank")
    parser.add_argument("--only-scan", action="store_true", help="the scan alone, no per-image detector")
    parser.add_argument("--large", action="store_true", help="the 400-identity members (python -m engine.demo.attack_zoo --large)")
    parser.add_argument("--record", action="store_true",
                        help="write each detector's figures at 5 %% for the window and the report (defaults only)")
    args = parser.parse_args()
    scale = attack_zoo.SCALES["large" if args.large else "demo"]
    detectors = () if args.only_scan else tuple(d for d in args.detectors.split(",") if d)
    unknown = [d for d in detectors if d not in DETECTORS]
    if unknown:
        raise SystemExit(f"unknown detector {unknown[0]}; choose from {', '.join(DETECTORS)}")
    names = args.names or [n for n in attack_zoo.MEMBERS if n != attack_zoo.CLEAN and attack_zoo.built(n, scale)]
    if not names:
        raise SystemExit("no attack zoo member is built: python -m engine.demo.attack_zoo" + (" --large" if args.large else ""))
    if args.record and (args.fit or args.large or args.names or detectors != DETECTORS):
        raise SystemExit("--record takes the defaults: every member and detector, 300 faces, the demo scale")
    results = {}
    for name in names:
        start = time.perf_counter()
        results[name] = measure(name, args.fit, args.scan or args.only_scan, detectors, args.draws, scale)
        print(f"{name}: measured in {time.perf_counter() - start:.0f} s", flush=True)
    if args.record:
        record(results)
    twin = scan_twin(scale) if args.scan or args.only_scan else None

    if detectors:
        fit = f"{args.fit} (the mean of {args.draws} draws)" if args.fit and args.draws > 1 else f"{args.fit or 300}"
        print(f"\nCalibrated on {fit} clean faces; false rejection on the other clean faces; detection over the "
              "triggered faces the BadNet sends to its target.\n")
        table(results, detectors)
    if args.scan or args.only_scan:
        print("\n| family | target | scan verdict | flagged | target's rank |")
        print("| --- | --- | --- | --- | --- |")
        for name, r in results.items():
            s = r["scan"]
            print(f"| {name} | {r['facts']['target']} | {s['outcome']} | {', '.join(map(str, s['flagged'])) or '-'} "
                  f"| {s['target_rank']} of {s['classes']} |")
        if twin is not None:
            print(f"| clean twin | - | {twin['outcome']} | {', '.join(map(str, twin['flagged'])) or '-'} | - |")


if __name__ == "__main__":
    main()
