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
its verdict and the target's rank. The table goes to stdout as Markdown (docs/attacks.md).
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


def measure(name: str, fit: int, scan: bool) -> dict:
    folder = attack_zoo.folder(name)
    facts = attack_zoo.facts(name)
    net = load_badnet(folder / "model.h5")
    fit_on = read(folder / "clean_validation.h5")
    if fit and fit < len(fit_on):
        fit_on = fit_on.subset(np.sort(np.random.default_rng(0).choice(len(fit_on), fit, replace=False)))
    held_out = read(folder / "clean_test.h5")
    poisoned = read(folder / "poisoned.h5")
    target = facts["target"]
    out = {"facts": facts, "detectors": {}}
    for d in DETECTORS:
        row = {}
        for rate in RATES:
            cal = progress.run(calibrate(net, fit_on, "1/255", make_detector(*SETTINGS.get(d, (d, {}))), frr=rate,
                                         sample=0))
            clean_v = progress.run(cal.judge(net, held_out))
            bad_v = progress.run(cal.judge(net, poisoned))
            found, n_sent = detection(bad_v.flagged, bad_v.predicted, target)
            row[rate] = {"frr": float(clean_v.flagged.mean()), "detection": found, "sent": n_sent}
            if rate == RATES[0]:
                sent = bad_v.predicted == target
                bad_scores = bad_v.scores[sent] if sent.any() else bad_v.scores
                row["auc"] = roc(clean_v.scores, bad_scores).auc
        out["detectors"][d] = row
    if scan:
        from engine import workflow

        result = progress.run(workflow.scan_job(net, workflow.sample_images(fit_on, 300), "1/255"))
        ranking = result.ranking()
        out["scan"] = {"outcome": result.outcome, "flagged": result.flagged,
                       "target_rank": ranking.index(target) + 1 if target in ranking else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="members (default: every built one)")
    parser.add_argument("--fit", type=int, default=0, help="calibrate on this many clean faces (default: all 300)")
    parser.add_argument("--scan", action="store_true", help="also the trigger scan's verdict and the target's rank")
    args = parser.parse_args()
    names = args.names or [n for n in attack_zoo.MEMBERS if n != attack_zoo.CLEAN and attack_zoo.built(n)]
    if not names:
        raise SystemExit("no attack zoo member is built: python -m engine.demo.attack_zoo")
    results = {}
    for name in names:
        start = time.perf_counter()
        results[name] = measure(name, args.fit, args.scan)
        print(f"{name}: measured in {time.perf_counter() - start:.0f} s", flush=True)

    fit = f"{args.fit}" if args.fit else "300"
    print(f"\nCalibrated on {fit} clean faces; false rejection on 300 other clean faces; detection over the "
          "triggered faces the BadNet sends to its target.\n")
    print("| family | target | clean acc. | attack success | sent | detector | AUC | detection at 5 % | FRR at 5 % "
          "| detection at 1 % | FRR at 1 % |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        f = r["facts"]
        for i, d in enumerate(DETECTORS):
            row = r["detectors"][d]
            head = (f"| {name} | {f['target']} | {100 * f['clean_accuracy']:.1f} % | "
                    f"{100 * f['attack_success_rate']:.1f} % | {row[RATES[0]]['sent']} |") if i == 0 else "| | | | | |"
            print(head + f" {TITLES[d]} | {row['auc']:.3f} | {100 * row[0.05]['detection']:.1f} % | "
                  f"{100 * row[0.05]['frr']:.1f} % | {100 * row[0.01]['detection']:.1f} % | "
                  f"{100 * row[0.01]['frr']:.1f} % |")
    if args.scan:
        print("\n| family | target | scan verdict | flagged | target's rank |")
        print("| --- | --- | --- | --- | --- |")
        for name, r in results.items():
            s = r["scan"]
            print(f"| {name} | {r['facts']['target']} | {s['outcome']} | {', '.join(map(str, s['flagged'])) or '-'} "
                  f"| {s['target_rank']} |")


if __name__ == "__main__":
    main()
