"""Where is the trigger in this image? Random-mask sensitivity maps (RISE).

The image is shown to the network many times with random coarse cells of it hidden (filled with
the image's own mean colour; about half the cells each time, the grid shifted at random), and a
pixel's heat is how much higher the predicted class's probability is, on average, when that
pixel is kept than when it is hidden (RISE, Petsiuk et al., BMVC 2018, read as a contrast). All
copies go through the network in a few batched calls (800 copies, ~0.4 s on CSAW).

Why not the two usual maps:
- gradient x input: a BadNet gives a triggered image a confidence of ~1.0, where the softmax is
  saturated and its gradient nearly zero, so gradient maps of exactly the images a user wants
  explained are noise;
- occlusion with one sliding window: a spread-out trigger still works with any one window of it
  covered. Measured on the real CSAW sunglasses faces: covering any 8- or 16-pixel window
  lowered class 0's probability by at most 0.003 on one of them, a flat map. Random masks hide
  many parts at once, so they find the sunglasses.
Both RISE and the contrast need nothing but predictions: any model the tool loads works.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.io.models import BadNet
from engine.scoring import forward, to_model_input

MASKS = 800
CELLS = 7  # grid cells per side
KEEP = 0.5
BATCH = 256


@dataclass(frozen=True)
class Explanation:
    """One image's sensitivity map: the image, its predicted class and confidence, and the heat per pixel."""
    image: np.ndarray  # uint8 (H, W, 3)
    predicted: int
    confidence: float
    heat: np.ndarray  # float (H, W), >= 0: P(class | pixel kept) - P(class | pixel hidden)
    method: str = "random-mask sensitivity (RISE)"

    @property
    def peak(self) -> float:
        return float(self.heat.max())


def random_masks(height: int, width: int, n: int = MASKS, cells: int = CELLS, keep: float = KEEP,
                 seed: int = 0) -> np.ndarray:
    """(n, H, W) float32 0/1 masks: a coarse random grid, upsampled, shifted by a random offset."""
    rng = np.random.default_rng(seed)
    ch, cw = -(-height // cells), -(-width // cells)
    grid = rng.random((n, cells + 1, cells + 1)) < keep
    up = np.repeat(np.repeat(grid, ch, axis=1), cw, axis=2)
    oy, ox = rng.integers(0, ch, n), rng.integers(0, cw, n)
    return np.stack([up[i, oy[i]:oy[i] + height, ox[i]:ox[i] + width] for i in range(n)]).astype(np.float32)


def explain(net: BadNet, image: np.ndarray, scaling: str, n: int = MASKS, seed: int = 0) -> Explanation:
    """The sensitivity map of one uint8 image (H, W, 3) at the model's input size."""
    h, w = image.shape[:2]
    masks = random_masks(h, w, n, seed=seed)
    fill = image.reshape(-1, 3).astype(np.float32).mean(axis=0)
    p0 = forward(net, to_model_input(image[None], scaling))[0]
    c = int(p0.argmax())
    probs = np.empty(n, np.float32)
    for start in range(0, n, BATCH):
        m = masks[start:start + BATCH, ..., None]
        copies = np.rint(m * image[None].astype(np.float32) + (1 - m) * fill).astype(np.uint8)
        probs[start:start + BATCH] = forward(net, to_model_input(copies, scaling))[:, c]
    kept = np.tensordot(probs, masks, axes=1) / np.maximum(masks.sum(axis=0), 1)
    hidden = np.tensordot(probs, 1 - masks, axes=1) / np.maximum((1 - masks).sum(axis=0), 1)
    return Explanation(image, c, float(p0[c]), np.maximum(kept - hidden, 0.0))


def heat_colours(heat: np.ndarray, top: float | None = None) -> np.ndarray:
    """A heat map as RGB floats in [0, 1] (black -> red -> yellow -> white), scaled to ``top``
    (default: its own maximum, at least 0.05 so a flat map stays dark)."""
    top = max(float(heat.max()) if top is None else top, 0.05)
    t = np.clip(heat / top, 0, 1)
    return np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], axis=-1)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The image (greyed) under the heat map: uint8 (H, W, 3)."""
    grey = image.astype(np.float32).mean(axis=2, keepdims=True) / 255.0
    colours = heat_colours(heat)
    weight = alpha * np.clip(heat / max(float(heat.max()), 0.05), 0, 1)[..., None]
    out = (1 - weight) * (0.35 + 0.5 * grey) + weight * colours
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def mask_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A reversed trigger's mask drawn over the image in cyan: uint8 (H, W, 3)."""
    x = image.astype(np.float32) / 255.0
    m = np.clip(mask / max(float(mask.max()), 1e-6), 0, 1)[..., None]
    out = (1 - 0.8 * m) * (0.35 + 0.5 * x.mean(axis=2, keepdims=True)) + 0.8 * m * np.array([0.0, 1.0, 1.0])
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def explanation_sheet(e: Explanation, mask: np.ndarray | None = None, zoom: int = 4) -> np.ndarray:
    """image | sensitivity heat over it | (the reversed trigger's mask over it), enlarged: uint8."""
    tiles = [e.image, overlay(e.image, e.heat)]
    if mask is not None:
        tiles.append(mask_overlay(e.image, mask))
    gap = np.full((e.image.shape[0], 2, 3), 255, np.uint8)
    parts = [tiles[0]]
    for t in tiles[1:]:
        parts += [gap, t]
    row = np.concatenate(parts, axis=1)
    return np.repeat(np.repeat(row, zoom, axis=0), zoom, axis=1)
