"""The trigger scan's answers over several draws of clean faces, as a Markdown table (not a timing).

The table in docs/scan.md of where the scan ranks each true target, and what it flags, comes from here:

    python bench/scan_draws.py                       # every network below, 3 draws each
    python bench/scan_draws.py csaw-badnet:45 --draws 0 1 2

A network is ``NAME[:FACES]``: ``demo`` (the bundled two-trigger BadNet, its validation faces),
``sample`` (the real CSAW sunglasses BadNet with ../shared/csaw's 10 faces), or a zoo member
(``csaw-badnet``, ``csaw-clean``, ``demo-clean``; ``python -m engine.demo.zoo`` builds them). Each draw
is FACES distinct clean faces the network never saw, drawn with the draw's seed, and the scan's
own seed is the draw, as the slow tests do.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import CSAW, ROOT

from engine.progress import run
from engine.scan import ScanSettings, scan

DEFAULT = ("csaw-badnet:100", "csaw-badnet:45", "csaw-clean:100", "demo:100", "demo-clean:100")


def network(name: str):
    """(BadNet, clean pool, true targets, scaling) for a network's name."""
    from engine.io import datasets
    from engine.demo import zoo
    from engine.io.models import load_badnet

    if name == "demo":
        folder = ROOT / "assets" / "demo"
        import json

        facts = json.loads((folder / "facts.json").read_text())
        targets = sorted(int(t["target"]) for t in facts["triggers"].values())
        return load_badnet(ROOT / "models" / "demo_badnet.h5"), datasets.read(folder / "clean_validation.h5"), targets
    if name == "sample":
        return load_badnet(CSAW / "models" / "sunglasses_bd_net.h5"), datasets.read(CSAW / "clean_sample.h5"), [0]
    folder = zoo.path(name)
    targets = sorted(zoo.facts(name)["member"]["triggers"].values())
    return load_badnet(folder / "model.h5"), datasets.read(folder / "clean.h5"), targets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("networks", nargs="*", default=list(DEFAULT), metavar="NAME[:FACES]")
    parser.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)

    print("| network | faces | draw | verdict | true targets' ranks | flagged targets | other classes flagged | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for spec in args.networks:
        name, _, count = spec.partition(":")
        try:
            net, pool, targets = network(name)
        except FileNotFoundError as exc:
            print(f"| {name} | | | not built: {exc} | | | | |")
            continue
        faces = min(int(count or 100), len(pool))
        for draw in args.draws:
            clean = pool if faces == len(pool) else pool.subset(
                np.random.default_rng(100 + draw).choice(len(pool), faces, replace=False))
            start = time.perf_counter()
            result = run(scan(net, clean, "1/255", ScanSettings(seed=draw)))
            seconds = time.perf_counter() - start
            ranking = result.ranking()
            ranks = ", ".join(f"{t}: {ranking.index(t) + 1}" for t in targets) or "none"
            found = ", ".join(str(t) for t in targets if t in result.flagged) or "none"
            others = ", ".join(str(c) for c in result.flagged if c not in targets) or "none"
            print(f"| {name} | {faces} | {draw} | {result.outcome} | {ranks} | {found} | {others} | {seconds:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
