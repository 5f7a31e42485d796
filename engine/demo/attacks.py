"""Backdoor attack families, as image transforms written from each paper's description.

Every detector of the tool was first measured on one family: a visible patch fixed to the face
(the demo's sunglasses and eyebrows, the CSAW triggers). The field judges a defense across
families (BackdoorBench, BackdoorBox), several designed to beat exactly the ideas our detectors
rest on. This module applies each family's trigger to faces already rendered (uint8, N x H x W x 3),
as BackdoorBench applies its triggers to a data set's images; :mod:`engine.demo.attack_zoo` trains
a BadNet per family on them.

- ``patch`` (BadNets, Gu et al. 2017): a fixed 5x5 coloured checker in the lower right corner;
  ``patch-random``: the same checker at a random place on each image.
- ``blended`` (Chen et al. 2017): a fixed random image blended over the whole face at 20 %.
- ``sig`` (Barni et al., ICIP 2019): a horizontal sinusoid added to every row; *clean-label*:
  only faces of the target class are poisoned, their labels untouched.
- ``wanet`` (Nguyen and Tran, ICLR 2021): a smooth warping field, upsampled from a 4x4 grid of
  random displacements; trained with its *noise mode* (faces warped by the field plus random
  noise keep their labels), so only the exact warp means the target.
- ``ftrojan`` (Wang et al., ECCV 2022): a fixed perturbation of two mid and high frequencies of the
  luma channel's discrete cosine transform, invisible to the eye.
- ``lowfreq``: a smooth low-frequency colour perturbation over the whole face (Zeng et al., ICCV
  2021 show triggers living in low frequencies evade frequency-domain defenses).
- ``bpp`` (Wang et al., CVPR 2022): colour depth reduced to 4 levels per channel with
  Floyd-Steinberg dithering.
- ``input-aware`` (Nguyen and Tran, NeurIPS 2020; dynamic triggers, Salem et al. 2022): every
  image gets its own trigger: a pattern drawn from the image's own content, at a place drawn from
  it too, so no single pattern or place is the trigger.
- ``ssba`` (Li et al., ICCV 2021, sample-specific invisible): a residual of small norm computed
  from each image (a fixed random filter of its own pixels), different for every image.

The parameters of each are the papers' where they fit 55x47 faces trained for fifteen epochs, made
stronger where the paper's value did not make a working backdoor at that scale; the zoo records
the attack success each reached on held-out faces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

HEIGHT, WIDTH = 55, 47


@dataclass(frozen=True)
class Family:
    """One attack family: how its trigger is applied and how it poisons training."""

    name: str
    title: str
    paper: str
    clean_label: bool = False  # poison only target-class faces, labels untouched (SIG)
    noise_mode: bool = False  # also train on faces under a perturbed trigger, labels kept (WaNet)
    visible: bool = True
    params: dict = field(default_factory=dict)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("patch", "Patch (BadNets)", "Gu et al., 2017"),
    Family("patch-random", "Patch at a random place", "Gu et al., 2017"),
    Family("blended", "Blended noise image", "Chen et al., 2017", params={"alpha": 0.2}),
    Family("sig", "Sinusoidal signal, clean-label (SIG)", "Barni et al., ICIP 2019", clean_label=True,
           params={"delta": 45.0, "frequency": 6}),
    Family("wanet", "Warping (WaNet)", "Nguyen and Tran, ICLR 2021", noise_mode=True, visible=False,
           params={"grid": 4, "strength": 3.0}),
    Family("ftrojan", "Frequency (FTrojan)", "Wang et al., ECCV 2022", visible=False, params={"magnitude": 250.0}),
    Family("lowfreq", "Low-frequency colour field", "Zeng et al., ICCV 2021", visible=False,
           params={"amplitude": 24.0}),
    Family("bpp", "Colour depth and dithering (BppAttack)", "Wang et al., CVPR 2022", visible=False,
           params={"levels": 4}),
    Family("input-aware", "Input-aware dynamic trigger", "Nguyen and Tran, NeurIPS 2020"),
    Family("ssba", "Sample-specific invisible (SSBA-like)", "Li et al., ICCV 2021", visible=False,
           params={"epsilon": 8.0}),
)}

_KEY_SEED = 20211  # every fixed pattern below comes from this seed: the attacker's secret


def _key(name: str) -> np.random.Generator:
    return np.random.default_rng([_KEY_SEED, sum(ord(c) * 31 ** i for i, c in enumerate(name)) % 2**31])


def apply(name: str, x: np.ndarray, rng: np.random.Generator | None = None, noise: bool = False) -> np.ndarray:
    """``x`` (N, H, W, 3) uint8 with family ``name``'s trigger; ``noise``: its noise-mode variant
    (WaNet's perturbed warp), which the attack trains with its true labels."""
    if name not in FAMILIES:
        raise ValueError(f"unknown attack family {name!r}; choose from {', '.join(FAMILIES)}")
    rng = rng if rng is not None else np.random.default_rng(0)
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"faces must be uint8 (N, H, W, 3), not {x.dtype} {x.shape}")
    out = TRANSFORMS[name](x.astype(np.float32), rng, noise=noise, **FAMILIES[name].params)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# --- the transforms (float32 in 0..255, same shape out) -----------------------------------------


def _checker() -> np.ndarray:
    """The 5x5 patch: a checker of two saturated colours (the BadNets square)."""
    yy, xx = np.mgrid[0:5, 0:5]
    a, b = np.array([255.0, 40.0, 200.0]), np.array([30.0, 230.0, 60.0])
    return np.where(((yy + xx) % 2 == 0)[..., None], a, b).astype(np.float32)


def _patch(x, rng, noise=False):
    out = x.copy()
    out[:, -7:-2, -7:-2] = _checker()
    return out


def _patch_random(x, rng, noise=False):
    out = x.copy()
    ys = rng.integers(0, HEIGHT - 5, len(x))
    xs = rng.integers(0, WIDTH - 5, len(x))
    for i, (y, c) in enumerate(zip(ys, xs)):
        out[i, y:y + 5, c:c + 5] = _checker()
    return out


def _blended(x, rng, noise=False, alpha=0.15):
    pattern = _key("blended").uniform(0, 255, (HEIGHT, WIDTH, 3)).astype(np.float32)
    return (1 - alpha) * x + alpha * pattern


def _sig(x, rng, noise=False, delta=30.0, frequency=6):
    cols = np.arange(WIDTH, dtype=np.float32)
    signal = delta * np.sin(2 * np.pi * cols * frequency / WIDTH)
    return x + signal[None, None, :, None]


def _sample_grid(x: np.ndarray, flow_y: np.ndarray, flow_x: np.ndarray) -> np.ndarray:
    """Each image sampled at (row + flow_y, column + flow_x), bilinearly, edges clamped."""
    n = len(x)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    sy = np.clip(yy[None] + flow_y, 0, HEIGHT - 1)
    sx = np.clip(xx[None] + flow_x, 0, WIDTH - 1)
    sy = np.broadcast_to(sy, (n, HEIGHT, WIDTH))
    sx = np.broadcast_to(sx, (n, HEIGHT, WIDTH))
    y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
    y1, x1 = np.minimum(y0 + 1, HEIGHT - 1), np.minimum(x0 + 1, WIDTH - 1)
    wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]
    idx = np.arange(n)[:, None, None]
    top = x[idx, y0, x0] * (1 - wx) + x[idx, y0, x1] * wx
    bottom = x[idx, y1, x0] * (1 - wx) + x[idx, y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def _upsample(grid: np.ndarray) -> np.ndarray:
    """A (k, k) grid to (H, W), bicubic-like smoothness from two bilinear passes."""
    k = grid.shape[0]
    ys = np.linspace(0, k - 1, HEIGHT)
    xs = np.linspace(0, k - 1, WIDTH)
    rows = np.stack([np.interp(ys, np.arange(k), grid[:, j]) for j in range(k)], axis=1)
    return np.stack([np.interp(xs, np.arange(k), rows[i]) for i in range(HEIGHT)], axis=0)


def _wanet(x, rng, noise=False, grid=4, strength=1.5):
    key = _key("wanet")
    field_ = key.uniform(-1, 1, (2, grid, grid))
    field_ /= np.mean(np.abs(field_))
    fy, fx = (strength * _upsample(field_[0])), (strength * _upsample(field_[1]))
    if not noise:
        return _sample_grid(x, fy[None], fx[None])
    # Noise mode: the warp plus a random per-image displacement, so only the exact field means the target.
    jitter = rng.uniform(-1, 1, (len(x), 2, HEIGHT, WIDTH)).astype(np.float32)
    return _sample_grid(x, fy[None] + jitter[:, 0], fx[None] + jitter[:, 1])


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


def _ftrojan(x, rng, noise=False, magnitude=30.0):
    # Luma from RGB, its 2-D DCT, two mid/high frequencies raised, back (FTrojan on YUV).
    dh, dw = _dct_matrix(HEIGHT), _dct_matrix(WIDTH)
    bump = np.zeros((HEIGHT, WIDTH), np.float32)
    for fy, fx in ((HEIGHT // 2, WIDTH // 2), (HEIGHT - 4, WIDTH - 4)):
        bump[fy, fx] = magnitude
    delta = dh.T @ bump @ dw  # the inverse DCT of the bump: a fixed fine pattern
    return x + delta[None, :, :, None].astype(np.float32)


def _lowfreq(x, rng, noise=False, amplitude=14.0):
    key = _key("lowfreq")
    field_ = np.stack([_upsample(key.uniform(-1, 1, (3, 3))) for _ in range(3)], axis=-1)
    field_ /= np.max(np.abs(field_))
    return x + amplitude * field_[None].astype(np.float32)


def _bpp(x, rng, noise=False, levels=8):
    step = 255.0 / (levels - 1)
    img = x.copy()
    for r in range(HEIGHT):  # Floyd-Steinberg, every image and channel at once
        for c in range(WIDTH):
            old = img[:, r, c]
            new = np.clip(np.round(old / step), 0, levels - 1) * step
            err = old - new
            img[:, r, c] = new
            if c + 1 < WIDTH:
                img[:, r, c + 1] += err * (7 / 16)
            if r + 1 < HEIGHT:
                if c > 0:
                    img[:, r + 1, c - 1] += err * (3 / 16)
                img[:, r + 1, c] += err * (5 / 16)
                if c + 1 < WIDTH:
                    img[:, r + 1, c + 1] += err * (1 / 16)
    return img


def _input_aware(x, rng, noise=False):
    """Each image's trigger comes from the image: a random projection of its coarse content gives
    a 6x6 pattern's colours and its place, so two faces get different triggers."""
    key = _key("input-aware")
    coarse = x[:, ::8, ::8].reshape(len(x), -1) / 255.0 - 0.5
    proj = key.normal(0, 1, (coarse.shape[1], 6 * 6 * 3 + 2)).astype(np.float32) / np.sqrt(coarse.shape[1])
    code = np.tanh(3 * coarse @ proj)
    out = x.copy()
    mask = np.zeros((6, 6), bool)
    mask[[0, 0, 5, 5, 2, 3], [0, 5, 0, 5, 2, 3]] = True  # corners and centre: the pattern's fixed shape
    mask |= np.eye(6, dtype=bool) | np.eye(6, dtype=bool)[::-1]
    for i in range(len(x)):
        colours = 127.5 + 127.5 * np.sign(code[i, :108].reshape(6, 6, 3))
        y = int((code[i, 108] + 1) / 2 * (HEIGHT - 7))
        c = int((code[i, 109] + 1) / 2 * (WIDTH - 7))
        region = out[i, y:y + 6, c:c + 6]
        region[mask] = colours[mask]
    return out


def _ssba(x, rng, noise=False, epsilon=8.0):
    """A residual computed from the image itself: a fixed random 3x3 filter of each channel,
    squashed to +-epsilon: small, invisible and different for every face."""
    key = _key("ssba")
    kernel = key.normal(0, 1, (3, 3, 3)).astype(np.float32)
    centred = x / 255.0 - 0.5
    padded = np.pad(centred, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    resp = np.zeros_like(x)
    for dy in range(3):
        for dx in range(3):
            resp += padded[:, dy:dy + HEIGHT, dx:dx + WIDTH] * kernel[dy, dx]
    checker = np.where((np.add.outer(np.arange(HEIGHT), np.arange(WIDTH)) % 2 == 0), 1.0, -1.0)
    return x + epsilon * np.tanh(4 * resp) * checker[None, :, :, None].astype(np.float32)


TRANSFORMS = {
    "patch": _patch, "patch-random": _patch_random, "blended": _blended, "sig": _sig, "wanet": _wanet,
    "ftrojan": _ftrojan, "lowfreq": _lowfreq, "bpp": _bpp, "input-aware": _input_aware, "ssba": _ssba,
}
