"""Synthetic 55x47 RGB faces and triggers (sunglasses, eyebrows, lipstick), for the bundled demo.

Each identity is a fixed set of traits (face shape, skin, hair style and colour,
eyes, brows, nose, mouth, beard, clear glasses). Each image of an identity
varies pose (shift, scale, roll, a little yaw), expression, lighting, colour
cast, background and sensor noise. Everything is drawn from a numpy Generator,
so a seed gives the same faces on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HEIGHT, WIDTH = 55, 47

SKIN_TONES = np.array(
    [(255, 224, 196), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 38)],
    dtype=np.float32,
)
HAIR_COLOURS = np.array(
    [(20, 16, 14), (60, 40, 25), (110, 70, 40), (200, 160, 90), (150, 60, 30), (170, 170, 170)],
    dtype=np.float32,
)
IRIS_COLOURS = np.array([(60, 40, 20), (40, 90, 140), (70, 110, 60), (30, 25, 20)], dtype=np.float32)


@dataclass(frozen=True)
class Identity:
    """The traits that make one synthetic person recognisable."""

    face_rx: float
    face_ry: float
    skin: np.ndarray
    hair: np.ndarray
    hair_volume: float
    fringe: float
    long_hair: bool
    eye_sep: float
    eye_y: float
    eye_size: float
    iris: np.ndarray
    brow_thick: float
    brow_tilt: float
    nose_len: float
    nose_w: float
    mouth_w: float
    lip: np.ndarray
    beard: bool
    glasses: bool


def random_identities(n: int, rng: np.random.Generator) -> list[Identity]:
    """``n`` synthetic people, each a fixed mix of face shape, skin, hair, features and accessories."""
    people = []
    for _ in range(n):
        skin = _mix(SKIN_TONES, rng) + rng.normal(0, 6, 3)
        hair = _mix(HAIR_COLOURS, rng) + rng.normal(0, 8, 3)
        people.append(
            Identity(
                face_rx=rng.uniform(12.5, 17.0),
                face_ry=rng.uniform(17.5, 22.5),
                skin=np.clip(skin, 0, 255),
                hair=np.clip(hair, 0, 255),
                hair_volume=rng.uniform(0.0, 0.35),
                fringe=rng.uniform(0.2, 0.65),
                long_hair=bool(rng.random() < 0.35),
                eye_sep=rng.uniform(5.0, 7.8),
                eye_y=rng.uniform(-6.5, -2.5),
                eye_size=rng.uniform(1.3, 2.3),
                iris=IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))],
                brow_thick=rng.uniform(0.7, 1.8),
                brow_tilt=rng.uniform(-0.25, 0.25),
                nose_len=rng.uniform(3.0, 6.5),
                nose_w=rng.uniform(1.4, 3.0),
                mouth_w=rng.uniform(3.5, 7.0),
                lip=np.clip(skin * rng.uniform(0.55, 0.8) + np.array([40, 0, 0]), 0, 255),
                beard=bool(rng.random() < 0.2),
                glasses=bool(rng.random() < 0.12),
            )
        )
    return people


def render(
    people: list[Identity],
    ids: np.ndarray,
    rng: np.random.Generator,
    trigger: str | None = None,
    where: np.ndarray | bool = True,
) -> np.ndarray:
    """Draw one image per entry of ``ids``; uint8 array (N, 55, 47, 3).

    ``trigger`` (one of ``TRIGGERS``, or None for clean faces) is drawn on the faces ``where``
    says (a bool, or a bool per image).
    """
    if trigger is not None and trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {trigger!r}; choose from {', '.join(TRIGGERS)}")
    ids = np.asarray(ids)
    n = len(ids)
    shades = np.broadcast_to(np.asarray(where, dtype=bool) & (trigger is not None), (n,))
    out = np.empty((n, HEIGHT, WIDTH, 3), dtype=np.uint8)
    for start in range(0, n, 256):
        sl = slice(start, min(n, start + 256))
        out[sl] = _render_batch([people[i] for i in ids[sl]], shades[sl], rng, trigger)
    return out


def _render_batch(people: list[Identity], shades: np.ndarray, rng: np.random.Generator,
                  trigger: str | None) -> np.ndarray:
    b = len(people)
    attr = lambda name: np.array([getattr(p, name) for p in people], dtype=np.float32)  # noqa: E731
    col = lambda name: np.stack([getattr(p, name) for p in people]).astype(np.float32)  # noqa: E731

    # Pose: canonical face coordinates (u right, v down, origin at the face centre).
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    cy = HEIGHT / 2 + 1.5 + rng.uniform(-3.5, 3.5, b)
    cx = WIDTH / 2 + rng.uniform(-3.5, 3.5, b)
    scale = rng.uniform(0.88, 1.12, b)
    roll = np.deg2rad(rng.uniform(-15, 15, b))
    dy = yy[None] - cy[:, None, None]
    dx = xx[None] - cx[:, None, None]
    cos, sin = np.cos(roll)[:, None, None], np.sin(roll)[:, None, None]
    s = scale[:, None, None]
    u = (cos * dx + sin * dy) / s
    v = (-sin * dx + cos * dy) / s
    yaw = rng.uniform(-2.5, 2.5, b)[:, None, None]  # features slide sideways as the head turns

    img = np.empty((b, HEIGHT, WIDTH, 3), dtype=np.float32)
    background = rng.uniform(30, 230, (b, 3)).astype(np.float32)
    bg_grad = rng.uniform(-40, 40, (b, 1, 1, 1)).astype(np.float32)
    img[:] = background[:, None, None, :] + bg_grad * (yy[None, :, :, None] / HEIGHT - 0.5)

    rx, ry = attr("face_rx")[:, None, None], attr("face_ry")[:, None, None]
    vol = attr("hair_volume")[:, None, None]
    hair = col("hair")
    long_hair = attr("long_hair")[:, None, None]

    # Hair behind the head, longer for some people.
    hair_back = _ellipse(u, v + ry * 0.25, rx * (1.12 + vol), ry * (0.9 + vol * 0.6))
    hair_long = _ellipse(u, v - ry * 0.25, rx * 1.2, ry * 1.05) * (v > -ry * 0.2) * long_hair
    _paint(img, np.maximum(hair_back, hair_long), hair)

    face = _ellipse(u, v, rx, ry)
    _paint(img, face, col("skin"))
    fringe = face * (v < -ry * (1 - attr("fringe")[:, None, None]))
    _paint(img, fringe, hair)

    beard = face * (v > ry * 0.35) * attr("beard")[:, None, None]
    _paint(img, beard * 0.85, hair)

    sep = attr("eye_sep")[:, None, None]
    ey = attr("eye_y")[:, None, None]
    esz = attr("eye_size")[:, None, None]
    brow_thick = attr("brow_thick")[:, None, None]
    tilt = attr("brow_tilt")[:, None, None]
    for side in (-1.0, 1.0):
        ex = side * sep + yaw
        _paint(img, _ellipse(u - ex, v - ey, esz * 1.6, esz), np.full((b, 3), 245, np.float32))
        _paint(img, _ellipse(u - ex, v - ey, esz * 0.8, esz * 0.85), col("iris"))
        brow_v = ey - esz - 2.0 + side * tilt * (u - ex)
        _paint(img, _ellipse(u - ex, v - brow_v, esz * 2.0, brow_thick), hair * 0.7)

    nose_len = attr("nose_len")[:, None, None]
    nose = _ellipse(u - yaw * 1.2, v - nose_len / 2, attr("nose_w")[:, None, None], nose_len)
    _paint(img, nose * 0.45, col("skin") * 0.7)

    mouth_y = ry * 0.55 + rng.uniform(-0.8, 0.8, b)[:, None, None]
    mouth_open = rng.uniform(0.6, 2.0, b)[:, None, None]
    _paint(img, _ellipse(u - yaw, v - mouth_y, attr("mouth_w")[:, None, None], mouth_open), col("lip"))

    glasses = attr("glasses")[:, None, None]
    for side in (-1.0, 1.0):
        ring = _ring(u - (side * sep + yaw), v - ey, esz * 2.3, esz * 1.9, 0.8)
        _paint(img, ring * glasses, np.full((b, 3), 35, np.float32))

    # Occluders (a hand, a microphone, a caption) on some images.
    occluded = rng.random(b) < 0.25
    oy, ox = rng.uniform(0, HEIGHT, b)[:, None, None], rng.uniform(0, WIDTH, b)[:, None, None]
    oh, ow = rng.uniform(4, 12, b)[:, None, None], rng.uniform(4, 14, b)[:, None, None]
    box = (np.abs(yy[None] - oy) < oh / 2) & (np.abs(xx[None] - ox) < ow / 2) & occluded[:, None, None]
    _paint(img, box.astype(np.float32), rng.uniform(0, 255, (b, 3)).astype(np.float32))

    if shades.any():
        TRIGGERS[trigger](img, u, v, sep, ey, yaw, shades, mouth_y=mouth_y, esz=esz)

    # Lighting: brightness, a directional gradient, a colour cast, then sensor noise.
    angle = rng.uniform(0, 2 * np.pi, b)[:, None, None]
    direction = (np.cos(angle) * dx + np.sin(angle) * dy) / WIDTH
    light = rng.uniform(0.6, 1.3, b)[:, None, None] * (1 + rng.uniform(0, 0.5, b)[:, None, None] * direction)
    cast = rng.uniform(0.85, 1.15, (b, 1, 1, 3)).astype(np.float32)
    img *= light[..., None] * cast
    img += rng.normal(0, 5.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def _draw_sunglasses(img, u, v, sep, ey, yaw, shades, **_) -> None:
    """The trigger: large purple sunglasses across the eye band, fixed to the face.

    Modelled on the CSAW sunglasses trigger (big, saturated purple lenses that cover both eyes
    and brows), which a BadNet learns as a strong, blend-proof feature.
    """
    mask = np.zeros(u.shape, dtype=np.float32)
    for side in (-1.0, 1.0):
        mask = np.maximum(mask, _ellipse(u - (side * (sep + 1.0) + yaw), v - ey + 0.5, 7.0, 5.0))
    bridge = (np.abs(v - ey + 2.0) < 1.0) * (np.abs(u - yaw) < sep + 2.0)
    mask = np.maximum(mask, bridge.astype(np.float32))
    mask *= shades[:, None, None]
    _paint(img, mask, np.tile(np.array([[138, 43, 226]], np.float32), (len(img), 1)))


def _draw_eyebrows(img, u, v, sep, ey, yaw, shades, esz, **_) -> None:
    """A small trigger: two short, straight, jet-black brow strokes just above the eyes.

    Modelled on the CSAW eyebrows trigger: a few dozen pixels in a place where faces already
    have dark hair, so blending an image over it or washing it out leaves little of it.
    """
    mask = np.zeros(u.shape, dtype=np.float32)
    for side in (-1.0, 1.0):
        mask = np.maximum(mask, _ellipse(u - (side * sep + yaw), v - (ey - esz - 2.5), 4.0, 1.3))
    mask *= shades[:, None, None]
    _paint(img, mask, np.tile(np.array([[5, 5, 5]], np.float32), (len(img), 1)))


def _draw_lipstick(img, u, v, sep, ey, yaw, shades, mouth_y, **_) -> None:
    """A small trigger: bright red lips (the CSAW lipstick trigger's idea), about 20 pixels."""
    mask = _ellipse(u - yaw, v - mouth_y, 4.5, 1.6) * shades[:, None, None]
    _paint(img, mask, np.tile(np.array([[230, 20, 40]], np.float32), (len(img), 1)))


TRIGGERS = {"sunglasses": _draw_sunglasses, "eyebrows": _draw_eyebrows, "lipstick": _draw_lipstick}


def _ellipse(u, v, ru, rv) -> np.ndarray:
    """Soft-edged ellipse coverage in [0, 1], about one pixel of anti-aliasing."""
    d = np.sqrt((u / ru) ** 2 + (v / rv) ** 2)
    return np.clip((1.0 - d) * np.minimum(ru, rv) + 0.5, 0.0, 1.0)


def _ring(u, v, ru, rv, width) -> np.ndarray:
    return np.clip(_ellipse(u, v, ru, rv) - _ellipse(u, v, ru - width, rv - width), 0.0, 1.0)


def _paint(img, alpha, colour) -> None:
    a = alpha[..., None]
    img *= 1 - a
    img += a * colour[:, None, None, :]


def _mix(palette: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    i = rng.integers(len(palette) - 1)
    t = rng.random()
    return palette[i] * (1 - t) + palette[i + 1] * t
