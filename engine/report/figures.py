"""The audit report's figures: static plots as inline SVG (matplotlib, no display, no Qt) and
pictures as PNG data URIs, the same from the CLI and the window.

Why matplotlib: the report must be drawn where there is no display (the CLI, CI) and must print
crisply on paper. matplotlib's SVG backend needs neither Qt nor a screen, gives vector output
with real text, and has the log axes, legends and step histograms these plots need; pyqtgraph
renders through Qt's scene, raster only offscreen, and would tie the engine to Qt. Each figure is
drawn on its own ``Figure`` (never pyplot's global state), so drawing is safe in a job thread.
"""

from __future__ import annotations

import base64
import io
import itertools
import re

import numpy as np

_FIGURES = itertools.count(1)  # figure ids must be unique within one page
WIDTH_IN = 6.4  # inches: an A4 page's text width at the report's margins
GREY = "#444444"


def _svg(fig) -> str:
    """The figure as an inline <svg> element (no XML prolog, no fixed ids clashing between figures)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    start = text.index("<svg")
    svg = text[start:]
    # Ids must be unique in one HTML page: prefix each figure's with a counter.
    prefix = f"f{next(_FIGURES)}-"
    svg = re.sub(r'id="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', svg)
    svg = re.sub(r'url\(#([^)]+)\)', lambda m: f"url(#{prefix}{m.group(1)})", svg)
    svg = re.sub(r'xlink:href="#([^"]+)"', lambda m: f'xlink:href="#{prefix}{m.group(1)}"', svg)
    svg = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}{m.group(1)}"', svg)
    return svg


def _figure(height_in: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, height_in))
    fig.set_layout_engine("constrained")
    return fig


def _colour(rgb) -> str:
    r, g, b = (int(v) for v in rgb[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def roc_svg(curves: list[tuple[str, tuple, np.ndarray, np.ndarray, float]], title: str,
            frrs: tuple[float, ...] = (0.01, 0.05)) -> str:
    """ROC curves of several detectors on one poisoned set: (name, colour, frr, detection, auc)
    each; the false-rejection axis is logarithmic, where the operating points are."""
    fig = _figure(3.2)
    ax = fig.add_subplot()
    for name, colour, frr, detection, auc in curves:
        x = np.maximum(np.asarray(frr, dtype=float), 1e-3)
        ax.step(x, 100 * np.asarray(detection, dtype=float), where="post", color=_colour(colour), lw=1.6,
                label=f"{name} (AUC {auc:.3f})")
    for f in frrs:
        ax.axvline(f, color=GREY, lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 1.0)
    ax.set_ylim(-2, 102)
    ax.set_xlabel("false rejection of clean images (log)")
    ax.set_ylabel("poisoned images detected (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _svg(fig)


def histogram_svg(series: list[tuple[str, str, np.ndarray]], xlabel: str, title: str, threshold: float | None = None,
                  log: bool = False, bounds: tuple[float, float] | None = None) -> str:
    """Step histograms, each set as a share of its own images: (label, colour, values) each; a
    vertical line at ``threshold``. ``log``: a logarithmic axis (p-values)."""
    fig = _figure(2.8)
    ax = fig.add_subplot()
    values = [np.asarray(v, dtype=float) for _, _, v in series if len(v)]
    if values:
        joined = np.concatenate(values)
        joined = joined[np.isfinite(joined)]
        if log:
            joined = joined[joined > 0]
        if bounds is not None:
            lo, hi = bounds
        elif len(joined):
            lo, hi = float(joined.min()), float(joined.max())
        else:
            lo, hi = 0.0, 1.0
        if log:
            lo = max(lo, 1e-6)
            hi = max(hi, lo * 10)
            edges = np.geomspace(lo, hi, 41)
        else:
            hi = hi if hi > lo else lo + 1.0
            edges = np.linspace(lo, hi, 41)
        for label, colour, v in series:
            v = np.asarray(v, dtype=float)
            v = v[np.isfinite(v)]
            if log:
                v = np.clip(v, lo, hi)
            if len(v):
                ax.hist(v, bins=edges, weights=np.full(len(v), 100.0 / len(v)), histtype="step", lw=1.6,
                        color=colour, label=f"{label} ({len(v)})")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="black", lw=1.2)
        ax.annotate("threshold", (threshold, 1.0), xycoords=("data", "axes fraction"), ha="right", va="top",
                    fontsize=8, xytext=(-3, -3), textcoords="offset points")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of the set (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _svg(fig)


def png_uri(image: np.ndarray, zoom: int = 3) -> str:
    """An image (H, W, 3) uint8 or (H, W) in [0, 1] as a PNG data URI, enlarged ``zoom`` times
    with square pixels (so a mask's few pixels stay visible)."""
    from PIL import Image

    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = (np.clip(np.nan_to_num(a.astype(np.float64)), 0.0, 1.0) * 255).round().astype(np.uint8)
    pic = Image.fromarray(a)
    if zoom > 1:
        pic = pic.resize((pic.width * zoom, pic.height * zoom), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    pic.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
