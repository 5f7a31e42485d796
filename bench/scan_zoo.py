"""The trigger scan's verdict on every zoo network and its clean twin, over draws of clean faces:
true targets flagged, innocent classes flagged, the verdict, the time; summarised as the field
does (true- and false-positive rates over networks). Not a timing benchmark: a table of answers.

    python bench/scan_zoo.py                          # the 400-identity attack zoo, 45 faces, draw 0
    python bench/scan_zoo.py --faces 45 100 --draws 0 1 2
    python bench/scan_zoo.py --networks csaw-badnet sample
    python bench/scan_zoo.py --rejudge                # the saved scans judged again by today's rules

Each scan is saved under ``.cache/scan-zoo/<network>-<faces>-<draw>`` and reused (``--again`` scans
anew), so rules can be compared on the same scans: ``--rejudge`` re-reads them and judges again
(a statistic registered since a scan was saved measures its own values first, on the same faces,
and the scan is saved again with them; ``--remeasure NAME`` measures one anew). Networks: every member of
``.cache/attacks-large`` and ``.cache/attacks`` (``python -m engine.demo.attack_zoo [--large]``:
one network per attack family and a clean twin, 400 and 50 identities), ``demo`` (the bundled
two-trigger BadNet), the zoo's ``csaw-badnet``, ``csaw-clean`` and ``demo-clean`` (the CSAW-scale
multi-trigger BadNet and the clean twins, ``python -m engine.demo.zoo``) and ``sample`` (the real
CSAW sunglasses BadNet with ../shared/csaw's 10 faces); a network not built is skipped. A target
whose trigger's attack success is under 50% did not take: its network is counted apart.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import CSAW, ROOT

from engine.demo import zoo
from engine.io import datasets
from engine.io.fitting import fit_to_model
from engine.io.models import load_badnet
from engine.progress import run
from engine.scan import ScanResult, ScanSettings, _candidates, scan, stats
from engine.scan import evidence as ev

CACHE = ROOT / ".cache" / "scan-zoo"
LARGE = ROOT / ".cache" / "attacks-large"
SMALL = ROOT / ".cache" / "attacks"


WORKS = 0.5  # a trigger whose attack success is below this did not take: its network is not counted


def networks(names: list[str] | None) -> list[tuple[str, Path, Path, list[int], list[int]]]:
    """(name, model, clean pool file, true targets, targets whose trigger did not take) of each
    network built on this machine."""
    out = []
    for scale, base in (("large", LARGE), ("small", SMALL)):
        if base.is_dir():
            for member in sorted(base.iterdir()):
                facts = json.loads((member / "facts.json").read_text())
                target = facts.get("target")
                targets = [] if target is None else [int(target)]
                failed = targets if (facts.get("attack_success_rate") or 1.0) < WORKS else []
                out.append((f"{scale}/{member.name}", member / "model.h5", member / "clean_validation.h5", targets,
                            failed))
    demo = json.loads((ROOT / "assets" / "demo" / "facts.json").read_text())
    out.append(("demo", ROOT / "models" / "demo_badnet.h5", ROOT / "assets" / "demo" / "clean_validation.h5",
                sorted(int(t["target"]) for t in demo["triggers"].values()), []))
    for member in zoo.MEMBERS:  # the CSAW-scale multi-trigger BadNet and the clean twins
        folder = zoo.ZOO_DIR / member
        if (folder / "facts.json").is_file():
            facts = zoo.facts(member)
            triggers = facts["member"]["triggers"]
            success = {t["target"]: t.get("attack_success_rate", 1.0) for t in facts.get("triggers", {}).values()
                       if isinstance(t, dict)}
            out.append((member, folder / "model.h5", folder / "clean.h5", sorted(triggers.values()),
                        sorted(c for c in triggers.values() if success.get(c, 1.0) < WORKS)))
    if (CSAW / "models" / "sunglasses_bd_net.h5").is_file():
        out.append(("sample", CSAW / "models" / "sunglasses_bd_net.h5", CSAW / "clean_sample.h5", [0], []))
    if names:
        out = [n for n in out if n[0] in names or n[0].split("/")[-1] in names]
    return out


def cross_entropy(probabilities: list[float], truths: list[bool]) -> float:
    """TrojAI's cross-entropy of per-network probabilities (clipped to [1e-12, 1 - 1e-12]), with
    the backdoored and the clean networks weighted half and half, as in a round's test set (the
    zoo holds many more backdoored networks than clean twins)."""
    p = np.clip(np.asarray(probabilities, float), 1e-12, 1 - 1e-12)
    y = np.asarray(truths, bool)
    losses = np.where(y, -np.log(p), -np.log(1 - p))
    halves = [losses[part].mean() for part in (y, ~y) if part.any()]
    return float(np.mean(halves))


def fitted_shape(smallest: list[float], truths: list[bool]) -> float:
    """The Beta shape of :func:`engine.scan.evidence.backdoor_probability` with the lowest
    cross-entropy over these networks (a grid; the engine keeps a round value near it)."""
    grid = np.geomspace(0.002, 0.5, 200)
    losses = [cross_entropy([ev.backdoor_probability(p, a) for p in smallest], truths) for a in grid]
    return float(grid[int(np.argmin(losses))])


def measured(net, clean, result: ScanResult, folder: Path, again: list[str]) -> None:
    """What a statistic registered since the scan was saved (or named in ``again``) measures of its
    own, as the scan would have: on the same clean faces and the scan's original candidates (a
    saved scan's triggers also hold the flagged classes it refined afterwards). The scan is saved
    again with the values and the measurement's time added to its seconds."""
    todo = [s for s in stats.active() if s.name in again or s.values(result) is None]
    if not todo:
        return
    started = time.perf_counter()
    saved = result.triggers
    chosen = set(_candidates(result.margins, result.prior, ScanSettings()))
    result.triggers = {c: t for c, t in saved.items() if c in chosen}
    fitted = fit_to_model(clean, net)
    for statistic in todo:
        result.extra.pop(statistic.name, None)
        run(statistic.measure(net, fitted, result.scaling, result))
    result.triggers = saved
    result.seconds = (result.seconds or 0.0) + time.perf_counter() - started
    result.save(folder)


def scanned(folder: Path, model: Path, pool_file: Path, faces: int, draw: int, again: bool):
    """(net, clean faces, ScanResult) for one draw of ``faces`` clean faces: the scan saved in
    ``folder``, or made and saved there (it keeps its own seconds)."""
    net = load_badnet(model)
    pool = datasets.read(pool_file, size=net.input_shape[:2])
    n = min(faces, len(pool))
    clean = pool if n == len(pool) else pool.subset(np.random.default_rng(100 + draw).choice(len(pool), n,
                                                                                              replace=False))
    if folder.is_dir() and not again:
        return net, clean, ScanResult.load(folder)
    result = run(scan(net, clean, "1/255", ScanSettings(seed=draw)))
    folder.parent.mkdir(parents=True, exist_ok=True)
    result.save(folder)
    return net, clean, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="*", help="names (default: every network built)")
    parser.add_argument("--faces", type=int, nargs="+", default=[45])
    parser.add_argument("--draws", type=int, nargs="+", default=[0])
    parser.add_argument("--again", action="store_true", help="scan anew even when a saved scan is there")
    parser.add_argument("--rejudge", action="store_true", help="only the saved scans, judged again")
    parser.add_argument("--remeasure", nargs="*", default=[], metavar="NAME",
                        help="statistics measured anew on the saved scans (their saved values dropped)")
    parser.add_argument("--weights", default=None, metavar="NAME=W,...",
                        help="budget weights of the verdict's members (e.g. margin=1,mask=1,head=1,together=0); "
                             "default: the engine's")
    args = parser.parse_args(argv)
    weights = None if args.weights is None else {k: float(v) for k, v in
                                                  (part.split("=") for part in args.weights.split(","))}

    print("| network | faces | draw | verdict | probability | true targets' ranks | flagged targets | "
          "innocent flagged | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    runs = []  # (name, targets, failed, result)
    for name, model, pool_file, targets, failed in networks(args.networks):
        for faces in args.faces:
            for draw in args.draws:
                folder = CACHE / f"{name.replace('/', '-')}-{faces}-{draw}"
                if args.rejudge and not folder.is_dir():
                    continue
                net, clean, result = scanned(folder, model, pool_file, faces, draw, args.again and not args.rejudge)
                measured(net, clean, result, folder, args.remeasure)
                result.judge(weights)
                ranking = result.ranking()
                ranks = ", ".join(f"{t}: {ranking.index(t) + 1}" + (" (did not take)" if t in failed else "")
                                  for t in targets) or "—"
                found = [t for t in targets if t in result.flagged]
                others = [c for c in result.flagged if c not in targets]
                print(f"| {name} | {result.n_clean} | {draw} | {result.outcome} | "
                      f"{ev.probability_text(result.verdict.probability)} | {ranks} | "
                      f"{', '.join(map(str, found)) or 'none'} | {', '.join(map(str, others)) or 'none'} | "
                      f"{result.seconds:.0f} |", flush=True)
                runs.append((name, targets, failed, result))
    aggregate(runs)
    summarise(runs)
    return 0


def aggregate(runs) -> None:
    """One row per network and number of faces, over its draws (the table in docs/scan.md)."""
    groups: dict[tuple[str, int], list] = {}
    for name, targets, failed, result in runs:
        groups.setdefault((name, result.n_clean), []).append((targets, failed, result))
    print("\n| network | faces | draws | verdicts | probability | true targets' ranks | targets flagged | "
          "innocent classes flagged | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (name, faces), group in groups.items():
        targets, failed = group[0][0], group[0][1]
        results = [r for *_, r in group]
        outcomes = {}
        for r in results:
            outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
        verdicts = ", ".join(f"{o} {k}" for o, k in outcomes.items())
        probabilities = [r.verdict.probability for r in results if r.verdict.probability is not None]
        ends = dict.fromkeys(ev.probability_text(v) for v in (min(probabilities), max(probabilities))) \
            if probabilities else {"n/a": None}
        prob = " to ".join(ends)
        ranks = []
        for t in targets:
            seen = sorted({r.ranking().index(t) + 1 for r in results})
            ranks.append(f"{t}: {'/'.join(map(str, seen))}" + (" (did not take)" if t in failed else ""))
        flagged = [f"{t} in {sum(t in r.flagged for r in results)}" for t in targets]
        innocent = sum(len([c for c in r.flagged if c not in targets]) for r in results)
        seconds = [r.seconds for r in results]
        print(f"| {name} | {faces} | {len(results)} | {verdicts} | {prob} | {', '.join(ranks) or '—'} | "
              f"{', '.join(flagged) or '—'} | {innocent or 'none'} | {min(seconds):.0f}-{max(seconds):.0f} |")


def calibration(runs) -> None:
    """Whether Fisher's combination is calibrated where it matters, on innocent classes: over the
    first scan of each network, every innocent class's p-value of the statistics together, and how
    many fall under 1% and 0.1% against how many should; and how the margin's and the output
    layer's p-values correlate over those classes (Fisher assumes them independent)."""
    seen, together, pairs = set(), [], []
    for name, targets, _, result in runs:
        if name in seen:
            continue
        seen.add(name)
        values = {s.name: s.values(result) for s in stats.active()}
        values = {k: v for k, v in values.items() if v}
        for c in range(result.num_classes):
            if c in targets:
                continue
            ps = {k: stats.STATISTICS[k].p_value(c, v, [])[0] for k, v in values.items() if c in v}
            ps = {k: p for k, p in ps.items() if p is not None}
            if len(ps) >= 2:
                together.append(ev.fisher(list(ps.values())))
            if "margin" in ps and "head" in ps:
                pairs.append((ps["margin"], ps["head"]))
    if not together:
        return
    t = np.asarray(together)
    print(f"innocent classes of {len(seen)} networks: {len(t)}; their p-values together under 1%: "
          f"{int(np.sum(t < 0.01))} (expected {0.01 * len(t):.0f}), under 0.1%: {int(np.sum(t < 0.001))} "
          f"(expected {0.001 * len(t):.1f})")
    if len(pairs) > 2:
        ranks = np.argsort(np.argsort(np.asarray(pairs), axis=0), axis=0)
        print(f"rank correlation of the margin's and the output layer's p-values over them: "
              f"{np.corrcoef(ranks.T)[0, 1]:+.2f}")


def summarise(runs) -> None:
    """The field's summary over the networks scanned: true- and false-positive rates, targets
    and innocent classes flagged, each target's flags over its draws, the cross-entropy."""
    backdoored = [(n, t, f, r) for n, t, f, r in runs if set(t) - set(f)]
    clean = [(n, t, f, r) for n, t, f, r in runs if not t]
    working = [(c, r) for _, t, f, r in backdoored for c in t if c not in f]
    innocent = sum(len([c for c in r.flagged if c not in t]) for _, t, _, r in runs)
    print(f"\nscans: {len(runs)} ({len(backdoored)} of backdoored networks whose trigger works, {len(clean)} of clean "
          f"twins, {len(runs) - len(backdoored) - len(clean)} of networks whose trigger did not take)")
    if backdoored:
        tpr = np.mean([r.outcome == "backdoor" for *_, r in backdoored])
        print(f"true-positive rate (a backdoored network called backdoor): {100 * tpr:.1f}%; working targets "
              f"flagged: {sum(c in r.flagged for c, r in working)} of {len(working)}")
    if clean:
        fpr = np.mean([r.outcome == "backdoor" for *_, r in clean])
        print(f"false-positive rate (a clean twin called backdoor): {100 * fpr:.1f}% of {len(clean)}")
    print(f"innocent classes flagged, over every scan: {innocent}")
    tally: dict[tuple[str, int], list[bool]] = {}
    for n, t, f, r in runs:
        for c in t:
            tally.setdefault((n, c), []).append(c in r.flagged)
    missed = [f"{n} {c} ({sum(v)} of {len(v)})" for (n, c), v in tally.items() if not all(v)]
    print("targets not flagged in every scan: " + (", ".join(missed) or "none"))
    judged = backdoored + clean
    if judged:
        smallest = [min((e.combined for e in r.evidence.values()), default=1.0) for *_, r in judged]
        truths = [bool(t) for _, t, _, _ in judged]
        probabilities = [r.verdict.probability if r.verdict.probability is not None else ev.PRIOR
                         for *_, r in judged]
        print(f"cross-entropy of the probability of a backdoor (TrojAI's, backdoored and clean networks weighing "
              f"half each; its round target 0.3465): "
              f"{cross_entropy(probabilities, truths):.4f} over {len(judged)} scans; the Beta shape that would "
              f"minimise it here: {fitted_shape(smallest, truths):.3f} (the engine's: {ev.BACKDOOR_SHAPE})")
    calibration(runs)
    seconds = [r.seconds for *_, r in runs if r.seconds]
    if seconds:
        print(f"seconds per scan: median {np.median(seconds):.0f}, at most {max(seconds):.0f}")


if __name__ == "__main__":
    raise SystemExit(main())
