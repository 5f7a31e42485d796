"""Every command is one request: said as a command line, parsed back into the same request; the
CLI's commands are "parse, one engine call, print"; the demo's defaults live in one place."""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest

from cli import commands
from engine import workflow
from engine.report import AuditRequest, reproduce_lines
from engine.scan import SCAN_IMAGES, ScanSettings
from engine.workflow import Defense

import main

ROOT = Path(__file__).resolve().parents[1]
OWN = workflow.Sources(Path("net.h5"), Path("clean.h5"), ((Path("sun glasses.h5"), 3), (Path("brows.h5"), 7)))

REQUESTS = [
    workflow.InfoRequest(),
    workflow.PredictRequest((Path("a.png"), Path("faces"))),
    workflow.CalibrateRequest(output=Path("cal.json")),
    workflow.CalibrateRequest.from_options("strip", {"blends": 12, "alpha": 0.4}, method="min",
                                           frr=0.02, min_samples=9, sample=0, output=Path("c.json")),
    workflow.CalibrateRequest.from_options("combined", {"members": "transplant,strip", "blends": 8},
                                           output=Path("c.json")),
    workflow.ScoreRequest(Defense((Path("a.json"), Path("b.json")))),
    workflow.ScoreRequest(Defense(repaired=Path("r/repaired.json"))),
    workflow.EvalRequest(Defense(nplus1=Path("n1.h5")), (Path("x.png"),)),
    workflow.CompareRequest(("confidence", "strip"), workflow.detector_params(["confidence", "strip"], {"blends": 6}),
                            (0.01, 0.05, 0.1), Path("roc.csv"), (Path("r.json"),), (Path("n1.h5"),)),
    workflow.CompareRequest(),
    workflow.ScanRequest(120, ScanSettings.from_params({"margin_candidates": 5, "alpha": 0.01}), Path("out")),
    workflow.ScanRequest(0),
    workflow.RepairRequest("fine-pruning", {"fine_tune_epochs": 2}, Path("rep")),
    workflow.RepairRequest("unlearning", {}, Path("rep"), Path("scan-out")),
    workflow.ExplainRequest((Path("x.png"),), Path("scan-out"), Path("maps.png")),
    AuditRequest(Path("r.html"), (Path("c.json"),), None, (Path("r.json"),), (Path("faces"),), 45, 0),
]


def parsed(words: list[str]):
    """The request and files a command line parses into, as the CLI builds them."""
    assert words[0] == workflow.requests.COMMAND
    args = main.build_parser().parse_args(words[1:])
    name = words[1]
    return commands.REQUESTS[name](args), commands.sources(args), getattr(args, "scale", None)


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("files", [workflow.Sources(), OWN], ids=["demo", "own"])
def test_a_request_said_as_a_command_line_parses_back_into_itself(request_, files):
    if request_.positional:  # info, predict, eval, explain: a model only, no data sets
        files = workflow.Sources(files.model)
    elif not request_.takes_poisoned:
        files = workflow.Sources(files.model, files.clean)
    scaling = None if isinstance(request_, workflow.InfoRequest) else "raw"
    words = workflow.command_line(request_, files, scaling)
    again, files_again, scale_again = parsed(shlex.split(shlex.join(words)))
    assert again == request_, words
    assert files_again == files and scale_again == scaling


def test_the_reports_reproduce_lines_are_requests_said_by_file_name():
    audit = AuditRequest(Path("/data/out/r.html"), (Path("/data/cal.json"),), Path("/data/scan-out"), (),
                         (Path("/data/faces"),), 100, 500)
    full = workflow.Sources(Path("/data/net.h5"), Path("/data/clean.h5"), ((Path("/data/sun.h5"), 3),))
    lines = reproduce_lines(audit, full, "1/255")
    assert [shlex.split(line)[1] for line in lines] == ["scan", "compare", "calibrate", "audit"]
    assert not any("/data" in line for line in lines)  # names only: a report travels
    requests = [parsed(shlex.split(line)) for line in lines]
    for _, files, scaling in requests:
        assert files.model == Path("net.h5") and files.clean == Path("clean.h5") and scaling == "1/255"
    assert requests[1][1].poisoned == ((Path("sun.h5"), 3),)
    # With a scan folder named, the line does not repeat the scan's sample (the parser's default stands).
    assert requests[3][0] == AuditRequest(Path("r.html"), (Path("cal.json"),), Path("scan-out"), (),
                                          (Path("faces"),), SCAN_IMAGES, 500)


def _calls(fn: ast.FunctionDef, name: str) -> int:
    return sum(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name for n in ast.walk(fn))


def test_each_command_is_parse_one_engine_call_print():
    """Every ``cmd_*`` but the window's builds its request and makes one ``run`` call; none
    drives a job of its own or opens files itself."""
    tree = ast.parse((ROOT / "cli" / "commands.py").read_text())
    cmds = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name.startswith("cmd_") and f.name != "cmd_app"]
    assert len(cmds) >= 10
    for fn in cmds:
        assert _calls(fn, "run") == 1, fn.name
        assert _calls(fn, "drive") == 0, fn.name
        names = {n.attr for n in ast.walk(fn) if isinstance(n, ast.Attribute)}
        assert not names & {"open_model", "read_set", "read_images", "load_defense", "load_scan", "load"}, fn.name


def test_the_demos_defaults_live_in_one_place():
    """Only engine/demo (which defines them) and the requests' Sources name the demo's files."""
    users = set()
    for folder in ("cli", "gui", "engine"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("engine/demo/"):
                continue
            if "DEMO_" in path.read_text():
                users.add(rel)
    assert users == {"engine/workflow/requests.py"}
    assert "DEMO_" not in (ROOT / "main.py").read_text()


def test_a_model_of_ones_own_without_images_is_told_to_name_them(capsys, tmp_path):
    import shutil

    from engine.demo import DEMO_MODEL

    mine = tmp_path / "mine.h5"
    shutil.copy(DEMO_MODEL, mine)
    code = main.main(["predict", "--model", str(mine)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == f"error: {mine}: IMAGE_OR_DIR missing: name the images to check (the demo's " \
        "images stand in only for the demo's network)"


class _NoDefense:
    """A stand-in repaired network made at input scaling ``raw``: it flags nothing and answers what
    the BadNet answers at its own scaling (so its figures show which scaling it was judged at)."""

    scaling, poisoned_label, choice, repaired_path = "raw", 50, {}, "stand-in.h5"

    def describe(self):
        return "stand-in", "", ()

    def check_model(self, net):
        pass

    def judge(self, net, images):
        from types import SimpleNamespace

        from engine.scoring import predict

        preds = yield from predict(net, images, self.scaling)
        return SimpleNamespace(labels=preds.labels)


def test_a_repaired_network_of_another_scaling_is_judged_at_its_own(demo_net, small_demo):
    """Once the CLI refused such a network and the window left it out; now both judge it as it is
    used, at its own scaling, and its row says so."""
    from engine.io.datasets import PoisonedSet
    from engine.progress import run as drive
    from engine.scoring import predict

    clean = workflow.read_set(small_demo["clean"], demo_net)
    sets = [PoisonedSet(workflow.read_set(small_demo["poisoned"], demo_net), 0)]
    rows = drive(workflow.repairs_job(demo_net, clean, sets, [_NoDefense()], "1/255"))
    assert [r.kind for r in rows] == ["none", "repaired"]
    row = rows[1]
    assert "input scaling raw" in row.note
    raw = drive(predict(demo_net, sets[0].images, "raw")).labels
    assert row.sets[sets[0].name].n_sent == int((raw == 0).sum())
    assert row.sets[sets[0].name].attack_success == pytest.approx(float((raw == 0).mean()))
    raw_clean = drive(predict(demo_net, clean, "raw")).labels
    scaled_clean = drive(predict(demo_net, clean, "1/255")).labels
    assert row.clean_accuracy == pytest.approx(float((raw_clean == clean.labels).mean()))
    assert rows[0].clean_accuracy == pytest.approx(float((scaled_clean == clean.labels).mean()))
    assert (raw_clean != scaled_clean).any()  # the two scalings answer differently on these faces
