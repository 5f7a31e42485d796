"""Thresholds at a false-rejection rate, and what a number of clean images can promise.

For each class the network predicts on clean data, a threshold on the detector's score is chosen
so that at most a target share of those clean images falls below it (``quantile``, by the
split-conformal rule), or the lowest score seen (``min``, the original proposal); classes with too
few clean images use a pooled threshold. The rest is the statistics of a rate measured on n
images: the interval a new image's false rejection lies in, and the sample a rate needs.
"""

from __future__ import annotations

import numpy as np

from engine.errors import InputError

METHODS = ("min", "quantile")
DEFAULT_METHOD = "quantile"  # a threshold at the chosen false-rejection rate; "min": the lowest clean score
# What a user gets without choosing: the rate at which the default detector catches the triggers
# measured (docs/detectors.md, "Calibration").
DEFAULT_FRR = 0.05
DEFAULT_MIN_SAMPLES = 5  # the floor; see default_min_samples
CONFIDENCE = 0.95  # of the false-rejection interval a calibration reports
SAMPLE_PRECISION = 0.25  # a sample's interval reaches at most this share of the target rate either side


def sample_size(method: str, frr: float) -> int:
    """Clean images a threshold at ``frr`` needs, 0 for all of them (``min``, or a rate of 0).

    A threshold set on n clean images rejects a share of new clean images that varies from one
    draw of the n to the next, about sqrt(frr (1 - frr) / n) either way. The sample is the
    smallest n whose 95% interval reaches at most a quarter of the rate either side: 1,168 faces
    at 5% (3.75..6.25%), 6,085 at 1%. Scoring more clean images narrows the interval, not the
    rate, and costs a detector like Transplant dozens of network calls per image."""
    if method == "min" or frr <= 0:
        return 0
    z = _normal_quantile(0.5 + CONFIDENCE / 2)
    return int(np.ceil((z / SAMPLE_PRECISION) ** 2 * (1.0 - frr) / frr))


def frr_interval(n: int, method: str, frr: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Where the false rejection of new clean images lies, with ``confidence``, for a threshold
    set by ``method`` on n clean images: the r-th lowest of n scores (r from :func:`_threshold`)
    rejects a share of new exchangeable images distributed as Beta(r, n + 1 - r)."""
    rank = 1 if method == "min" else min(n, max(1, int(np.floor(frr * (n + 1) + 1e-9))))
    tail = (1.0 - confidence) / 2
    return _beta_quantile(tail, rank, n + 1 - rank), _beta_quantile(1.0 - tail, rank, n + 1 - rank)


def _beta_quantile(q: float, a: int, b: int) -> float:
    """The q-quantile of Beta(a, b), whole a and b, by bisection on its distribution function:
    P(Beta(a, b) <= x) = P(Binomial(a + b - 1, x) >= a)."""
    from math import lgamma

    m = a + b - 1
    j = np.arange(a, m + 1, dtype=np.float64)
    log_choose = np.array([lgamma(m + 1) - lgamma(k + 1) - lgamma(m - k + 1) for k in range(a, m + 1)])
    lo, hi = 0.0, 1.0
    for _ in range(60):
        x = (lo + hi) / 2
        cdf = float(np.exp(log_choose + j * np.log(x) + (m - j) * np.log1p(-x)).sum())
        lo, hi = (x, hi) if cdf < q else (lo, x)
    return (lo + hi) / 2


def _normal_quantile(p: float) -> float:
    """The standard normal's p-quantile (bisection on erf; p in (0, 1))."""
    from math import erf, sqrt

    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * (1 + erf(mid / sqrt(2))) < p else (lo, mid)
    return (lo + hi) / 2


def default_min_samples(method: str, frr: float) -> int:
    """Clean images a class needs for a threshold of its own: enough that the target
    false-rejection rate is more than the lowest score (1/frr images; 100 at 1%), at least 5."""
    if method == "min" or frr <= 0:
        return DEFAULT_MIN_SAMPLES
    return max(DEFAULT_MIN_SAMPLES, int(np.ceil(1.0 / frr - 1e-9)))


def fit_thresholds(
    values: np.ndarray,
    predicted: np.ndarray,
    num_classes: int,
    method: str = DEFAULT_METHOD,
    frr: float = DEFAULT_FRR,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Return (thresholds, counts, pooled_mask, pooled_threshold), one entry per class."""
    check_options(method, frr)
    values = np.asarray(values, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if len(values) == 0:
        raise InputError(None, "no clean images to calibrate on")
    pooled_threshold = _threshold(np.sort(values), method, frr)

    counts = np.bincount(predicted, minlength=num_classes)[:num_classes]
    thresholds = np.full(num_classes, pooled_threshold, dtype=np.float64)
    pooled = counts < max(1, min_samples)
    order = np.lexsort((values, predicted))  # grouped by class, ascending score within
    sorted_values = values[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for c in np.flatnonzero(~pooled):
        thresholds[c] = _threshold(sorted_values[starts[c] : starts[c] + counts[c]], method, frr)
    return thresholds, counts, pooled, float(pooled_threshold)


def check_options(method: str, frr: float, min_samples: int | None = None) -> None:
    """Check a calibration's method, rate and minimum per-class sample before any work."""
    if method not in METHODS:
        raise InputError(None, f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    check_frr(frr)
    if min_samples is not None and (isinstance(min_samples, bool) or not isinstance(min_samples, (int, np.integer))
                                    or min_samples < 0):
        raise InputError(None, f"minimum samples per class {min_samples!r} must be a whole number >= 0")


def check_sample(sample: int | None) -> None:
    """A calibration sample size must be a whole number >= 0 (0: every image)."""
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 0):
        raise InputError(None, f"calibration sample {sample!r} must be a whole number >= 0 (0: every image)")


def check_frr(frr: float, what: str = "false-rejection rate") -> None:
    """A false-rejection rate must be a finite number in [0, 1)."""
    if not (isinstance(frr, (int, float, np.floating)) and np.isfinite(frr) and 0.0 <= frr < 1.0):
        raise InputError(None, f"{what} {frr} must be in [0, 1)")


def quantile_threshold(ascending: np.ndarray, frr: float) -> float:
    """The threshold flagging at most ``frr`` of these (sorted) clean scores."""
    return _threshold(ascending, "quantile", frr)


def _threshold(ascending: np.ndarray, method: str, frr: float) -> float:
    """The (k+1)-th lowest of n clean scores, k = floor(frr * (n + 1)) - 1 (at least 0).

    A new clean image exchangeable with these falls strictly below the (k+1)-th lowest with
    probability (k + 1) / (n + 1) <= frr (the split-conformal rule), so the target rate holds on
    clean images the threshold was not set on, not only on the calibration images: with 45 clean
    images at 5% this is the 2nd lowest (expected 4.3%), where the plain floor(frr * n)-th order
    statistic, the 3rd lowest, would reject 6.5% of new clean images. When n + 1 < 1 / frr no
    threshold can promise the rate and the lowest score is used (expected 1 / (n + 1))."""
    if method == "min":
        return float(ascending[0])
    k = int(np.floor(frr * (len(ascending) + 1) + 1e-9)) - 1
    return float(ascending[min(len(ascending) - 1, max(0, k))])
