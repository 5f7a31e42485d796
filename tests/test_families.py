"""Which attack families a detector was measured on: the attack zoo's record, read strictly, and
shown only for the settings it was measured with."""

from __future__ import annotations

import json

import pytest

from engine.demo import attacks
from engine.detectors import make_detector
from engine.evaluation import families


def record(detection: float = 0.97) -> dict:
    return {
        "schema": families.SCHEMA,
        "setting": "test",
        "families": {"patch": {"title": "Patch"}, "blended": {"title": "Blended"}},
        "detectors": {"combined": {"patch": {"detection": 1.0, "frr": 0.05, "auc": 1.0},
                                   "blended": {"detection": detection, "frr": 0.04, "auc": 0.99}}},
    }


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    path = tmp_path / "attack_zoo.json"
    monkeypatch.setattr(families, "RECORD", path)
    families.load.cache_clear()
    yield path
    families.load.cache_clear()


def test_reach_counts_the_families_held_and_names_the_others(recorded):
    families.write(record(detection=0.5))
    reach = families.reach("combined", make_detector("combined").params())
    assert reach.count_text() == "1 of 2 families"
    assert [f.name for f in reach.held] == ["patch"] and "blended 50 %" in reach.short_text()
    assert "docs/attacks.md" in reach.text()


def test_other_settings_were_not_measured(recorded):
    families.write(record())
    assert families.reach("combined") is not None
    assert families.reach("combined", make_detector("combined", {"members": "transplant,strip"}).params()) is None
    assert families.reach("strip") is None  # no figures recorded for it


@pytest.mark.parametrize("damage, left", [
    (lambda r: r.update(schema="other/1"), None),
    (lambda r: r["detectors"]["combined"]["patch"].update(detection=float("nan")), ["blended"]),
    (lambda r: r["detectors"]["combined"]["patch"].update(detection=1.5), ["blended"]),
    (lambda r: r["detectors"]["combined"].update(sig={"detection": 0.5, "frr": 0.05}), ["patch", "blended"]),
])
def test_a_damaged_record_says_nothing_rather_than_something_wrong(recorded, damage, left):
    raw = record()
    damage(raw)
    recorded.write_text(json.dumps(raw))  # NaN is written as the bare word NaN, which Python reads
    reach = families.reach("combined")
    assert (None if reach is None else [f.name for f in reach.figures]) == left


def test_a_missing_or_unreadable_record_is_empty(recorded):
    assert families.reach("combined") is None
    recorded.write_text("{not json")
    families.load.cache_clear()
    assert families.reach("combined") is None


def test_the_committed_record_covers_every_family_and_the_default():
    families.load.cache_clear()
    reach = families.reach("combined", make_detector("combined").params())
    assert reach is not None, "python bench/attacks.py --record"
    assert {f.name for f in reach.figures} == set(attacks.FAMILIES)
    assert all(0 <= f.frr <= 0.15 for f in reach.figures)
