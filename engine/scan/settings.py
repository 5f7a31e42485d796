"""How the trigger scan spends its work (:class:`ScanSettings`), and the settings a user sees
(:data:`SETTINGS`), from which the CLI's options and the window's form are built."""

from __future__ import annotations

import types
from dataclasses import dataclass

from engine.errors import InputError
from engine.scan import evidence as ev
from engine.settings import Setting, apply_settings


@dataclass(frozen=True)
class ScanSettings:
    """How the trigger scan spends its work: margin steps and starts, candidates, mask steps, budget."""
    margin_steps: int = 20  # Adam steps of the margin ascent, the same for every class
    margin_restarts: int = 2  # random starts per class, their margins averaged
    margin_candidates: int = 24  # classes with the largest margins refined
    prior_candidates: int = 12  # classes the clean faces lean to most, refined too
    refine_steps: int = 150
    refine_min_steps: int = 60
    refine_images: int = 10  # clean images per class per refinement step
    patience: int = 40  # refinement stops when no best mask shrank by 1% for this many steps
    size_weight: float = 10.0  # lambda once the attack works, on the mask's mean (its share of the image)
    success: float = 0.99  # the attack success a reversed trigger must reach in its batch
    holdout: float = 1 / 3
    learning_rate: float = 0.1
    shape_steps: int = 150  # flagged classes: steps of the smooth inversion that shows the trigger's shape
    shape_budget: float = 0.15  # share of the image the shape's mask may cover unpenalised
    prune_below: float = 0.02  # every 10 steps, mask pixels below this are switched off (0: never)
    alpha: float = ev.ALPHA  # family-wise false-alarm budget
    seed: int = 0

    @classmethod
    def from_params(cls, params: dict) -> ScanSettings:
        """Settings from the user's values of :data:`SETTINGS` (names as keys; absent or None: the
        default), each checked by its declaration, the rest at their defaults."""
        given = types.SimpleNamespace()
        apply_settings(given, SETTINGS, params, "Trigger scan")
        settings = cls(**vars(given))
        settings.check()
        return settings

    def check(self) -> None:
        for name in ("margin_steps", "margin_restarts", "shape_steps", "refine_steps", "refine_images", "patience"):
            if getattr(self, name) < 1:
                raise InputError(None, f"scan setting {name} must be at least 1")
        if self.margin_candidates + self.prior_candidates < 1:
            raise InputError(None, "scan settings: at least one candidate class must be refined")
        if not 0 < self.alpha < 1:
            raise InputError(None, f"scan setting alpha must be between 0 and 1, not {self.alpha:g}")
        if not 0 < self.holdout < 1:
            raise InputError(None, f"scan setting holdout must be between 0 and 1, not {self.holdout:g}")


# The scan's user-visible settings: the CLI's options and the window's form are built from them.
SETTINGS = (
    Setting("margin_candidates", "candidates", int, ScanSettings.margin_candidates, 0, 1283,
            "classes with the largest margins whose triggers are reversed, besides those the clean faces lean "
            "to most", flag="candidates"),
    Setting("prior_candidates", "leaning candidates", int, ScanSettings.prior_candidates, 0, 1283,
            "classes the clean faces lean to most whose triggers are reversed too"),
    Setting("refine_steps", "refinement steps", int, ScanSettings.refine_steps, 1, 10_000,
            "steps of the trigger refinement at most", flag="steps"),
    Setting("margin_steps", "margin steps", int, ScanSettings.margin_steps, 1, 1000,
            "Adam steps of every class's margin ascent"),
    Setting("margin_restarts", "margin starts", int, ScanSettings.margin_restarts, 1, 16,
            "random starts per class, their margins averaged"),
    Setting("alpha", "false-alarm budget", float, ScanSettings.alpha, 0.0, 1.0,
            "family-wise: the chance of flagging any class of a clean network", low_open=True, high_open=True,
            rate=True, flag="false-alarm"),
)
