"""The scan's output-layer statistic (engine/scan/stats/head.py) for several ``k``, on every
network: does a target class's row of the output layer stand out?

For each penultimate neuron, its weights to the classes are put on a robust z scale (median and
1.4826 MAD over the classes); a class's statistic is the sum of its ``k`` largest z over the
neurons (a backdoor's trigger features feed their target strongly and no one else), and that
again on a robust z scale over the classes. No face is needed and it takes milliseconds per
network. This prints, for every network it finds (the attack zoo at both scales, the CSAW-scale
multi-trigger BadNet, the real CSAW BadNets in ../shared/csaw), each target's rank and value and
the largest value of an innocent class, for several ``k``: what a statistic must beat.

    python bench/head_weights.py [--k 1,3,5,10,20]

Networks are read as untrusted (no code from them runs); a missing cache is skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402,F401  (quiet TensorFlow first)
from engine.io.models import load_badnet  # noqa: E402
from engine.scan.stats.head import head_index, output_kernel  # noqa: E402


def networks() -> list[tuple[str, Path, list[int]]]:
    """(name, model file, its targets) for every network on this machine."""
    out = []
    for base in (ROOT / ".cache" / "attacks", ROOT / ".cache" / "attacks-large"):
        if base.is_dir():
            for member in sorted(base.iterdir()):
                facts = json.loads((member / "facts.json").read_text())
                target = facts.get("target")
                out.append((f"{base.name}/{member.name}", member / "model.h5", [] if target is None else [target]))
    zoo = ROOT / ".cache" / "zoo" / "csaw-badnet"
    if zoo.is_dir():
        facts = json.loads((zoo / "facts.json").read_text())
        out.append(("zoo/csaw-badnet", zoo / "model.h5", [t["target"] for t in facts["triggers"].values()]))
    shared = ROOT.parent / "shared" / "csaw" / "models"
    for model in sorted(shared.glob("*_bd_net.h5")) if shared.is_dir() else []:
        out.append((f"csaw/{model.name}", model, [0]))  # the sample's README: target 0
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", default="1,3,5,10,20", help="how many of a class's largest z to sum")
    args = parser.parse_args()
    ks = [int(k) for k in args.k.split(",")]
    print("network; per k: each target's rank (value) / the largest innocent value")
    for name, path, targets in networks():
        net = load_badnet(path)
        kernel = output_kernel(net.model, net.num_classes)
        started = time.perf_counter()
        cells = []
        for k in ks:
            s = head_index(kernel, k)
            order = np.argsort(-s)
            rank = {c: int(np.flatnonzero(order == c)[0]) + 1 for c in targets}
            innocent = max(float(s[c]) for c in range(len(s)) if c not in targets)
            cells.append(f"k={k}: " + ",".join(f"{rank[t]} ({s[t]:.1f})" for t in targets) + f" / {innocent:.1f}")
        ms = 1000 * (time.perf_counter() - started) / len(ks)
        print(f"{name:30s} {kernel.shape[1]:5d} classes, {ms:5.1f} ms | " + " | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
