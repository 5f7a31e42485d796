"""Arrays as JSON, checked both ways: uint8 images and float32 weights as a shape and base64
bytes (what a detector saves with its calibration: clean images it pastes from, a fine-tuned copy
of a model's weights). Decoding checks the shape, the byte count and finiteness, so a damaged
or hostile file is a ValueError, never an absurd allocation."""

from __future__ import annotations

import base64
import binascii

import numpy as np


def encode_images(images: np.ndarray) -> dict:
    """uint8 images as JSON: their shape and base64 pixels (a detector's saved clean images)."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    return {"shape": list(images.shape), "uint8_base64": base64.b64encode(images.tobytes()).decode("ascii")}


def decode_images(raw, what: str, max_count: int) -> np.ndarray:
    """The inverse of ``encode_images``, checked: up to ``max_count`` RGB images, bytes matching."""
    if not isinstance(raw, dict) or not isinstance(raw.get("shape"), list):
        raise ValueError(f"{what} are not described by a shape and pixels")
    try:
        shape = tuple(int(v) for v in raw["shape"])
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what} have a shape that is not whole numbers") from None
    if len(shape) != 4 or shape[-1] != 3 or min(shape) < 1 or shape[0] > max_count or max(shape) > 100_000:
        raise ValueError(f"{what} of shape {shape} are not up to {max_count} RGB images")
    try:
        data = np.frombuffer(base64.b64decode(str(raw.get("uint8_base64")), validate=True), dtype=np.uint8)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} are not valid base64") from None
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{what} of shape {shape} do not match their {data.size} bytes")
    return data.reshape(shape)


def encode_arrays(arrays: list[np.ndarray]) -> list[dict]:
    """float32 arrays as JSON (a detector's own copy of a model's weights)."""
    out = []
    for a in arrays:
        a = np.ascontiguousarray(a, dtype="<f4")
        out.append({"shape": list(a.shape), "float32_base64": base64.b64encode(a.tobytes()).decode("ascii")})
    return out


def decode_arrays(raw, what: str, shapes: list[tuple[int, ...]] | None = None, max_values: int = 2**28) -> list:
    """The inverse of ``encode_arrays``, checked: finite values, sizes from the shapes, and the
    shapes themselves when ``shapes`` is given."""
    if not isinstance(raw, list) or not all(isinstance(r, dict) and isinstance(r.get("shape"), list) for r in raw):
        raise ValueError(f"{what} are not a list of arrays with shapes")
    if shapes is not None and len(raw) != len(shapes):
        raise ValueError(f"{what} hold {len(raw)} arrays; the model has {len(shapes)}")
    out = []
    for i, r in enumerate(raw):
        try:
            shape = tuple(int(v) for v in r["shape"])
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{what}: array {i} has a shape that is not whole numbers") from None
        if any(v < 0 for v in shape) or len(shape) > 8 or int(np.prod(shape, dtype=object)) > max_values:
            raise ValueError(f"{what}: array {i} of shape {shape} is not a weight array")
        if shapes is not None and shape != tuple(shapes[i]):
            raise ValueError(f"{what}: array {i} is {shape}; the model's is {tuple(shapes[i])}")
        text = r.get("float32_base64")
        if not isinstance(text, str) or len(text) > 4 * (4 * int(np.prod(shape, dtype=object)) + 2) // 3 + 4:
            raise ValueError(f"{what}: array {i} has no values of the right size")
        try:
            data = np.frombuffer(base64.b64decode(text, validate=True), dtype="<f4")
        except (binascii.Error, ValueError):
            raise ValueError(f"{what}: array {i} is not valid base64") from None
        if data.size != int(np.prod(shape)):
            raise ValueError(f"{what}: array {i} of shape {shape} does not match its {data.size} values")
        if not np.isfinite(data).all():
            raise ValueError(f"{what}: array {i} holds NaN or infinite values")
        out.append(data.reshape(shape).astype(np.float32))
    return out
