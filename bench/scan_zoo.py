"""The trigger scan's verdict on every zoo network and its clean twin, over draws of clean faces:
true targets flagged, innocent classes flagged, the verdict, the time; summarised as the field
does (true- and false-positive rates over networks). Not a timing benchmark: a table of answers.

    python bench/scan_zoo.py                          # the 400-identity attack zoo, 45 faces, draw 0
    python bench/scan_zoo.py --faces 45 100 --draws 0 1 2
    python bench/scan_zoo.py --networks csaw-badnet sample
    python bench/scan_zoo.py --rejudge                # the saved scans judged again by today's rules

Each scan is saved under ``.cache/scan-zoo/<network>-<faces>-<draw>`` and reused (``--again`` scans
anew), so rules can be compared on the same scans: ``--rejudge`` re-reads them and judges again
(a statistic registered since a scan was saved measures its own values first). Networks: every member of
``.cache/attacks-large`` (``python -m engine.demo.attack_zoo --large``), ``csaw-badnet`` (the
CSAW-scale multi-trigger zoo, ``python -m engine.demo.zoo``) and ``sample`` (the real CSAW
sunglasses BadNet with ../shared/csaw's 10 faces); a network not built is skipped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import CSAW, ROOT

from engine.io import datasets
from engine.io.models import load_badnet
from engine.progress import run
from engine.scan import ScanResult, ScanSettings, scan, stats

CACHE = ROOT / ".cache" / "scan-zoo"
LARGE = ROOT / ".cache" / "attacks-large"


def networks(names: list[str] | None) -> list[tuple[str, Path, Path, list[int]]]:
    """(name, model, clean pool file, true targets) of each network built on this machine."""
    out = []
    if LARGE.is_dir():
        for member in sorted(LARGE.iterdir()):
            facts = json.loads((member / "facts.json").read_text())
            target = facts.get("target")
            out.append((f"large/{member.name}", member / "model.h5", member / "clean_validation.h5",
                        [] if target is None else [int(target)]))
    zoo = ROOT / ".cache" / "zoo" / "csaw-badnet"
    if zoo.is_dir():
        facts = json.loads((zoo / "facts.json").read_text())
        out.append(("csaw-badnet", zoo / "model.h5", zoo / "clean.h5",
                    sorted(int(t["target"]) for t in facts["triggers"].values())))
    if (CSAW / "models" / "sunglasses_bd_net.h5").is_file():
        out.append(("sample", CSAW / "models" / "sunglasses_bd_net.h5", CSAW / "clean_sample.h5", [0]))
    if names:
        out = [n for n in out if n[0] in names or n[0].split("/")[-1] in names]
    return out


def measured(net, result: ScanResult) -> None:
    """What a statistic registered since the scan was saved measures of its own (its values were
    not in the saved scan): measured now, as the scan would have."""
    for statistic in stats.active():
        if statistic.values(result) is None:
            run(statistic.measure(net, None, result.scaling, result))


def scanned(name: str, model: Path, pool_file: Path, faces: int, draw: int, again: bool):
    """(net, ScanResult, seconds or None when read back) for one draw of ``faces`` clean faces."""
    net = load_badnet(model)
    folder = CACHE / f"{name.replace('/', '-')}-{faces}-{draw}"
    if folder.is_dir() and not again:
        return net, ScanResult.load(folder), None
    pool = datasets.read(pool_file, size=net.input_shape[:2])
    n = min(faces, len(pool))
    clean = pool if n == len(pool) else pool.subset(np.random.default_rng(100 + draw).choice(len(pool), n,
                                                                                              replace=False))
    start = time.perf_counter()
    result = run(scan(net, clean, "1/255", ScanSettings(seed=draw)))
    seconds = time.perf_counter() - start
    folder.parent.mkdir(parents=True, exist_ok=True)
    result.save(folder)
    return net, result, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="*", help="names (default: every network built)")
    parser.add_argument("--faces", type=int, nargs="+", default=[45])
    parser.add_argument("--draws", type=int, nargs="+", default=[0])
    parser.add_argument("--again", action="store_true", help="scan anew even when a saved scan is there")
    parser.add_argument("--rejudge", action="store_true", help="only the saved scans, judged again")
    parser.add_argument("--weights", default=None, metavar="NAME=W,...",
                        help="budget weights of the verdict's members (e.g. margin=1,mask=1,head=1,together=0); "
                             "default: the engine's")
    args = parser.parse_args(argv)
    weights = None if args.weights is None else {k: float(v) for k, v in
                                                  (part.split("=") for part in args.weights.split(","))}

    print("| network | faces | draw | verdict | true targets' ranks | flagged targets | innocent flagged | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    totals = {"targets": 0, "found": 0, "backdoored": 0, "caught": 0, "clean": 0, "false": 0, "innocent": 0}
    for name, model, pool_file, targets in networks(args.networks):
        for faces in args.faces:
            for draw in args.draws:
                folder = CACHE / f"{name.replace('/', '-')}-{faces}-{draw}"
                if args.rejudge and not folder.is_dir():
                    continue
                net, result, seconds = scanned(name, model, pool_file, faces, draw, args.again and not args.rejudge)
                measured(net, result)
                result.judge(weights)
                ranking = result.ranking()
                ranks = ", ".join(f"{t}: {ranking.index(t) + 1}" for t in targets) or "—"
                found = [t for t in targets if t in result.flagged]
                others = [c for c in result.flagged if c not in targets]
                took = "read" if seconds is None else f"{seconds:.0f}"
                print(f"| {name} | {result.n_clean} | {draw} | {result.outcome} | {ranks} | "
                      f"{', '.join(map(str, found)) or 'none'} | {', '.join(map(str, others)) or 'none'} | {took} |",
                      flush=True)
                totals["innocent"] += len(others)
                if targets:
                    totals["targets"] += len(targets)
                    totals["found"] += len(found)
                    totals["backdoored"] += 1
                    totals["caught"] += result.outcome == "backdoor"
                else:
                    totals["clean"] += 1
                    totals["false"] += result.outcome == "backdoor"
    t = totals
    print(f"\nbackdoored networks called backdoor: {t['caught']} of {t['backdoored']}; targets flagged: "
          f"{t['found']} of {t['targets']}; clean networks called backdoor: {t['false']} of {t['clean']}; "
          f"innocent classes flagged: {t['innocent']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
