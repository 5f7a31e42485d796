"""The combined detector: members' scores as clean-data p-values, combined by Fisher's rule (or the
smallest weighted one), one threshold for one false-rejection budget."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import progress, workflow
from engine.detectors.calibration import AnyOf, Calibration
from engine.demo import DEMO_CLEAN_TEST, DEMO_POISONED, DEMO_SETS
from engine.detectors import make_detector
from engine.errors import InputError
from engine.scoring import predict


@pytest.fixture(scope="module")
def combined_5(demo_net, demo_clean):
    cal, _ = progress.run(workflow.calibrate_job(demo_net, demo_clean, "1/255", make_detector("combined"),
                                                 "quantile", 0.05))
    return cal


def test_p_values_are_ranks_with_an_exponential_lower_tail():
    d = make_detector("combined", {"members": "strip,scaleup"})
    d.clean_scores = {"strip": np.arange(1.0, 11.0), "scaleup": np.linspace(0.1, 1.0, 10)}
    # Ranks above the 3rd lowest clean score (j-th lowest of 10: j / 11), interpolated.
    p = d.p_values("strip", np.array([3.0, 5.0, 5.5, 10.0, 99.0]))
    np.testing.assert_allclose(p, [3 / 11, 5 / 11, 5.5 / 11, 10 / 11, 1.0])
    # Below it, an exponential tail whose scale is the mean distance of the lowest scores below
    # it (here (2 + 1 + 0) / 3 * 3 / 2 = 1.5): far-below scores get far smaller p-values than 1/11.
    below = d.p_values("strip", np.array([1.0, 0.0, -20.0]))
    np.testing.assert_allclose(below, 3 / 11 * np.exp(-np.array([2.0, 3.0, 23.0]) / 1.5))
    assert below[-1] < 1e-6
    grid = np.linspace(-5, 12, 500)
    assert np.all(np.diff(d.p_values("strip", grid)) >= 0)  # monotone, continuous at the join
    # Ties under the join (every clean score the same) still give a monotone step, no NaN.
    d.clean_scores["scaleup"] = np.ones(10)
    tied = d.p_values("scaleup", np.array([0.5, 0.999999, 1.0, 2.0]))
    assert np.all(np.isfinite(tied)) and tied[0] < 1e-9 and tied[2] == pytest.approx(10 / 11)


def test_fisher_rule_is_the_chi_square_tail_of_the_product():
    from engine.detectors.combined import fisher

    p = np.array([1e-12, 0.01, 0.05, 0.3, 1.0])
    np.testing.assert_allclose(fisher([p]), p, rtol=1e-12)  # one member: its own p-value
    # Two members: P(chi2_4 >= x) = exp(-x/2) (1 + x/2), written out for p1 = p2 = 0.05.
    x = -2 * 2 * np.log(0.05)
    np.testing.assert_allclose(fisher([np.array([0.05]), np.array([0.05])]), np.exp(-x / 2) * (1 + x / 2))
    # Monotone in each member, and one very small p-value outweighs an ordinary other one.
    grid = np.linspace(1e-6, 1, 50)
    assert np.all(np.diff(fisher([grid, np.full(50, 0.5)])) > 0)
    assert fisher([np.array([1e-9]), np.array([0.8])])[0] < 1e-7
    # Two moderately low p-values count more together than either does alone under the union.
    assert fisher([np.array([0.02]), np.array([0.02])])[0] < 0.01 < 2 * 0.02
    zero = fisher([np.array([0.0]), np.array([0.5])])[0]
    assert np.isfinite(zero) and 0 <= zero < 1e-290  # no NaN at p = 0


def test_score_is_fishers_rule_over_member_p_values(demo_net, demo_test, combined_5):
    from engine.detectors.combined import fisher

    d = combined_5.make_detector()
    assert d.params()["members"] == ["transplant", "scaleup"] and d.params()["rule"] == "fisher"
    assert "weights" not in d.params()  # Fisher's rule weighs members alike: no weights to show or save
    few = workflow.read_set(DEMO_POISONED, demo_net).subset(np.arange(40))  # the rule, not the figures
    got = progress.run(d.score(demo_net, few, "1/255")).values
    each = progress.run(d.member_scores(demo_net, few, "1/255"))
    expected = fisher([d.p_values(n, each[n].values) for n in ("transplant", "scaleup")])
    np.testing.assert_allclose(got, expected)


def test_bonferroni_rule_is_the_smallest_weighted_p_value(demo_net, demo_clean):
    d = make_detector("combined", {"members": "transplant,strip", "rule": "bonferroni"})
    assert d.params()["weights"] == pytest.approx([2 / 3, 1 / 3])  # each member's own weight
    fit_on = demo_clean.subset(np.arange(60))
    progress.run(d.fit(demo_net, fit_on, "1/255"))
    few = workflow.read_set(DEMO_POISONED, demo_net).subset(np.arange(40))
    got = progress.run(d.score(demo_net, few, "1/255")).values
    each = progress.run(d.member_scores(demo_net, few, "1/255"))
    expected = np.minimum(1.0, np.minimum(d.p_values("transplant", each["transplant"].values) / (2 / 3),
                                          d.p_values("strip", each["strip"].values) / (1 / 3)))
    np.testing.assert_allclose(got, expected)


def test_a_file_saved_before_fishers_rule_keeps_the_rule_its_thresholds_were_set_with(combined_5, tmp_path):
    raw = combined_5.to_dict()
    del raw["detector_params"]["rule"]
    raw["model"]["path"] = combined_5.model_path
    path = tmp_path / "old.json"
    path.write_text(json.dumps(raw))
    d = Calibration.load(path).make_detector()
    assert d.rule == "bonferroni" and d.params()["weights"] == pytest.approx([2 / 3, 1 / 3])


@pytest.mark.slow
def test_one_budget_on_held_out_clean_faces_unlike_any_of(demo_net, demo_clean, combined_5):
    """Calibrated at 5% on the validation faces, measured on the test faces it never saw, and on
    both triggers, counting the faces the BadNet sends to each target; the 'any detector flags'
    rule over the same members at 5% each rejects more."""
    test = workflow.read_set(DEMO_CLEAN_TEST, demo_net)
    frr = progress.run(combined_5.judge(demo_net, test)).flagged.mean()
    assert frr <= 0.075  # measured: 3.7% (11 of 300; expected about 5%, one binomial sd is 1.3%)
    for path, target in DEMO_SETS:
        poisoned = workflow.read_set(path, demo_net)
        sent = progress.run(predict(demo_net, poisoned, "1/255")).labels == target
        detected = progress.run(combined_5.judge(demo_net, poisoned)).flagged[sent].mean()
        assert detected >= 0.95, path.name  # measured: 99.0% sunglasses, 99.5% eyebrows
    parts = [progress.run(workflow.calibrate_job(demo_net, demo_clean, "1/255", make_detector(n), "quantile", 0.05))[0]
             for n in ("transplant", "scaleup")]
    either = progress.run(AnyOf(parts).judge(demo_net, test)).flagged.mean()
    assert either > frr + 0.02  # measured: the union rejects 8.0%, the combined 3.7%


def test_saved_and_loaded_it_gives_the_same_verdicts(demo_net, combined_5, tmp_path):
    path = tmp_path / "combined.json"
    combined_5.save(path)
    raw = json.loads(path.read_text())
    assert raw["detector_params"]["members"] == ["transplant", "scaleup"]
    assert set(raw["detector_state"]["clean_scores"]) == {"transplant", "scaleup"}
    back = Calibration.load(path)
    poisoned = workflow.read_set(DEMO_POISONED, demo_net).subset(np.arange(40))
    np.testing.assert_array_equal(progress.run(back.judge(demo_net, poisoned)).labels,
                                  progress.run(combined_5.judge(demo_net, poisoned)).labels)
    assert "members transplant/scaleup, rule fisher" in back.summary()


def test_damaged_state_is_refused(combined_5, tmp_path):
    import base64

    raw = combined_5.to_dict()
    raw["detector_state"]["clean_scores"]["scaleup"] = base64.b64encode(np.array([3.0, 1.0]).tobytes()).decode()
    raw["model"]["path"] = combined_5.model_path
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError, match="not sorted finite numbers"):
        Calibration.load(path)


def test_a_member_whose_state_is_missing_is_refused_on_loading(combined_5, tmp_path):
    """Without Transplant's host faces the calibration would load as an unfitted detector and
    fail only at the next scoring, naming no file; it must be refused when it is opened."""
    raw = combined_5.to_dict()
    del raw["detector_state"]["members"]["transplant"]
    raw["model"]["path"] = combined_5.model_path
    path = tmp_path / "no_hosts.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError, match="what the Transplant detector learnt on clean data is missing") as err:
        Calibration.load(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("params, message", [
    ({"members": "strip,strip"}, "name a detector twice"),
    ({"members": "strip,combined"}, "'combined' is not a detector to combine"),
    ({"members": "strip,nope"}, "'nope' is not a detector to combine"),
    ({"members": "strip,scaleup", "weights": "1"}, "2 members but 1 weights"),
    ({"rule": "max"}, "rule 'max': choose fisher or bonferroni"),
    ({"weights": "1,-1"}, r"must be in \(0, 1e\+06\]"),
])
def test_bad_settings(params, message):
    with pytest.raises(InputError, match=message):
        make_detector("combined", params)


def test_weights_tilt_the_rule(demo_net):
    d = make_detector("combined", {"weights": "3,1", "rule": "bonferroni"})
    assert d.params()["weights"] == [0.75, 0.25]
    d = make_detector("combined", {"members": "strip,scaleup,confidence", "rule": "bonferroni"})
    assert d.params()["weights"] == pytest.approx([1 / 3] * 3)  # members' own weights: 1 each


@pytest.mark.slow
def test_compare_includes_every_detector_by_default(capsys):
    import main

    assert main.main(["compare", "--json", "--frr", "5%"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert {r["detector"] for r in results} == {"confidence", "strip", "scaleup", "transplant", "expert", "combined"}
    assert {r["target"] for r in results} == {0, 7}  # the demo's sunglasses and eyebrows sets
    at_5 = {(r["detector"], r["target"]): r["at_frr"][0]["detection"] for r in results}
    for target in (0, 7):
        assert at_5[("combined", target)] >= 0.95  # measured: 99.0% (sunglasses) and 99.5% (eyebrows)
        assert at_5[("confidence", target)] <= 0.05
    assert at_5[("strip", 7)] <= 0.5  # the lesson of the demo: STRIP misses the small trigger


def test_real_csaw_sample(csaw):
    net = workflow.open_model(csaw / "models" / "sunglasses_bd_net.h5")
    clean, sets = workflow.open_sets(net, csaw / "clean_sample.h5", [(csaw / "sunglasses_sample.h5", 0)])
    (r,) = progress.run(workflow.compare_job(net, clean, sets, [make_detector("combined")], "1/255", (0.05,)))
    assert r.auc >= 0.95  # measured: 1.0 on the 10 + 10 faces (STRIP alone 0.91)


def test_member_settings_reach_the_members(capsys, tmp_path):
    import main

    out = tmp_path / "c.json"
    assert main.main(["calibrate", "--detector", "combined", "--members", "strip,scaleup", "--blends", "8",
                      "--factors", "2,4", "-o", str(out)]) == 0
    d = Calibration.load(out).make_detector()
    strip, scaleup = d.parts
    assert strip.blends == 8 and len(strip.overlays) == 8 and scaleup.factors == (2.0, 4.0)
    assert main.main(["calibrate", "--detector", "combined", "--members", "strip", "--factors", "2",
                      "-o", str(tmp_path / "x.json")]) == 2
    assert "--factors is a setting of SCALE-UP; add that detector" in capsys.readouterr().err


def test_the_window_passes_member_settings(qtbot):
    from gui.panels import CalibrationPanel
    from gui.session import Session

    session = Session()
    panel = CalibrationPanel(session)
    qtbot.addWidget(panel)
    panel.settings.fields["scaleup"]["factors"].setText("2,4")
    panel.set_detector("combined")
    params = panel.params()
    scaleup = next(p for p in make_detector("combined", params).parts if p.name == "scaleup")
    assert scaleup.factors == (2.0, 4.0)
    session.shutdown()
