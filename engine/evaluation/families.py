"""Which attack families a detector has been measured on, and what it caught there.

A comparison on the user's poisoned sets measures one attack: whatever made those sets, which
the tool cannot know. What a detector does on the families it has not been shown comes from the
attack zoo (:mod:`engine.demo.attack_zoo`, docs/attacks.md): ``python bench/attacks.py --record``
writes each detector's figures at 5 % into ``attack_zoo.json`` beside this module, and the
window's *Compare detectors* tab and the audit report read them from here. Only a detector with
its default settings has figures: other settings were not measured.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SCHEMA = "badnet-inspector/attack-zoo-reach/1"
RECORD = Path(__file__).with_name("attack_zoo.json")
HOLDS = 0.95  # the detection a family must reach to count as caught
DOCS = "docs/attacks.md"


@dataclass(frozen=True)
class FamilyFigure:
    """One detector's figures on one attack family of the zoo, at 5 % false rejection."""
    name: str  # the zoo member: "blended"
    title: str  # "Blended (Chen et al., 2017)"
    detection: float  # at 5 % false rejection, over the triggered faces sent to the target
    frr: float  # measured on clean faces the threshold was not set on


@dataclass(frozen=True)
class Reach:
    """A detector's figures on every family of the zoo."""

    detector: str
    figures: tuple[FamilyFigure, ...]
    setting: str

    @property
    def held(self) -> tuple[FamilyFigure, ...]:
        return tuple(f for f in self.figures if f.detection >= HOLDS)

    @property
    def short(self) -> tuple[FamilyFigure, ...]:
        return tuple(f for f in self.figures if f.detection < HOLDS)

    def count_text(self) -> str:
        """The count: 8 of 10 families."""
        return f"{len(self.held)} of {len(self.figures)} families"

    def caught_text(self) -> str:
        """What it caught: 95 %+ of 8 of 10 families, named."""
        return (f"caught {100 * HOLDS:.0f} %+ of the working triggered faces of {self.count_text()} "
                f"({', '.join(f.name for f in self.held) or 'none'})")

    def short_text(self) -> str:
        """The families short of 95 %, with their figures (empty when every family holds)."""
        return ("short of it: " + ", ".join(f"{f.name} {100 * f.detection:.0f} %" for f in self.short)
                if self.short else "")

    def text(self) -> str:
        """One sentence: the families caught at 95 % or more, and the others with their figures."""
        short = self.short_text()
        return f"on the attack zoo ({DOCS}), at 5 % false rejection, it {self.caught_text()}" + (f"; {short}" if short else "")


def write(payload: dict) -> None:
    """Replace the record whole (bench/attacks.py --record)."""
    from engine.io.files import atomic_open

    with atomic_open(RECORD) as fh:
        fh.write(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    load.cache_clear()


@lru_cache(maxsize=1)
def load() -> dict:
    """The record, checked; an empty one when it is missing or damaged (the tool then says nothing
    of families rather than something wrong)."""
    try:
        raw = json.loads(RECORD.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        return {}
    families, detectors = raw.get("families"), raw.get("detectors")
    if not isinstance(families, dict) or not isinstance(detectors, dict):
        return {}

    def rate(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1

    clean = {}
    for name, rows in detectors.items():
        if not isinstance(rows, dict):
            continue
        ok = {f: r for f, r in rows.items()
              if f in families and isinstance(r, dict) and rate(r.get("detection")) and rate(r.get("frr"))}
        if ok:
            clean[name] = ok
    return {"families": families, "detectors": clean, "setting": str(raw.get("setting", ""))}


def reach(detector: str, params: dict | None = None) -> Reach | None:
    """The detector's figures on the zoo, or None when it has none or ``params`` are not its
    defaults (those settings were not measured)."""
    record = load()
    rows = record.get("detectors", {}).get(detector)
    if not rows:
        return None
    if params is not None:
        from engine.detectors import make_detector

        from engine.errors import InputError

        try:
            defaults = make_detector(detector).params()
        except InputError:  # a detector no longer registered has no figures
            return None
        if _normalised(params) != _normalised(defaults):
            return None
    families = record["families"]
    figures = tuple(
        FamilyFigure(name, str(families[name].get("title", name)) if isinstance(families[name], dict) else name,
                     float(r["detection"]), float(r["frr"]))
        for name, r in rows.items())
    return Reach(detector, figures, record.get("setting", ""))


def _normalised(params: dict) -> str:
    """Settings compared as JSON (tuples and lists alike; the seed, which only draws, left out)."""
    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k != "seed"}
        if isinstance(v, (list, tuple)):
            return [strip(x) for x in v]
        return v

    return json.dumps(strip(params), sort_keys=True, default=str)
