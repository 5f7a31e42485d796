"""What a user does, as the CLI and the window both do it, in three parts:

- :mod:`engine.workflow.opening`: open a model, its clean and poisoned sets, a saved defense or scan;
- :mod:`engine.workflow.verdicts`: check images and the rules that give each its verdict;
- :mod:`engine.workflow.jobs`: calibrate, compare, scan, stamp, explain, as jobs with progress;
- :mod:`engine.workflow.requests`: what a user asks for as one plain request, checked once, that
  the CLI and the window both hand to the engine (calibrate, scan, repair; the protocol, the
  files a request runs on and the demo's defaults); :mod:`engine.workflow.inference` (info,
  predict, eval, score, explain) and :mod:`engine.workflow.comparing` (compare) are requests too.

Repairs are :mod:`engine.repairs`' (``repair_job``). Plain values in, engine objects or generators
out; the CLI prints what they return, the window's controllers run them in its worker. Option
parsing (flags and their messages) is the CLI's (:mod:`cli.options`).
"""

from engine.workflow.jobs import (
    DEFAULT_DETECTOR,
    DEFAULT_FRR,
    DEFAULT_METHOD,
    MAX_EXPLAINED,
    calibrate_job,
    compare_job,
    detector_params,
    explain_images,
    make_detectors,
    repairs_job,
    scan_job,
    stamp_and_count,
    write_explanations,
)
from engine.workflow.opening import (
    check_target,
    choose_scaling,
    fit_sets,
    fit_to_model,
    load_defense,
    load_scan,
    open_model,
    open_poisoned,
    open_sets,
    read_images,
    read_set,
    sample_images,
)
from engine.workflow.requests import (CalibrateRequest, RepairRequest, Request, ScanRequest, Sources, command_line,
                                     is_demo_model, run, warn_about)
from engine.workflow.inference import (Defense, EvalRequest, ExplainRequest, InfoRequest, PredictRequest,
                                      ScoreRequest)
from engine.workflow.comparing import CompareOutcome, CompareRequest
from engine.workflow.verdicts import (
    CLEAN,
    NO_VERDICT,
    POISONED,
    VERDICT_SOURCES,
    CheckedImage,
    RowVerdict,
    SetScores,
    VerdictRules,
    check_images,
    check_paths,
    checked_csv,
    score_sets,
)

__all__ = [
    "CLEAN", "CalibrateRequest", "CheckedImage", "CompareOutcome", "CompareRequest", "DEFAULT_DETECTOR",
    "DEFAULT_FRR", "DEFAULT_METHOD", "Defense", "EvalRequest", "ExplainRequest", "InfoRequest", "MAX_EXPLAINED",
    "NO_VERDICT", "POISONED", "PredictRequest", "RepairRequest", "Request", "RowVerdict", "ScanRequest",
    "ScoreRequest", "SetScores", "Sources", "VERDICT_SOURCES", "VerdictRules", "calibrate_job", "check_images",
    "check_paths", "check_target", "checked_csv", "choose_scaling", "command_line", "compare_job",
    "detector_params", "explain_images", "fit_sets", "fit_to_model", "is_demo_model", "load_defense", "load_scan",
    "make_detectors", "open_model", "open_poisoned", "open_sets", "read_images", "read_set", "repairs_job", "run",
    "sample_images", "scan_job", "score_sets", "stamp_and_count", "warn_about", "write_explanations",
]
