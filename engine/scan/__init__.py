"""The trigger scan: is this network backdoored, which classes are targets, what is the trigger?

Four statistics per class, independent in what they rest on, alone and together (Fisher's
combination) under one false-alarm budget (:mod:`engine.scan.evidence`):

1. **Largest margin** (MM-BD, Wang et al., IEEE S&P 2024; :mod:`engine.scan.margin`), data-free: for
   every class, the largest ``z_c - max_{j != c} z_j`` a gradient ascent from a random image
   reaches in a fixed number of steps. A backdoor's shortcut makes its target's margin an
   outlier among all classes. Every class is measured the same way, so the other classes are
   the null.
2. **Smallest reversed trigger** (Neural Cleanse, Wang et al., IEEE S&P 2019), on the user's
   clean faces: for the candidates (the classes with the largest margins, and those the clean
   faces already lean to, K-Arm's logit pre-selection, Shen et al., ICML 2021), the smallest mask
   and pattern that send the faces to the class, by Neural Cleanse's schedule (no size penalty
   until the reversed trigger flips 99% of its batch, then the penalty raised while it does and
   lowered while it does not; the smallest mask that worked is kept). All candidates are
   optimised in one batch (:mod:`engine.scan.trigger_opt`). A target's mask is anomalously small
   among the other candidates, chosen the same way.
3. **The smallest smooth perturbation** (:mod:`engine.scan.stats.smooth`, L-RED's idea), on the
   clean faces, for the same candidates: the smallest pattern, smooth at the scale of a few
   pixels and the same for every face, that added to them sends them to the class (a blend or a
   warp is no patch; :mod:`engine.scan.perturbation`).
4. **The output layer's outlier** (:mod:`engine.scan.stats.head`), data-free: whether a few
   penultimate features feed the class, and no other, far more strongly than the other classes'.

The verdict is one of *backdoor: classes ...*, *no evidence of a backdoor*, or *inconclusive*
(why: a null that cannot be estimated, evidence near the threshold, too few clean faces), with
the probability that the network is backdoored (:func:`engine.scan.evidence.backdoor_probability`). The
reversed triggers are tested on held-out clean faces the optimisation never saw. Results are
written atomically into a folder: ``scan.json`` (verdict and ranked table), ``triggers.npz``
(masks, patterns and the statistics, what unlearning and the window use) and PNGs of each
flagged class's mask, pattern and mask x pattern.

This module is the algorithm; the result and its folder are :mod:`engine.scan.result`, the
settings :mod:`engine.scan.settings`, the statistics' registry :mod:`engine.scan.stats`.
"""

from __future__ import annotations

import time

import numpy as np

from engine.errors import InputError
from engine.io.datasets import ImageSet
from engine.io.fitting import fit_to_model
from engine.io.models import BadNet
from engine.progress import Job, Progress
from engine.scan import stats
from engine.scan.margin import MAX_BATCH as MARGIN_BATCH
from engine.scan.margin import max_margins
from engine.scan.result import ReversedTrigger, ScanResult, is_scan_output  # noqa: F401  (is_scan_output: its API)
from engine.scan.settings import SETTINGS, ScanSettings  # noqa: F401
from engine.scan.trigger_opt import ChunkOptimizer, new_chunk, penalty_schedule
from engine.scoring import choose_scaling, forward, probabilities, to_model_input

MIN_CLEAN = 4
MAX_SHAPES = 8  # flagged classes whose trigger shape is drawn
SCAN_IMAGES = 300  # clean faces a scan uses unless told: refinement draws 10 a step, so more cost little
PRUNED = -6.0  # tanh-space value of a switched-off mask pixel (mask 6e-6)


def check_clean(clean: ImageSet) -> None:
    """A scan needs at least MIN_CLEAN clean images."""
    if len(clean) < MIN_CLEAN:
        raise InputError(clean.source,
                         f"has {len(clean)} images; a trigger scan needs at least {MIN_CLEAN} clean images")


def scan(net: BadNet, clean: ImageSet, scaling: str, settings: ScanSettings = ScanSettings()) -> Job[ScanResult]:
    """Margins of every class, the candidates' reversed triggers, the held-out test, the verdict.

    Yields :class:`Progress` whose ``partial`` is the :class:`ScanResult` so far (margins first,
    then refined classes as they settle)."""
    settings.check()
    check_clean(clean)
    started = time.perf_counter()
    rng = np.random.default_rng(settings.seed)
    num_classes = net.num_classes
    h, w, _ = net.input_shape
    margin_total = settings.margin_steps * max(1, -(-num_classes * settings.margin_restarts // MARGIN_BATCH))
    measured = margin_total + settings.refine_steps + 1  # then the statistics' own measurements
    total = measured + sum(s.steps for s in stats.active()) + settings.shape_steps + 1
    # An image the network already puts in class c says nothing about reaching c: its own
    # prediction (not its label, which unlabelled data lacks) takes it out of c's loss.
    predicting = probabilities(net, clean.images, scaling)
    while True:  # (counted as none of the scan's steps: the bar stays at 0 while the faces are predicted)
        try:
            next(predicting)
        except StopIteration as stop:
            probs = stop.value
            break
        yield Progress(0, total, "predicting the clean faces")
    predicted = probs.argmax(axis=1)
    order = rng.permutation(len(clean))
    n_hold = min(len(clean) - 2, max(1, round(settings.holdout * len(clean))))
    hold, fit = order[:n_hold], order[n_hold:]
    x_fit = clean.images[fit].astype(np.float32) / 255.0
    y_fit = predicted[fit]

    result = ScanResult(str(net.path), net.sha256, scaling, num_classes, (h, w), len(clean), int(n_hold),
                        np.full(num_classes, np.nan), _prior(probs, predicted), {}, settings.alpha,
                        stage="margins")

    def margin_step(step: Progress) -> Progress:
        return Progress(step.done, total, "largest margins (every class)")

    job = max_margins(net, scaling, settings.margin_steps, settings.margin_restarts, seed=settings.seed)
    while True:
        try:
            step = next(job)
        except StopIteration as stop:
            result.margins = np.asarray(stop.value, dtype=np.float64)
            break
        yield margin_step(step)
    yield Progress(margin_total, total, "largest margins (every class)", partial=result.snapshot())

    chosen = _candidates(result.margins, result.prior, settings)
    result.stage = "refining"
    result.notes.append(
        f"margins of all {num_classes} classes ({settings.margin_restarts} x {settings.margin_steps} steps "
        f"each); refined "
        f"{len(chosen)} candidates: the {settings.margin_candidates} largest margins and the "
        f"{settings.prior_candidates} classes the clean faces lean to most")
    triggers = yield from _refine(net, scaling, x_fit, y_fit, np.asarray(chosen), settings, rng,
                                  lambda k, label, fresh: Progress(margin_total + k, total, label,
                                                                   partial=_provisional(result) if fresh else None),
                                  result)
    result.stage = "testing"
    yield Progress(margin_total + settings.refine_steps, total, "testing the reversed triggers")
    _test_on_holdout(net, clean, predicted, hold, scaling, triggers)
    result.triggers = triggers
    for statistic in stats.active():  # statistics that measure something of their own
        for step in statistic.measure(net, clean, scaling, result):
            done = round(statistic.steps * step.fraction)  # the bar never runs back, whatever it counts
            yield Progress(measured + done, total, step.stage)
        measured += statistic.steps
    result.judge()
    missing = np.array([c for c in result.flagged if c not in result.triggers], dtype=np.int64)
    if len(missing):  # flagged without being a candidate (by the output layer, say): its trigger too
        result.notes.append(f"refined {len(missing)} flagged {'class' if len(missing) == 1 else 'classes'} that "
                            f"{'was' if len(missing) == 1 else 'were'} not a candidate: "
                            f"{', '.join(map(str, missing.tolist()))}")
        label = f"refining the trigger of flagged class{'es' if len(missing) > 1 else ''} {', '.join(map(str, missing))}"
        more = yield from _refine(net, scaling, x_fit, y_fit, missing, settings, rng,
                                  lambda k, _, fresh: Progress(measured, total, label),
                                  result)
        _test_on_holdout(net, clean, predicted, hold, scaling, more)
        result.triggers = {**triggers, **more}
        result.judge()
    yield from _draw_shapes(net, scaling, clean, predicted, result, settings,
                            lambda k, label: Progress(measured + k, total, label))
    result.stage = "done"
    result.seconds = time.perf_counter() - started
    yield Progress(total, total, "scan done", partial=result.snapshot())
    return result


def _draw_shapes(net, scaling, clean: ImageSet, predicted: np.ndarray, result: ScanResult, settings: ScanSettings,
                 progress, max_faces: int = 32) -> Job[None]:
    """The flagged classes' trigger shapes (:func:`engine.scan.trigger_opt.smooth_trigger`), on up to
    ``max_faces`` clean faces the network puts elsewhere."""
    from engine.scan.trigger_opt import smooth_trigger

    flagged = [c for c in result.flagged if c in result.triggers][:MAX_SHAPES]
    for i, c in enumerate(flagged):
        others = np.flatnonzero(predicted != c)[:max_faces]
        if not len(others):
            continue
        x = clean.images[others].astype(np.float32) / 255.0
        job = smooth_trigger(net.model, scaling, x, c, net.outputs_probabilities, settings.shape_budget,
                             steps=settings.shape_steps)
        while True:
            try:
                k = next(job)
            except StopIteration as stop:
                mask, pattern = stop.value
                break
            yield progress((i * settings.shape_steps + k) // len(flagged), f"drawing the shape of class {c}'s trigger")
        result.triggers[c].shape_mask, result.triggers[c].shape_pattern = mask, pattern


def _provisional(result: ScanResult) -> ScanResult:
    """A snapshot judged on the masks refined so far, for the window to show while the scan runs."""
    out = result.snapshot()
    out.judge()
    return out


def _prior(probs: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Mean log probability of each class over the clean faces the network puts elsewhere: the
    classes clean faces already lean to (K-Arm's logit-based pre-selection)."""
    logp = np.log(np.clip(probs.astype(np.float64), 1e-30, 1.0))
    own = np.zeros_like(logp, dtype=bool)
    own[np.arange(len(predicted)), predicted] = True
    counts = np.maximum(1, len(predicted) - own.sum(axis=0))
    return np.where(own, 0.0, logp).sum(axis=0) / counts


def _candidates(margins: np.ndarray, prior: np.ndarray, settings: ScanSettings) -> list[int]:
    """The classes to refine: the largest margins and the strongest priors (every class when few)."""
    num_classes = len(margins)
    if num_classes <= settings.margin_candidates + settings.prior_candidates:
        return list(range(num_classes))
    by_margin = np.argsort(-np.where(np.isfinite(margins), margins, -np.inf), kind="stable")
    by_prior = np.argsort(-prior, kind="stable")
    chosen = list(dict.fromkeys([*by_margin[: settings.margin_candidates].tolist(),
                                 *by_prior[: settings.prior_candidates].tolist()]))
    return sorted(int(c) for c in chosen)


def _draw(rng, n: int, slots: int, per: int) -> np.ndarray:
    """(slots, per) image indices, each row without repeats where the set allows."""
    if n >= per:
        return np.argsort(rng.random((slots, n)), axis=1)[:, :per]
    return rng.integers(0, n, (slots, per))


def _refine(net, scaling, x_fit, y_fit, classes: np.ndarray, settings: ScanSettings, rng, progress,
            result: ScanResult) -> Job[dict[int, ReversedTrigger]]:
    """Neural Cleanse's schedule for ``classes``, all in one chunk: the smallest mask that reached
    ``settings.success`` on its batch, per class (the result's triggers so far kept beside them)."""
    kept = dict(result.triggers)
    h, w = x_fit.shape[1:3]
    k = len(classes)
    opt = ChunkOptimizer(net.model, scaling, k, settings.refine_images, net.input_shape,
                         net.outputs_probabilities, settings.learning_rate)
    state = new_chunk(classes, k, (h, w), rng, 0.0, mask_start=0.5)
    state.lam = np.zeros(k, np.float32)  # no size penalty until the attack works
    opt.load(state)
    best = np.full(k, np.inf)
    best_mask = np.zeros((k, h, w), np.float32)
    best_pattern = np.zeros((k, h, w, 3), np.float32)
    up = np.zeros(k, int)
    down = np.zeros(k, int)
    last_gain = np.zeros(k, int)  # step at which each class's best last shrank by 1%
    for s in range(settings.refine_steps):
        idx = _draw(rng, len(x_fit), k, settings.refine_images)
        _, size, success = opt.step(state, x_fit[idx], (y_fit[idx] != classes[:, None]).astype(np.float32))
        ok = success >= settings.success
        better = ok & (size < best)
        if better.any():
            opt.store(state)
            masks, patterns = state.masks, state.patterns
            # (one Adam step past the judged ones; the held-out test judges what is kept)
            best_mask[better] = masks[better]
            best_pattern[better] = patterns[better]
            last_gain = np.where(better & (size < 0.99 * best), s, last_gain)
            best = np.where(better, size, best)
        lam, up, down = penalty_schedule(state.lam, ok, up, down, settings.size_weight)
        state.lam = lam
        fresh = s % 10 == 9
        if fresh and settings.prune_below > 0 and np.any(lam > 0):
            _prune(opt, state, lam > 0, settings.prune_below)
        if fresh:
            result.triggers = {**kept, **_triggers(classes, best, best_mask, best_pattern, state)}
        yield progress(s + 1, f"refining {k} candidate classes", fresh)
        if s + 1 >= settings.refine_min_steps and np.all(s - last_gain >= settings.patience):
            result.notes.append(f"refinement converged after {s + 1} steps")
            break
    return _triggers(classes, best, best_mask, best_pattern, state)


def _prune(opt: ChunkOptimizer, state, active: np.ndarray, below: float) -> None:
    """Switch off the pixels of the ``active`` masks that are nearly off already (< ``below``).

    Adam moves every parameter by about the learning rate per step, so a mask's faint
    background (thousands of pixels at 0.002-0.01 each, through tanh) takes a hundred steps to
    fade and can outweigh a small trigger's few pixels in the mask's L1; pruning it every ten
    steps lets the size reflect the pixels that matter sooner, the same way for every class."""
    opt.store(state)
    masks = state.masks
    off = (masks < below) & active[:, None, None]
    state.mask_param[..., 0][off] = PRUNED
    for moment in state.moments[:2]:  # the mask's Adam moments (first, second)
        moment[..., 0][off] = 0.0
    opt.load(state)


def _triggers(classes, best, best_mask, best_pattern, state) -> dict[int, ReversedTrigger]:
    out = {}
    masks = patterns = None
    for i, c in enumerate(classes.tolist()):
        if np.isfinite(best[i]):
            out[c] = ReversedTrigger(c, best_mask[i].copy(), best_pattern[i].copy(), True)
        else:  # never reached the success level: show where it got to; not a suspect
            if masks is None:
                masks, patterns = state.masks, state.patterns
            out[c] = ReversedTrigger(c, masks[i].astype(np.float32), patterns[i].astype(np.float32), False)
    return out


def _test_on_holdout(net, clean: ImageSet, predicted: np.ndarray, hold: np.ndarray, scaling: str,
                     triggers: dict[int, ReversedTrigger]) -> None:
    """Each trigger's attack success on held-out clean images the network puts in other classes."""
    images = clean.images[hold]
    for c, t in triggers.items():
        others = predicted[hold] != c
        if not others.any():
            continue
        p = forward(net, to_model_input(t.stamp(images[others]), scaling))
        t.attack_success = float(np.mean(p.argmax(axis=1) == c))




def scan_job(net: BadNet, clean: ImageSet, scaling: str, settings: ScanSettings | None = None) -> Job[ScanResult]:
    """The whole-model trigger scan on ``clean`` (labels not needed), fitted to the model, at the
    input scaling asked for (or chosen, for ``auto``): a ScanResult."""
    clean = fit_to_model(clean, net)
    check_clean(clean)
    chosen, _ = yield from choose_scaling(net, scaling, clean)
    return (yield from scan(net, clean, chosen, settings or ScanSettings()))
