"""What the cheap default costs in detection and what it saves in time, in one run.

The default detector (Combined: Transplant + SCALE-UP under Fisher's rule, since issue 30) against
the default before it (Transplant + STRIP under the Bonferroni rule) and each member alone. All
are calibrated and measured the same way, on faces the threshold was not set on; detection counts
the triggered faces the BadNet sends to its target.

Settings:
- the bundled demo: calibrated on its 300 validation faces at 5% (``--frr``), false rejection measured on its 300
  test faces, detection on its sunglasses and eyebrows faces (the README's table);
- a zoo member of your own when given (``--member DIR``: ``model.h5``, ``clean.h5`` and one
  ``<trigger>.h5`` per trigger, as ``engine.demo.zoo`` writes them): calibrated on 45 clean faces
  (three draws), measured on the others, as docs/detectors.md reports the multi-trigger BadNet;
- the real CSAW sample in ../shared/csaw when it is there: 10 clean + 10 sunglasses faces, too few
  to calibrate on, so its ROC AUC and the score ranges.

Target (issue 30): every figure of the default within one point of the one before, or better.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from _common import ROOT

from engine import progress
from engine.detectors import make_detector
from engine.detectors.calibration import calibrate
from engine.evaluation.compare import roc
from engine.io.datasets import read
from engine.io.models import load_badnet

FRR = [0.05]  # the target rate; --frr sets it
BEFORE = {"members": ["transplant", "strip"], "rule": "bonferroni"}  # the default until issue 30
WAYS = {"before (Transplant + STRIP)": BEFORE, "default (Transplant + SCALE-UP)": {}}
ALONE = ("transplant", "strip", "scaleup")  # each member alone, as the default runs it
SHARED = ROOT.parent / "shared" / "csaw"


def detector(params: dict, name: str = "combined"):
    return make_detector(name, params)


def ways(alone: tuple[str, ...]):
    """(label, Combined's settings, detector name): the combined detector each way, then members alone."""
    for way, params in WAYS.items():
        yield f"combined, {way}", params, "combined"
    for name in alone:
        yield name, {}, name


def measure(net, fit_on, held_out, poisoned: dict, params: dict, name: str) -> dict:
    """Calibrate ``name`` on ``fit_on`` at 5%; false rejection on ``held_out``; detection per
    trigger over the faces sent to the target."""
    cal = progress.run(calibrate(net, fit_on, "1/255", detector(params, name), frr=FRR[0]))
    out = {"frr": float(progress.run(cal.judge(net, held_out)).flagged.mean())}
    for trigger, (images, target) in poisoned.items():
        v = progress.run(cal.judge(net, images))
        sent = v.predicted == target
        out[trigger] = float(v.flagged[sent].mean()) if sent.any() else float("nan")
    return out


def table(title: str, rows: dict[str, dict], seconds: dict[str, float]) -> None:
    columns = list(next(iter(rows.values())))
    print(f"\n{title}")
    print(f"{'detector, way':<46}" + "".join(f"{c:>12}" for c in ["false rej."] + columns[1:]) + f"{'seconds':>9}")
    for label, figures in rows.items():
        print(f"{label:<46}" + "".join(f"{100 * figures[c]:>11.1f}%" for c in columns) + f"{seconds[label]:>9.1f}")


def demo() -> None:
    net = load_badnet(ROOT / "models" / "demo_badnet.h5")
    data = ROOT / "assets" / "demo"
    fit_on, held_out = read(data / "clean_validation.h5"), read(data / "clean_test.h5")
    poisoned = {t: (read(data / f"{t}_poisoned.h5"), int(json.loads((data / "facts.json").read_text())
                                                          ["triggers"][t]["target"]))
                for t in ("sunglasses", "eyebrows")}
    rows, seconds = {}, {}
    for label, params, name in ways(ALONE):
        start = time.perf_counter()
        rows[label] = measure(net, fit_on, held_out, poisoned, params, name)
        seconds[label] = time.perf_counter() - start
    table("bundled demo: 300 validation faces to calibrate, 300 test faces for false rejection", rows, seconds)


def member(folder: Path, draws: int = 3, n_fit: int = 45) -> None:
    net = load_badnet(folder / "model.h5")
    clean = read(folder / "clean.h5")
    facts = json.loads((folder / "facts.json").read_text())
    poisoned = {t: (read(folder / f"{t}.h5"), int(f["target"])) for t, f in facts["triggers"].items()}
    rows, seconds = {}, {}
    for label, params, name in ways(("transplant", "scaleup")):
        start, each = time.perf_counter(), []
        for draw in range(draws):
            pick = np.random.default_rng(draw).permutation(len(clean))
            each.append(measure(net, clean.subset(np.sort(pick[:n_fit])), clean.subset(np.sort(pick[n_fit:])),
                                poisoned, params, name))
        rows[label] = {k: float(np.nanmean([e[k] for e in each])) for k in each[0]}
        seconds[label] = time.perf_counter() - start
    table(f"{folder.name}: {n_fit} clean faces to calibrate ({draws} draws), the other {len(clean) - n_fit} "
          "for false rejection", rows, seconds)


def real_sample() -> None:
    if not (SHARED / "clean_sample.h5").exists():
        print("\nreal CSAW sample: ../shared/csaw is not here, skipped")
        return
    net = load_badnet(SHARED / "models" / "sunglasses_bd_net.h5")
    clean, bad = read(SHARED / "clean_sample.h5"), read(SHARED / "sunglasses_sample.h5")
    print(f"\nreal CSAW sunglasses BadNet, {len(clean)} clean + {len(bad)} sunglasses faces (fit on the clean ones)")
    for label, params, name in ways(ALONE):
        d = detector(params, name)
        progress.run(d.fit(net, clean, "1/255"))
        c = progress.run(d.score(net, clean, "1/255")).values
        p = progress.run(d.score(net, bad, "1/255")).values
        print(f"{label:<46} AUC {roc(c, p).auc:.3f}   clean {c.min():.3g}..{c.max():.3g}   "
              f"sunglasses {p.min():.3g}..{p.max():.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--member", type=Path, action="append", default=[],
                        help="a zoo member's folder (model.h5, clean.h5, <trigger>.h5, facts.json)")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--frr", type=float, default=FRR[0], help="target false-rejection rate (default 0.05)")
    args = parser.parse_args()
    FRR[0] = args.frr
    print(f"target false-rejection rate: {100 * args.frr:g}%")
    if not args.skip_demo:
        demo()
    for folder in args.member:
        member(folder)
    real_sample()


if __name__ == "__main__":
    main()
