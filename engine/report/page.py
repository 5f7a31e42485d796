"""The report's page: its figures drawn and its template filled (Jinja2, every text escaped)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.report import GENERATOR, Audit, calibration_shares, checked_verdicts, shown_triggers
from engine.report import figures
from engine.scan import stats
from engine.scan.evidence import p_text

TEMPLATE = Path(__file__).with_name("report.html.j2")
SET_COLOURS = ["#1f77b4", "#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{100 * float(v):.1f}%"


def _sets(audit: Audit) -> list[str]:
    return [name for name in audit.confidences]


def _trigger_views(audit: Audit) -> list[dict]:
    scan = audit.scan
    out = []
    labels, flagged = shown_triggers(scan)
    for label in labels:
        t = scan.triggers[label]
        e = scan.evidence.get(label)
        # As in the window: the smallest mask that works (Neural Cleanse), and for a flagged class
        # also the smooth inversion that shows what the trigger looks like.
        pictures = [(t.mask, "mask"), (t.pattern, "pattern"), (t.mask[..., None] * t.pattern, "mask × pattern")]
        if t.shape_mask is not None:
            pictures += [(t.shape_mask, "shape"), (t.shape_mask[..., None] * t.shape_pattern, "shape × pattern")]
        view = {"label": label, "flagged": flagged, "size": _pct(t.size), "flips": _pct(t.attack_success),
                "p": None if e is None else p_text(e.combined),
                "shape_size": None if t.shape_mask is None else _pct(float(np.mean(t.shape_mask))),
                "pictures": [{"src": figures.png_uri(a, 4 if len(pictures) <= 3 else 3), "caption": c}  # in one row
                             for a, c in pictures], "faces": []}
        preview = audit.previews.get(label)
        if preview and preview.get("faces") is not None:
            view["flipped"] = f"{preview['flipped']} of {preview['n']}"
            for face, stamped, before, after in zip(preview["faces"], preview["stamped"], preview["before"],
                                                    preview["after"]):
                view["faces"].append({"before": figures.png_uri(face, 2), "after": figures.png_uri(stamped, 2),
                                      "class_before": before, "class_after": after})
        out.append(view)
    return out


def _detection(audit: Audit) -> list[dict]:
    """Per poisoned set: its ROC figure and a table of every detector's AUC and detection at each rate."""
    from engine.detectors import DETECTORS

    out = []
    for name in dict.fromkeys(c.poisoned for c in audit.comparisons):
        rows = [c for c in audit.comparisons if c.poisoned == name]
        curves = [(c.title, getattr(DETECTORS.get(c.detector), "colour", (80, 80, 80)), c.roc.frr, c.roc.detection,
                   c.auc) for c in rows]
        out.append({
            "name": name,
            "sent": rows[0].sent_text(),
            "roc": figures.roc_svg(curves, f"{name}: ROC of every detector", audit.frrs),
            "rows": [{"title": c.title, "auc": f"{c.auc:.3f}",
                      "points": [f"{_pct(p.detection)} (clean {_pct(p.frr)})" for p in c.points]} for c in rows],
        })
    return out


def _families(audit: Audit) -> dict | None:
    """Every detector of the audit against the attack zoo's families (engine.evaluation.families):
    what each caught there at 5 %, with its default settings; None when nothing was compared."""
    from engine.evaluation import families

    seen = {}
    for c in audit.comparisons:
        seen.setdefault(c.detector, (c.title, c.params))
    for cal, _, _ in audit.calibrations:
        seen.setdefault(cal.detector, (cal.detector_title, cal.detector_params))
    if not seen:
        return None
    rows, missing, columns = [], [], {}
    for name, (title, params) in seen.items():
        reach = families.reach(name, params)
        if reach is None:
            missing.append(title)
            continue
        for f in reach.figures:
            columns.setdefault(f.name, f.title)
        rows.append({"title": title, "count": reach.count_text(),
                     "cells": {f.name: (_pct(f.detection), f.detection < families.HOLDS) for f in reach.figures}})
    return {"columns": list(columns), "titles": columns, "rows": rows, "missing": missing,
            "holds": f"{100 * families.HOLDS:.0f}%", "docs": families.DOCS}


def _confidence_figure(audit: Audit) -> str:
    series = [(name, SET_COLOURS[i % len(SET_COLOURS)], values) for i, (name, values) in
              enumerate(audit.confidences.items())]
    return figures.histogram_svg(series, "top-1 confidence", "The founding idea: top-1 confidence, clean and poisoned",
                                 bounds=(0.0, 1.0))


def _calibration_views(audit: Audit) -> list[dict]:
    out = []
    for cal, where, scores in audit.calibrations:
        detector = cal.make_detector()
        scale = detector.scale
        series = [(s.name, SET_COLOURS[i % len(SET_COLOURS)], np.asarray(s.scores.values, dtype=float))
                  for i, s in enumerate(scores)]
        log = bool(getattr(scale, "stretched_low", False))
        # Detection over the images the BadNet sends to the target, as in every detection figure;
        # blank where it sends none.
        flagged = [{"name": r["name"], "kind": r["kind"], "n": r["n"], "flagged": _pct(r["flagged_share_of_all"]),
                    "sent": r.get("n_sent_to_target"),
                    "flagged_sent": _pct(r["detection"]) if r.get("n_sent_to_target") else ""}
                   for r in calibration_shares(cal, scores)]
        out.append({
            "title": cal.detector_title, "summary": cal.summary(), "where": where,
            "figure": figures.histogram_svg(series, scale.label, f"{cal.detector_title}: scores and the pooled "
                                            "threshold", threshold=cal.pooled_threshold, log=log),
            "flagged": flagged,
        })
    return out


def _defense_views(audit: Audit) -> dict:
    names = list(dict.fromkeys(k for row in audit.defenses for k in row.sets))
    rows = []
    for row in audit.defenses:
        cells = []
        for n in names:
            o = row.sets.get(n)
            cells.append("" if o is None else f"{_pct(o.detection)} / {_pct(o.attack_success)}")
        rows.append({"title": row.title, "note": row.note, "clean_accuracy": _pct(row.clean_accuracy),
                     "frr": _pct(row.frr), "cells": cells})
    return {"sets": names, "rows": rows}


def _checked_views(audit: Audit) -> list[dict]:
    out = []
    cals = {cal.detector: cal for cal, _, _ in audit.calibrations}
    for index, item in enumerate(audit.checked):
        words = [{"detector": cals[name].detector_title, "score": f"{v['score']:.4g}",
                  "verdict": "poisoned (N)" if v["poisoned"] else f"class {v['label']}", "flagged": v["poisoned"]}
                 for name, v in checked_verdicts(item, cals).items()]
        explained = audit.maps.get(index)
        heat = None
        if explained is not None:
            h = np.asarray(explained.heat, dtype=float)
            h = h / h.max() if h.max() > 0 else h
            heat = figures.png_uri(np.stack([h, np.zeros_like(h), 1.0 - h], axis=-1) * 0.6
                                   + np.asarray(item.image, dtype=float) / 255 * 0.4, 2)
        out.append({"name": item.name, "thumb": figures.png_uri(item.image, 2), "predicted": item.predicted,
                    "confidence": f"{item.confidence:.4f}", "label": item.label, "verdicts": words, "heat": heat})
    return out


def _settings(audit: Audit) -> list[dict]:
    """Every setting behind the figures: each compared detector's and each calibration's."""
    out = []
    seen = set()
    for c in audit.comparisons:
        if c.detector not in seen:
            seen.add(c.detector)
            out.append({"what": f"compared: {c.title}", "settings": _settings_text(_labelled(c.detector, c.params))})
    for cal, where, _ in audit.calibrations:
        out.append({"what": f"calibration: {cal.detector_title}",
                    "settings": _settings_text({**_labelled(cal.detector, cal.detector_params), "method": cal.method,
                                                "target false rejection": f"{100 * cal.frr:g}%",
                                                "min_samples": cal.min_samples, "scaling": cal.scaling})})
    out.append({"what": "per-image detection", "settings": (
        f"at most {audit.detection_images:,} faces of each set, drawn at random (seed 0)"
        if audit.detection_images else "every face of each set")})
    if audit.scan is not None:
        out.append({"what": "trigger scan", "settings": _settings_text(
            {"clean faces": audit.scan.n_clean, "held out": audit.scan.n_holdout,
             "false-alarm budget": f"{100 * audit.scan.alpha:g}%",
             "scaling": audit.scan.scaling}) + ("; " + "; ".join(audit.scan.notes) if audit.scan.notes else "")})
    return out


def _labelled(detector: str, params: dict) -> dict:
    """A detector's settings under the names people see (its declared labels: STRIP's saved
    ``alpha`` is its blend weight), members' settings included."""
    from engine.detectors import DETECTORS

    cls = DETECTORS.get(detector)
    labels = {s.name: s.label for s in cls.settings} if cls is not None else {}
    out = {}
    for key, value in params.items():
        if key == "member_params" and isinstance(value, dict):
            value = {m: _labelled(m, v) if isinstance(v, dict) else v for m, v in value.items()}
        out[labels.get(key, key)] = value
    return out


def _settings_text(params: dict) -> str:
    def shown(v):
        if isinstance(v, dict):
            return "{" + _settings_text(v) + "}"
        if isinstance(v, (list, tuple)):
            return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
        return f"{v:g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k.replace('_', ' ')} {shown(v)}" for k, v in params.items()) or "defaults"


def page(audit: Audit) -> str:
    """The audit's HTML page, from the template, escaped throughout."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    scan = audit.scan
    scan_rows = [r for r in scan.rows() if r["flagged"] or r["refined"]][:10] if scan is not None else []
    # each registered statistic's report columns, as (header, the row's text)
    stat_columns = [c for s in stats.active() for c in s.columns if c.report]
    for r in scan_rows:
        r["stat_cells"] = [c.text(r.get(c.key)) for c in stat_columns]
    with _svg_text():
        context = {
            "generator": GENERATOR,
            "audit": audit,
            "verdict": None if scan is None else {
                "outcome": scan.outcome or "unfinished", "line": scan.summary(), "flagged": scan.flagged,
                "source": audit.scan_source, "n_clean": scan.n_clean, "rows": scan_rows, "notes": scan.notes,
                "stat_headers": [c.report for c in stat_columns]},
            "triggers": _trigger_views(audit) if scan is not None else [],
            "detection": _detection(audit),
            "families": _families(audit),
            "confidence_figure": _confidence_figure(audit),
            "calibrations": _calibration_views(audit),
            "defenses": _defense_views(audit),
            "checked": _checked_views(audit),
            "settings": _settings(audit),
            "references": references(audit),
            "limits": limits(audit),
        }
    env.globals["p_text"] = p_text
    env.filters["breakable"] = breakable
    return env.get_template(TEMPLATE.name).render(**context)


def breakable(text) -> "Markup":
    """A file name that may wrap only after a separator (/ _ - .), never in the middle of a word."""
    import html as _html
    import re

    from markupsafe import Markup

    return Markup(re.sub(r"([/_.\-])", r"\1<wbr>", _html.escape(str(text))))


class _svg_text:
    """Figures keep their text as SVG text (escaped by matplotlib), not as glyph outlines with the
    text in comments, so nothing a file name holds can end a comment early."""

    def __enter__(self):
        import matplotlib

        self._ctx = matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "badnet-inspector"})
        self._ctx.__enter__()

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# --- what the report cites and what it cannot show ------------------------------------------

REFERENCES = {
    "badnets": "T. Gu, B. Dolan-Gavitt and S. Garg. BadNets: Identifying Vulnerabilities in the Machine Learning "
               "Model Supply Chain. arXiv:1708.06733, 2017; IEEE Access 7, 2019.",
    "csaw": "CSAW-HackML-2020: the backdoored face recognisers (YouTube Aligned Face, DeepID-style network) this "
            "tool's reference setting comes from. NYU CSAW, 2020.",
    "mm-bd": "H. Wang, Z. Xiang, D. J. Miller and G. Kesidis. MM-BD: Post-Training Detection of Backdoor Attacks "
             "with Arbitrary Backdoor Pattern Types Using a Maximum Margin Statistic. IEEE S&P 2024.",
    "neural-cleanse": "B. Wang, Y. Yao, S. Shan, H. Li, B. Viswanath, H. Zheng and B. Y. Zhao. Neural Cleanse: "
                      "Identifying and Mitigating Backdoor Attacks in Neural Networks. IEEE S&P 2019.",
    "k-arm": "G. Shen, Y. Liu, G. Tao, S. An, Q. Xu, S. Cheng, S. Ma and X. Zhang. Backdoor Scanning for Deep "
             "Neural Networks through K-Arm Optimization. ICML 2021 (the scan's choice of candidate classes).",
    "strip": "Y. Gao, C. Xu, D. Wang, S. Chen, D. C. Ranasinghe and S. Nepal. STRIP: A Defence Against Trojan "
             "Attacks on Deep Neural Networks. ACSAC 2019.",
    "scale-up": "J. Guo, Y. Li, X. Chen, H. Guo, L. Sun and C. Liu. SCALE-UP: An Efficient Black-box Input-level "
                "Backdoor Detection via Analyzing Scaled Prediction Consistency. ICLR 2023.",
    "sentinet": "E. Chou, F. Tramèr and G. Pellegrino. SentiNet: Detecting Localized Universal Attacks Against "
                "Deep Learning Systems. IEEE S&P Workshops 2020 (the idea Transplant builds on: a region "
                "that holds a trigger takes over other images).",
    "fine-pruning": "K. Liu, B. Dolan-Gavitt and S. Garg. Fine-Pruning: Defending Against Backdooring Attacks on "
                    "Deep Neural Networks. RAID 2018.",
    "magnitude": "S. Han, J. Pool, J. Tran and W. J. Dally. Learning both Weights and Connections for Efficient "
                 "Neural Networks. NeurIPS 2015 (magnitude pruning).",
    "rise": "V. Petsiuk, A. Das and K. Saenko. RISE: Randomized Input Sampling for Explanation of Black-box "
            "Models. BMVC 2018 (the sensitivity maps).",
    "badexpert": "T. Xie, X. Qi, P. He, Y. Li, J. T. Wang and P. Mittal. BaDExpert: Extracting Backdoor "
                 "Functionality for Accurate Backdoor Input Detection. ICLR 2024.",
    "fisher": "R. A. Fisher. Statistical Methods for Research Workers. Oliver and Boyd, 1925 (combining "
              "independent p-values: the combined detector's rule).",
    "conformal": "V. Vovk, A. Gammerman and G. Shafer. Algorithmic Learning in a Random World. Springer, 2005 "
                 "(thresholds as ranks of clean scores, and the interval of a new image's false rejection).",
}
# What each detector and repair applies, by registered name.
METHOD_REFERENCES = {
    "strip": ("strip",), "scaleup": ("scale-up",), "transplant": ("sentinet",), "expert": ("badexpert",),
    "combined": (), "confidence": (),  # combined: its members' and its rule's, see method_references
    "fine-pruning": ("fine-pruning",), "magnitude": ("magnitude",), "unlearning": ("neural-cleanse",),
    "nplus1": ("csaw",),
}


def method_references(name: str, params: dict | None) -> tuple[str, ...]:
    """The references of a detector as configured: a combined detector cites its members and,
    under Fisher's rule, Fisher."""
    if name != "combined":
        return METHOD_REFERENCES.get(name, ())
    params = params or {}
    members = params.get("members") or []
    keys = tuple(k for m in members if isinstance(m, str) for k in METHOD_REFERENCES.get(m, ()))
    return keys + (("fisher",) if params.get("rule", "bonferroni") == "fisher" else ())


def references(audit: Audit) -> list[dict]:
    """Every method the report applies, cited once, in the order the report uses them."""
    keys = ["badnets", "csaw"]
    if audit.scan is not None:
        keys += ["mm-bd", "neural-cleanse", "k-arm"]
    used = ([(c.detector, c.params) for c in audit.comparisons]
            + [(cal.detector, cal.detector_params) for cal, _, _ in audit.calibrations])
    for name, params in used:
        keys += method_references(name, params)
    for row in audit.defenses:
        if row.kind == "repaired":
            for name, refs in METHOD_REFERENCES.items():
                if name in row.title.lower().replace(" ", "-") or name in row.note.lower():
                    keys += refs
    if audit.calibrations:
        keys.append("conformal")
    if audit.maps:
        keys.append("rise")
    return [{"key": k, "text": REFERENCES[k]} for k in dict.fromkeys(keys)]


def limits(audit: Audit) -> list[str]:
    """What the report does not show: the limits of each statistic it applies, in plain words."""
    out = []
    if audit.scan is not None:
        out.append(
            "The trigger scan looks for a class that an unusually small input change, or an unusually large "
            "logit margin, reaches. A backdoor whose trigger is not small and local (a blend over the whole "
            "image, a warp, a change of colour depth, a trigger different for every image) need not give either, "
            "so 'no evidence of a backdoor' is not proof that there is none. Its p-values compare each class "
            "with the other classes of the same network; a network with few classes, or with many targets, "
            "leaves them little to compare with.")
    if audit.comparisons or audit.calibrations:
        out.append(
            "Per-image detection is measured only on the poisoned sets given here. A detector's figures on one "
            "trigger say little about another, and an attacker who knows the detector can shape a trigger to "
            "pass it. False rejection on new clean images varies around its target by the interval the "
            "calibration states; it is exact only on the images the threshold was set on.")
    if any(r.kind == "repaired" for r in audit.defenses):
        out.append(
            "A repaired network's figures are held out only where the table says so; a repair trained on a "
            "trigger may not remove another.")
    out.append(
        "Nothing here shows that the network is safe on data unlike the clean faces given, or that its "
        "training data held no other backdoor with a target these tests did not reach.")
    return out
