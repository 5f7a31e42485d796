"""The command line: commands, options (detector and repair settings come from their registries)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.demo import DEMO_CLEAN_TEST, DEMO_CLEAN_VALIDATION, DEMO_IMAGES, DEMO_MODEL
from engine.detectors import DETECTORS
from engine.detectors.calibration import METHODS
from engine.repairs import ALIASES, REPAIRS
from engine.report import DETECTION_IMAGES
from engine.scan import SCAN_IMAGES, ScanSettings
from engine.workflow import DEFAULT_DETECTOR, DEFAULT_FRR, DEFAULT_METHOD


class Parser(argparse.ArgumentParser):
    """argparse, ending a usage error with one ``error: …`` line and exit code 2."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        text = " ".join(message.split())
        self.exit(2, f"error: {self.prog}: {text}\n")


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def sample_option(text: str) -> int:
    """--sample: a positive whole number, or "all" (0: every image)."""
    if text.strip().lower() == "all":
        return 0
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("0 images is no sample; give a number of images or 'all'")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def setting_options() -> dict[str, list]:
    """Every shown detector setting by name, with the detectors that have it."""
    out: dict[str, list] = {}
    for cls in DETECTORS.values():
        for s in cls.settings:
            if s.shown:
                out.setdefault(s.name, []).append((cls, s))
    return out


def add_detector_settings(p: argparse.ArgumentParser) -> None:
    """One option per detector setting (``--blends``), default None: the detector's own default."""
    for name, owners in setting_options().items():
        cls, s = owners[0]
        who = ", ".join(c.title for c, _ in owners)
        kind = str if s.is_list else s.kind  # a list is checked by the detector, as from a file
        where = "" if s.kind is list else f", {'each ' if s.kind is tuple else ''}in {s.range_text()}"
        p.add_argument(s.option, dest=f"setting_{name}", type=kind, metavar=name.upper(),
                       help=f"{who}: {s.help}{where} (default {s.default_text()})".replace("%", "%%"))


def given_settings(args) -> dict:
    return {k[len("setting_"):]: v for k, v in vars(args).items() if k.startswith("setting_") and v is not None}


def build_parser(commands) -> argparse.ArgumentParser:
    """``commands``: the module whose ``cmd_*`` functions run each command."""
    parser = Parser(
        prog="badnet-inspector",
        description="Inspect image classifiers for backdoors (BadNets). Without a command, starts the app.",
    )
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    parser.set_defaults(func=commands.cmd_app)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)

    def command(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show a traceback on errors")
        p.add_argument("--trust-model", action="store_true",
                       help="allow a model file to run its own code (Lambda layers, custom objects)")
        p.set_defaults(func=func)
        return p

    def scale_option(p, default):
        p.add_argument("--scale", choices=("1/255", "raw", "auto"), default=default,
                       help="input scaling: 1/255 (CSAW 2020), raw 0..255 (CSAW lab), or auto "
                       "(pick the one with higher clean accuracy on labelled data)" +
                       (f"; default {default}" if default else ""))

    def poisoned_option(p):
        p.add_argument("--poisoned", action="append", metavar="PATH:TARGET",
                       help="a poisoned set and its target (repeatable)")

    detector_names = ", ".join(DETECTORS)

    p = command("gui", commands.cmd_app, "open the window (the same as no command), optionally on given files")
    p.add_argument("--model", help="a BadNet (default: the bundled demo, with its data)")
    p.add_argument("--clean", help="clean data")
    poisoned_option(p)
    p.add_argument("--calibration", help="a calibration JSON to load")
    p.add_argument("--screenshot", metavar="OUT.png",
                   help="load, calibrate, save the whole window as a PNG and exit (works headless)")

    p = command("info", commands.cmd_info, "show a model's format, input shape, classes, layers and fingerprint")
    p.add_argument("model", nargs="?", default=str(DEMO_MODEL), metavar="MODEL")
    p.add_argument("--json", action="store_true")

    p = command("predict", commands.cmd_predict, "top class and confidence for images, folders or HDF5 sets")
    p.add_argument("--model", default=str(DEMO_MODEL))
    scale_option(p, "1/255")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("paths", nargs="*", type=Path, default=[DEMO_IMAGES], metavar="IMAGE_OR_DIR")

    p = command("calibrate", commands.cmd_calibrate, "learn per-class thresholds on clean data")
    p.add_argument("--model", default=str(DEMO_MODEL))
    p.add_argument("--clean", default=str(DEMO_CLEAN_VALIDATION), help="clean data (HDF5, .npz, folder)")
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD)
    p.add_argument("--frr", type=float, default=DEFAULT_FRR,
                   help=f"target false-rejection rate for quantile (default {DEFAULT_FRR:g})")
    p.add_argument("--min-samples", type=non_negative_int,
                   help="classes with fewer clean images use the pooled threshold "
                   "(default: 1/frr, at least 5; 20 at 5%%)")
    p.add_argument("--sample", type=sample_option, metavar="N|all",
                   help="calibrate on N clean images drawn at random, or on all; default: as many as the "
                   "rate needs (1168 at 5%%, whose false rejection lies in 3.8..6.3%% with 95%% confidence)")
    p.add_argument("--detector", choices=tuple(DETECTORS), default=DEFAULT_DETECTOR,
                   help=f"which detector to calibrate ({detector_names}; default {DEFAULT_DETECTOR})")
    add_detector_settings(p)
    scale_option(p, "1/255")
    p.add_argument("-o", "--output", required=True, metavar="CALIBRATION.json")

    p = command("score", commands.cmd_score, "accuracy, attack success and detection figures on a data set")
    p.add_argument("--model", help="the model (default: the calibration's, or the demo BadNet)")
    defense = p.add_mutually_exclusive_group()
    defense.add_argument("--calibration", action="append", metavar="CAL.json",
                         help="a calibration JSON written by 'calibrate'; repeat to flag when any detector flags")
    defense.add_argument("--repaired", help="a repaired-network bundle written by 'prune' or 'repair' (repaired.json)")
    defense.add_argument("--nplus1", metavar="MODEL",
                         help="a hand-made N+1 network whose last class means poisoned (e.g. the report's "
                         "*_processed_model.h5); with --model, judged beside that BadNet")
    p.add_argument("--data", default=str(DEMO_CLEAN_TEST))
    p.add_argument("--target", type=int, help="the attack's target class: the data is poisoned")
    scale_option(p, None)
    p.add_argument("--json", action="store_true")

    p = command("eval", commands.cmd_eval, "CSAW verdicts: one line per image, <path>\\t<label>, label N = poisoned")
    defense = p.add_mutually_exclusive_group(required=True)
    defense.add_argument("--calibration", action="append", metavar="CAL.json",
                         help="a calibration JSON written by 'calibrate'; repeat to flag when any detector flags")
    defense.add_argument("--repaired", help="a repaired-network bundle written by 'prune' or 'repair' (repaired.json)")
    defense.add_argument("--nplus1", metavar="MODEL",
                         help="a hand-made N+1 network whose last class means poisoned (e.g. the report's "
                         "*_processed_model.h5)")
    p.add_argument("--model", help="the model, if it moved since calibration (its fingerprint must match)")
    p.add_argument("paths", nargs="*", type=Path, default=[DEMO_IMAGES], metavar="IMAGE_OR_DIR")
    scale_option(p, None)

    p = command("compare", commands.cmd_compare, "compare detectors on clean data against poisoned sets: "
                "ROC AUC and detection at fixed false-rejection rates")
    p.add_argument("--model", help="the BadNet (default: the demo, with its sunglasses and eyebrows sets)")
    p.add_argument("--clean", default=str(DEMO_CLEAN_VALIDATION), help="clean data")
    poisoned_option(p)
    p.add_argument("--detectors", default=",".join(DETECTORS),
                   help=f"comma-separated, from {detector_names} (default: all)")
    add_detector_settings(p)
    p.add_argument("--frr", default="1,5", help="false-rejection rates in %% to report detection at (default 1,5)")
    p.add_argument("--roc-csv", metavar="OUT.csv", help="also write every ROC curve as CSV")
    p.add_argument("--repaired", action="append", metavar="BUNDLE.json",
                   help="also judge with this repaired network (fine-pruning, unlearning, magnitude pruning, N+1); "
                   "repeatable")
    p.add_argument("--nplus1", action="append", metavar="MODEL",
                   help="also judge with this hand-made N+1 network (its last class means poisoned); repeatable")
    scale_option(p, "1/255")
    p.add_argument("--json", action="store_true")

    def repair_options(p, cls):
        """A repair's own settings (from its declaration) and what every repair takes."""
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show a traceback on errors")
        p.add_argument("--trust-model", action="store_true",
                       help="allow a model file to run its own code (Lambda layers, custom objects)")
        p.add_argument("--model", help="the BadNet (default: the demo, with its sunglasses and eyebrows sets)")
        p.add_argument("--clean", default=str(DEMO_CLEAN_VALIDATION), help="labelled clean data")
        poisoned_option(p)
        if cls.uses_scan:
            p.add_argument("--scan", metavar="SCANDIR", help="a trigger scan's folder (default: scan first)")
        for s in cls.settings:
            if s.shown:
                kind = str if s.is_list or s.kind is str else s.kind  # checked by the repair, as from the window
                where = "" if s.kind is str and not s.choices else f", {'each ' if s.is_list else ''}in {s.range_text()}"
                p.add_argument(s.option, dest=f"setting_{s.name}", type=kind, metavar=s.name.upper(),
                               choices=s.choices or None, help=f"{s.help}{where} (default {s.default_text() or 'none'})")
        scale_option(p, "1/255")
        p.add_argument("-o", "--output", required=True, metavar="OUTDIR")
        p.set_defaults(func=commands.cmd_repair, method=cls.name)

    p = command("repair", commands.cmd_repair, "repair a BadNet: make a second network that, beside it, says "
                "what is poisoned (a bundle for eval/score --repaired and the window)")
    methods = p.add_subparsers(title="methods", metavar="METHOD", parser_class=Parser, required=True)
    for cls in REPAIRS.values():
        aliases = [old for old, new in ALIASES.items() if new == cls.name]
        repair_options(methods.add_parser(cls.name, aliases=aliases, help=cls.summary, description=cls.summary), cls)
    p = sub.add_parser("prune", help="the same as 'repair fine-pruning'", description=REPAIRS["fine-pruning"].summary)
    repair_options(p, REPAIRS["fine-pruning"])

    p = command("scan", commands.cmd_scan, "trigger scan: is this network backdoored, and which classes are "
                "targets? The largest logit margin of every class (MM-BD) and the smallest reversed trigger of "
                "the candidates (Neural Cleanse), combined under one false-alarm budget; saves masks, patterns "
                "and PNGs")
    p.add_argument("--model", default=str(DEMO_MODEL))
    p.add_argument("--clean", default=str(DEMO_CLEAN_VALIDATION),
                   help="clean data (labels not needed; 45-100 faces are enough)")
    p.add_argument("--max-images", type=non_negative_int, default=SCAN_IMAGES, metavar="N",
                   help=f"use at most N clean images, drawn at random (default {SCAN_IMAGES}; 0: all)")
    p.add_argument("--candidates", type=positive_int, default=ScanSettings.margin_candidates,
                   help="classes with the largest margins refined, besides those the clean faces lean to most "
                        f"(default {ScanSettings.margin_candidates})")
    p.add_argument("--steps", type=positive_int, default=ScanSettings.refine_steps,
                   help=f"refinement steps at most (default {ScanSettings.refine_steps})")
    p.add_argument("--alpha", type=float, default=ScanSettings.alpha,
                   help="family-wise false-alarm budget: the chance of flagging any class of a clean network "
                        f"(default {ScanSettings.alpha:g})")
    scale_option(p, "1/255")
    p.add_argument("-o", "--output", metavar="OUTDIR",
                   help="write scan.json, triggers.npz and PNGs of the flagged classes here")
    p.add_argument("--json", action="store_true", help="print the ranked table as JSON")

    p = command("audit", commands.cmd_audit, "one self-contained HTML report of everything found about a network: "
                "the scan's verdict and reversed triggers, the model and data, every detector's ROC and "
                "thresholds, every defense side by side, checked images, how to reproduce")
    p.add_argument("--model", help="the BadNet (default: the bundled demo, with its data)")
    p.add_argument("--clean", help="clean data (default: the demo's validation faces)")
    poisoned_option(p)
    p.add_argument("--calibration", action="append", metavar="CAL.json",
                   help="a calibration to report (repeatable; default: the default detector, calibrated here)")
    p.add_argument("--scan", metavar="DIR", help="a scan folder written by 'scan' (default: scan here)")
    p.add_argument("--scan-images", type=non_negative_int, default=SCAN_IMAGES, metavar="N",
                   help=f"clean images the scan uses when it runs here (default {SCAN_IMAGES}; 0: all)")
    p.add_argument("--detection-images", type=non_negative_int, default=DETECTION_IMAGES, metavar="N",
                   help="faces of each set (clean, each poisoned) that per-image detection and the defenses are "
                        f"measured on, drawn at random (default {DETECTION_IMAGES}; 0: all)")
    p.add_argument("--repaired", action="append", metavar="R.json",
                   help="a repaired-network bundle to put beside the detectors (repeatable)")
    p.add_argument("--images", action="append", type=Path, metavar="IMAGE_OR_DIR",
                   help="images to check and show (repeatable)")
    scale_option(p, "1/255")
    p.add_argument("-o", "--output", required=True, metavar="REPORT.html")

    p = command("explain", commands.cmd_explain, "where is the trigger: a map of the pixels that drive each image's "
                "predicted class (random-mask sensitivity, RISE), and a scan's reversed-trigger mask for that class")
    p.add_argument("paths", nargs="+", type=Path, metavar="IMAGE", help="image files, folders or a small HDF5 set")
    p.add_argument("--model", default=str(DEMO_MODEL))
    p.add_argument("--scan", metavar="SCANDIR", help="a scan's folder: also draw its mask for the predicted class")
    scale_option(p, "1/255")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png")

    return parser
