"""The x axes a detector's scores are shown on, as plain maths (no Qt): linear, stretched near 1
(-log10(1 - confidence), which spreads 0.99, 0.9999 and 0.999999 apart) and stretched near 0
(log10 of p-values); each maps raw scores to the axis and back and writes its tick labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.detectors import DETECTORS


@dataclass(frozen=True)
class ScoreAxis:
    """How raw scores map to the x axis ([lo, hi] in display units)."""

    label: str
    lo: float
    hi: float

    def to_display(self, raw):
        return raw

    def to_raw(self, shown):
        return shown

    def tick_text(self, shown: float) -> str:
        return f"{shown:g}"

    def raw_range(self) -> tuple[float, float]:
        """The slider's range, in raw scores."""
        return float(self.to_raw(self.lo)), float(self.to_raw(self.hi))


class LogConfidenceAxis(ScoreAxis):
    """x = -log10(1 - confidence): 1 is 0.9, 2 is 0.99, 4 is 0.9999; ticks say the confidence."""

    FLOOR = 1e-7

    def to_display(self, raw):
        return -np.log10(np.clip(1.0 - np.asarray(raw, dtype=np.float64), self.FLOOR, 1.0))

    def to_raw(self, shown):
        return 1.0 - 10.0 ** (-np.asarray(shown, dtype=np.float64))

    def tick_text(self, shown: float) -> str:
        if shown <= 0:
            return "0"
        if abs(shown - round(shown)) < 1e-9:
            return "0." + "9" * int(round(shown))
        return f"{float(self.to_raw(shown)):.{max(1, int(np.ceil(shown)))}f}"

    def raw_range(self) -> tuple[float, float]:
        return 0.0, 1.0


class LogLowAxis(ScoreAxis):
    """x = log10(score) for scores in (0, 1] that pile up near 0 (p-values): -3 is 0.001."""

    FLOOR = 1e-5

    def to_display(self, raw):
        return np.log10(np.clip(np.asarray(raw, dtype=np.float64), self.FLOOR, 1.0))

    def to_raw(self, shown):
        return 10.0 ** np.asarray(shown, dtype=np.float64)

    def tick_text(self, shown: float) -> str:
        return f"{float(self.to_raw(shown)):.{max(0, int(np.ceil(-shown)))}f}"

    def raw_range(self) -> tuple[float, float]:
        return 0.0, 1.0


AXES = {
    "confidence (near 1, log)": LogConfidenceAxis("top-1 confidence (stretched near 1)", 0.0, 7.0),
    "confidence (linear)": ScoreAxis("top-1 confidence", 0.0, 1.0),
}
ENTROPY_AXIS = "entropy (bits)"


def axes_for(detector: str, scores: list[np.ndarray] = ()) -> dict[str, ScoreAxis]:
    """The x axes a detector's scores can be shown on, from what the detector declares: scores
    that pile up near 1 get the stretched axis too; an open-ended scale (STRIP's entropy) ends
    a little above the largest score seen."""
    cls = DETECTORS.get(detector)
    if cls is None or cls.scale.stretched:
        return AXES
    scale = cls.scale
    finite = [v[np.isfinite(v)] for v in scores]
    top = max([float(np.max(v)) for v in finite if len(v)] + [scale.lo + 1.0])
    hi = scale.hi if scale.hi is not None else float(np.ceil(top * 1.1 * 4) / 4)
    name = f"{scale.unit or scale.short} (linear)" if scale.unit != "bits" else ENTROPY_AXIS
    linear = {name: ScoreAxis(f"{scale.label}; low = suspicious", scale.lo, hi)}
    if scale.near_one:  # e.g. Transplant on 1283 classes: clean faces at 0.999..1, triggers far below
        linear[f"{scale.short} (near 1, log)"] = LogConfidenceAxis(
            f"{scale.label} (stretched near 1); low = suspicious", 0.0, 7.0)
    if not scale.stretched_low:
        return linear
    low = LogLowAxis(f"{scale.label} (stretched near 0); low = suspicious", np.log10(LogLowAxis.FLOOR), 0.0)
    return {f"{scale.short} (near 0, log)": low, **linear}
