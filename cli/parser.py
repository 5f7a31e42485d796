"""The command line: commands, options (detector and repair settings come from their registries)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine import rates
from engine.errors import InputError
from engine.evaluation.compare import DEFAULT_FRRS
from engine.detectors import DETECTORS
from engine.detectors.calibration import METHODS
from engine.repairs import ALIASES, REPAIRS
from engine.report import DETECTION_IMAGES
from engine.scan import SCAN_IMAGES
from engine.scan import SETTINGS as SCAN_SETTINGS
from engine.workflow import DEFAULT_DETECTOR, DEFAULT_FRR, DEFAULT_METHOD


class Parser(argparse.ArgumentParser):
    """argparse, ending a usage error with one ``error: …`` line and exit code 2."""

    def error(self, message: str):
        text = " ".join(message.split())
        self.exit(2, f"error: {self.prog}: {text} (see {self.prog} --help)\n")


class Renamed(argparse.Action):
    """An option's old spelling: refused with a line that names the new one."""

    def __init__(self, option_strings, dest, new: str = "", why: str = "", **kwargs):
        kwargs.setdefault("nargs", "?")
        super().__init__(option_strings, argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
        self.new, self.why = new, why

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is now {self.new}" + (f" ({self.why})" if self.why else ""))


def renamed(p: argparse.ArgumentParser, old: str, new: str, why: str = "") -> None:
    p.add_argument(old, action=Renamed, new=new, why=why)


def rate_option(what: str):
    """An argparse type: one rate, written 0.05 or 5% (engine.rates)."""

    def parse(text: str) -> float:
        try:
            return rates.parse_rate(text, what, low_open=True, high_open=True)
        except InputError as err:
            raise argparse.ArgumentTypeError(err.problem) from None

    return parse


def rates_option(what: str):
    """An argparse type: rates separated by commas, each written 0.05 or 5%."""

    def parse(text: str) -> tuple[float, ...]:
        items = [t for t in str(text).split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{text!r}: give one or more rates such as 1%,5%")
        try:
            return tuple(rates.parse_rate(t, what, high_open=True) for t in items)
        except InputError as err:
            raise argparse.ArgumentTypeError(err.problem) from None

    return parse


def escaped(text: str) -> str:
    """Help text with its % doubled: argparse formats help with %."""
    return text.replace("%", "%%")


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def sample_option(text: str) -> int:
    """--sample and its kin: a positive whole number, or "all" (0: every image)."""
    if text.strip().lower() == "all":
        return 0
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("0 images is no sample; give a number of images or 'all'")
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
        p.add_argument(s.option, dest=f"setting_{name}", type=setting_type(s), metavar=s.option[2:].upper(),
                       help=escaped(f"{who}: {setting_help(s)}"))


def add_scan_settings(p: argparse.ArgumentParser) -> None:
    """One option per user-visible scan setting (engine.scan.SETTINGS), default None: the scan's own."""
    for s in SCAN_SETTINGS:
        p.add_argument(s.option, dest=f"scan_{s.name}", type=setting_type(s),
                       metavar="RATE" if s.rate else s.option[2:].upper(), help=escaped(setting_help(s)))


def given_scan_settings(args) -> dict:
    """The scan settings given on the command line, by name."""
    return {k[len("scan_"):]: v for k, v in vars(args).items() if k.startswith("scan_") and v is not None}


def setting_type(s) -> type:
    """What argparse hands on: text for lists, rates and words (the owner checks them, as from a
    file or the window), else the setting's number type."""
    return str if s.is_list or s.rate or s.kind is str else s.kind


def setting_help(s) -> str:
    where = "" if s.kind is list or (s.kind is str and not s.choices) else \
        f", {'each ' if s.is_list else ''}in {s.range_text()}"
    rate = ", as 0.05 or 5%" if s.rate else ""
    return f"{s.help}{where}{rate} (default {s.default_text() or 'none'})"


def given_settings(args) -> dict:
    return {k[len("setting_"):]: v for k, v in vars(args).items() if k.startswith("setting_") and v is not None}


def version_text() -> str:
    from engine.versions import tool_version

    return f"badnet-inspector {tool_version()}"


def build_parser(commands) -> argparse.ArgumentParser:
    """``commands``: the module whose ``cmd_*`` functions run each command."""
    parser = Parser(
        prog="badnet-inspector",
        description="Inspect image classifiers for backdoors (BadNets). Without a command, starts the app. "
                    "Every rate is written as a fraction (0.05) or a percent (5%%). With --model, name its data "
                    "too: the bundled demo's faces stand in only for the demo's network.",
    )
    parser.add_argument("--version", action="version", version=version_text())
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress and no notes (warnings still show)")
    parser.set_defaults(func=commands.cmd_app)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)

    def common(p, json_help: str | None = None):
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show a traceback on errors")
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="no progress and no notes (warnings still show)")
        p.add_argument("--trust-model", action="store_true",
                       help="allow a model file to run its own code (Lambda layers, custom objects)")
        if json_help is not None:
            p.add_argument("--json", action="store_true", help=escaped(json_help + " (docs/formats.md)"))

    def command(name, func, help_text, json_help: str | None = None):
        p = sub.add_parser(name, help=escaped(help_text), description=escaped(help_text))
        common(p, json_help)
        p.set_defaults(func=func)
        return p

    def scale_option(p, default):
        p.add_argument("--scale", choices=("1/255", "raw", "auto"), default=default,
                       help="input scaling: 1/255 (CSAW 2020), raw 0..255 (CSAW lab), or auto "
                       "(pick the one with higher clean accuracy on labelled data)" +
                       (f"; default {default}" if default else ""))

    def model_option(p, what="the BadNet"):
        p.add_argument("--model", help=f"{what} (default: the bundled demo, with its data; a model of your own "
                                       "needs its data named too)")

    def clean_option(p, what="clean data (HDF5, .npz, image folder)"):
        p.add_argument("--clean", help=f"{what}; required with --model (default with the demo: its validation faces)")

    def poisoned_option(p, what=""):
        p.add_argument("--poisoned", action="append", metavar="PATH:TARGET",
                       help="a poisoned set and its target class (repeatable)" + what)

    def sample(p, name, what, default_text, default=None):
        p.add_argument(name, type=sample_option, default=default, metavar="N|all",
                       help=escaped(f"{what}: N drawn at random (seeded), or all (default {default_text})"))

    detector_names = ", ".join(DETECTORS)

    p = command("gui", commands.cmd_app, "open the window (the same as no command), optionally on given files")
    p.add_argument("--model", help="a BadNet (default: the bundled demo, with its data)")
    p.add_argument("--clean", help="clean data")
    poisoned_option(p)
    p.add_argument("--calibration", help="a calibration JSON to load")
    p.add_argument("--screenshot", metavar="OUT.png",
                   help="load, calibrate, save the whole window as a PNG and exit (works headless)")

    p = command("info", commands.cmd_info, "show a model's format, input shape, classes, layers and fingerprint",
                "print the facts as one JSON object")
    p.add_argument("model", nargs="?", metavar="MODEL", help="the model (default: the bundled demo's)")

    p = command("predict", commands.cmd_predict, "top class and confidence for images, folders or HDF5 sets",
                "one JSON object per image, one per line")
    p.add_argument("--model", help="the model (default: the bundled demo's, with its images)")
    scale_option(p, "1/255")
    p.add_argument("paths", nargs="*", type=Path, metavar="IMAGE_OR_DIR",
                   help="images, folders or HDF5 sets (default with the demo: its images)")

    p = command("calibrate", commands.cmd_calibrate, "learn per-class thresholds on clean data",
                "print the calibration's summary as one JSON object")
    model_option(p)
    clean_option(p)
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD)
    p.add_argument("--frr", type=rate_option("--frr"), default=DEFAULT_FRR, metavar="RATE",
                   help=escaped(f"target false-rejection rate, as 0.05 or 5% (default {100 * DEFAULT_FRR:g}%)"))
    p.add_argument("--min-samples", type=non_negative_int,
                   help="classes with fewer clean images use the pooled threshold "
                   "(default: 1/frr, at least 5; 20 at 5%%)")
    sample(p, "--sample", "clean images to calibrate on",
           "as many as the rate needs: 1168 at 5%, whose false rejection lies in 3.8..6.3% with 95% confidence")
    p.add_argument("--detector", choices=tuple(DETECTORS), default=DEFAULT_DETECTOR,
                   help=f"which detector to calibrate ({detector_names}; default {DEFAULT_DETECTOR})")
    add_detector_settings(p)
    renamed(p, "--alpha", "--blend-weight", "STRIP's weight of the clean image in a blend")
    scale_option(p, "1/255")
    p.add_argument("-o", "--output", required=True, metavar="CALIBRATION.json")

    p = command("score", commands.cmd_score, "accuracy, attack success and detection figures on data sets",
                "print every set's figures as one JSON object")
    p.add_argument("--model", help="the model (default: the calibration's, or the demo BadNet)")
    defense = p.add_mutually_exclusive_group()
    defense.add_argument("--calibration", action="append", metavar="CAL.json",
                         help="a calibration JSON written by 'calibrate'; repeat to flag when any detector flags")
    defense.add_argument("--repaired", help="a repaired-network bundle written by 'prune' or 'repair' (repaired.json)")
    defense.add_argument("--nplus1", metavar="MODEL",
                         help="a hand-made N+1 network whose last class means poisoned (e.g. the report's "
                         "*_processed_model.h5); with --model, judged beside that BadNet")
    p.add_argument("--clean", help="labelled clean data (with the demo and no set named: its test faces)")
    poisoned_option(p)
    renamed(p, "--data", "--clean PATH or --poisoned PATH:TARGET", "as every other command names a set")
    renamed(p, "--target", "--poisoned PATH:TARGET", "as every other command names a set")
    scale_option(p, None)

    p = command("eval", commands.cmd_eval, "CSAW verdicts: one line per image, <path>\\t<label>, label N = poisoned",
                "one JSON object per image, one per line")
    defense = p.add_mutually_exclusive_group(required=True)
    defense.add_argument("--calibration", action="append", metavar="CAL.json",
                         help="a calibration JSON written by 'calibrate'; repeat to flag when any detector flags")
    defense.add_argument("--repaired", help="a repaired-network bundle written by 'prune' or 'repair' (repaired.json)")
    defense.add_argument("--nplus1", metavar="MODEL",
                         help="a hand-made N+1 network whose last class means poisoned (e.g. the report's "
                         "*_processed_model.h5)")
    p.add_argument("--model", help="the model, if it moved since calibration (its fingerprint must match)")
    p.add_argument("paths", nargs="*", type=Path, metavar="IMAGE_OR_DIR",
                   help="images, folders or HDF5 sets (default with the demo's network: its images)")
    scale_option(p, None)

    p = command("compare", commands.cmd_compare, "compare detectors on clean data against poisoned sets: "
                "ROC AUC and detection at fixed false-rejection rates", "print every result as one JSON object")
    model_option(p)
    clean_option(p)
    poisoned_option(p, "; with --model, at least one")
    p.add_argument("--detectors", default=",".join(DETECTORS),
                   help=f"comma-separated, from {detector_names} (default: all)")
    add_detector_settings(p)
    renamed(p, "--alpha", "--blend-weight", "STRIP's weight of the clean image in a blend")
    p.add_argument("--frr", type=rates_option("--frr"), default=DEFAULT_FRRS, metavar="RATES",
                   help="false-rejection rates to report detection at, as 1%%,5%% or 0.01,0.05 (default 1%%,5%%)")
    p.add_argument("--roc-csv", metavar="OUT.csv", help="also write every ROC curve as CSV")
    p.add_argument("--repaired", action="append", metavar="BUNDLE.json",
                   help="also judge with this repaired network (fine-pruning, unlearning, magnitude pruning, N+1); "
                   "repeatable")
    p.add_argument("--nplus1", action="append", metavar="MODEL",
                   help="also judge with this hand-made N+1 network (its last class means poisoned); repeatable")
    scale_option(p, "1/255")

    def repair_options(p, cls):
        """A repair's own settings (from its declaration) and what every repair takes."""
        common(p, "print the outcome as one JSON object")
        model_option(p)
        clean_option(p, "labelled clean data")
        poisoned_option(p)
        if cls.uses_scan:
            p.add_argument("--scan", metavar="SCANDIR", help="a trigger scan's folder (default: scan first)")
        for s in cls.settings:
            if s.shown:
                p.add_argument(s.option, dest=f"setting_{s.name}", type=setting_type(s), metavar=s.option[2:].upper(),
                               choices=s.choices or None, help=escaped(setting_help(s)))
        if any(s.name == "scan_images" for s in cls.settings):
            renamed(p, "--scan-images", "--scan-sample")
        scale_option(p, "1/255")
        p.add_argument("-o", "--output", required=True, metavar="OUTDIR")
        p.set_defaults(func=commands.cmd_repair, method=cls.name)

    p = sub.add_parser("repair", help="repair a BadNet: make a second network that, beside it, says "
                       "what is poisoned (a bundle for eval/score --repaired and the window)",
                       description="repair a BadNet: make a second network that, beside it, says "
                       "what is poisoned (a bundle for eval/score --repaired and the window)")
    common(p)
    p.set_defaults(func=commands.cmd_repair)
    methods = p.add_subparsers(title="methods", metavar="METHOD", parser_class=Parser, required=True)
    for cls in REPAIRS.values():
        aliases = [old for old, new in ALIASES.items() if new == cls.name]
        repair_options(methods.add_parser(cls.name, aliases=aliases, help=escaped(cls.summary),
                                          description=escaped(cls.summary)), cls)
    p = sub.add_parser("prune", help="the same as 'repair fine-pruning'",
                       description=escaped(REPAIRS["fine-pruning"].summary))
    repair_options(p, REPAIRS["fine-pruning"])

    p = command("scan", commands.cmd_scan, "trigger scan: is this network backdoored, and which classes are "
                "targets? The largest logit margin of every class (MM-BD), the smallest reversed trigger of "
                "the candidates (Neural Cleanse) and the output layer's outlier (data-free), alone and together "
                "under one false-alarm budget, with the probability of a backdoor; saves masks, patterns and PNGs", "print the verdict and the ranked table as one JSON object")
    model_option(p)
    clean_option(p, "clean data (labels not needed; 45-300 faces are enough)")
    sample(p, "--sample", "clean images to scan with", str(SCAN_IMAGES), SCAN_IMAGES)
    renamed(p, "--max-images", "--sample N|all")
    add_scan_settings(p)
    renamed(p, "--alpha", "--false-alarm", "the family-wise false-alarm budget")
    p.add_argument("--fail-on-backdoor", action="store_true",
                   help="exit with code 3 when the verdict is backdoor (for pipelines)")
    scale_option(p, "1/255")
    p.add_argument("-o", "--output", metavar="OUTDIR",
                   help="write scan.json, triggers.npz and PNGs of the flagged classes here")

    p = command("audit", commands.cmd_audit, "one self-contained HTML report of everything found about a network: "
                "the scan's verdict and reversed triggers, the model and data, every detector's ROC and "
                "thresholds, every defense side by side, checked images, how to reproduce",
                "print the audit's findings as one JSON object")
    model_option(p)
    clean_option(p)
    poisoned_option(p)
    p.add_argument("--calibration", action="append", metavar="CAL.json",
                   help="a calibration to report (repeatable; default: the default detector, calibrated here)")
    p.add_argument("--scan", metavar="DIR", help="a scan folder written by 'scan' (default: scan here)")
    sample(p, "--scan-sample", "clean images the scan uses when it runs here", str(SCAN_IMAGES), SCAN_IMAGES)
    sample(p, "--detection-sample", "faces of each set (clean, each poisoned) that per-image detection and the "
           "defenses are measured on", str(DETECTION_IMAGES), DETECTION_IMAGES)
    renamed(p, "--scan-images", "--scan-sample N|all")
    renamed(p, "--detection-images", "--detection-sample N|all")
    p.add_argument("--repaired", action="append", metavar="R.json",
                   help="a repaired-network bundle to put beside the detectors (repeatable)")
    p.add_argument("--images", action="append", type=Path, metavar="IMAGE_OR_DIR",
                   help="images to check and show (repeatable)")
    scale_option(p, "1/255")
    p.add_argument("-o", "--output", required=True, metavar="REPORT.html")

    p = command("explain", commands.cmd_explain, "where is the trigger: a map of the pixels that drive each image's "
                "predicted class (random-mask sensitivity, RISE), and a scan's reversed-trigger mask for that class",
                "print one JSON object per image, one per line")
    p.add_argument("paths", nargs="+", type=Path, metavar="IMAGE", help="image files, folders or a small HDF5 set")
    p.add_argument("--model", help="the model (default: the bundled demo's)")
    p.add_argument("--scan", metavar="SCANDIR", help="a scan's folder: also draw its mask for the predicted class")
    scale_option(p, "1/255")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png")

    return parser
