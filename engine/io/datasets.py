"""Reading image sets: official CSAW HDF5, ``.npz``, folders of images and single images.

One entry point, :func:`read`, picks a reader by the file's content. Pixels stay
uint8 (N, H, W, 3) in memory; conversion to float happens per batch at
inference time. Every failure is an :class:`InputError` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from engine.errors import InputError, first_line
from engine.io.files import is_regular_or_folder

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
LABEL_IN_NAME = re.compile(r"label[_\-=]?(\d+)", re.IGNORECASE)
CHUNK = 1024  # images converted at a time, to keep float copies small
MAX_LABEL = 2**31 - 1


@dataclass
class ImageSet:
    """Images (uint8, N x H x W x 3), optional integer labels, and a name per image."""

    images: np.ndarray
    labels: np.ndarray | None
    names: list[str]
    source: str
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError("one label per image")
        if len(self.names) != len(self.images):
            raise ValueError("one name per image")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    @cached_property
    def digest(self) -> str:
        """Content hash: equal pixels and labels give equal digests, whatever the source."""
        h = hashlib.blake2b(digest_size=16)
        h.update(str(self.images.shape).encode())
        h.update(np.ascontiguousarray(self.images).data)
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels, dtype=np.int64).data)
        return h.hexdigest()

    def require_labels(self, why: str) -> np.ndarray:
        if self.labels is None:
            raise InputError(self.source, f"has no labels, which {why} needs")
        return self.labels

    def subset(self, index) -> ImageSet:
        """The images at ``index`` (integer positions), with their labels and names."""
        index = np.asarray(index, dtype=np.int64)
        labels = None if self.labels is None else self.labels[index]
        return ImageSet(self.images[index], labels, [self.names[i] for i in index], self.source, list(self.warnings))

    def resized(self, size: tuple[int, int]) -> ImageSet:
        """This set at (height, width), with a warning naming the source when it changes."""
        h, w = size
        if self.images.shape[1:3] == (h, w):
            return self
        old = self.images.shape[1:3]
        out = np.empty((len(self), h, w, 3), dtype=np.uint8)
        for i, img in enumerate(self.images):
            out[i] = _resize_image(img, size)
        note = f"{self.source}: images are {old[0]}x{old[1]}, resized to the model's {h}x{w}"
        return ImageSet(out, self.labels, self.names, self.source, self.warnings + [note])


@dataclass
class PoisonedSet:
    """A set of triggered images and the class the attack sends them to."""

    images: ImageSet
    target: int

    @property
    def name(self) -> str:
        return f"{Path(self.images.source).name} -> {self.target}"


def parse_poisoned(spec: str) -> tuple[Path, int]:
    """``PATH:TARGET`` -> (path, target); the path may itself contain colons."""
    path, sep, target = spec.rpartition(":")
    if not sep or not path or not target.strip().isdigit():
        raise InputError(None, f"{{poisoned}} {spec!r}: expected PATH:TARGET, e.g. sunglasses.h5:0", settings=("poisoned",))
    return Path(path), int(target)


def read(path: str | Path, size: tuple[int, int] | None = None) -> ImageSet:
    """Read any supported image source; resize to ``size`` (height, width) when given."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if not is_regular_or_folder(path):
        raise InputError(path, "is not a regular file or folder (a pipe, socket or device); not read")
    if path.is_dir():
        result = _read_folder(path, size)
    else:
        head = _head(path)
        if head == HDF5_SIGNATURE:
            result = _read_hdf5(path)
        elif head.startswith(ZIP_SIGNATURE) and path.suffix.lower() == ".npz":
            result = _read_npz(path)
        elif path.suffix.lower() in (".h5", ".hdf5", ".he5"):
            raise InputError(path, "not an HDF5 file (no HDF5 signature at its start)")
        elif head.startswith(ZIP_SIGNATURE):
            raise InputError(path, "a zip archive is not an image set (use .npz with 'x' and 'y' arrays)")
        else:
            img = _read_image(path)
            label = _label_from_name(path)
            result = ImageSet(img[None], None if label is None else np.array([label]), [str(path)], str(path))
    return result if size is None else result.resized(size)


def read_many(paths: list[str | Path], size: tuple[int, int] | None = None) -> ImageSet:
    """Read several sources and join them into one set (labels kept only if all have them)."""
    if not paths:
        raise InputError(None, "no images given")
    sets = [read(p, size) for p in paths]
    if len(sets) == 1:
        return sets[0]
    shapes = {s.image_shape for s in sets}
    if len(shapes) > 1:
        raise InputError(sets[1].source, f"image size {sets[1].image_shape} differs from {sets[0].image_shape}")
    labels = None
    if all(s.labels is not None for s in sets):
        labels = np.concatenate([s.labels for s in sets])
    return ImageSet(
        np.concatenate([s.images for s in sets]),
        labels,
        [n for s in sets for n in s.names],
        ", ".join(s.source for s in sets),
        [w for s in sets for w in s.warnings],
    )


# --- readers ---------------------------------------------------------------------------


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(8)
    except OSError as err:
        raise InputError(path, f"cannot read: {err.strerror or err}") from None


def _read_hdf5(path: Path) -> ImageSet:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise InputError(path, f"damaged or truncated HDF5 file ({first_line(err)})") from None
    with f:
        if "data" not in f:
            found = ", ".join(sorted(f.keys())) or "nothing"
            hint = " (this looks like a model file)" if "model_config" in f.attrs or "model_weights" in f else ""
            raise InputError(path, f"no 'data' dataset; found {found}{hint}")
        data = f["data"]
        if not isinstance(data, h5py.Dataset):
            raise InputError(path, "'data' is a group, not an array")
        label_key = "label" if "label" in f else ("labels" if "labels" in f else None)
        try:
            labels_ds = None if label_key is None else f[label_key]
            if labels_ds is not None:
                if not isinstance(labels_ds, h5py.Dataset):
                    raise InputError(path, f"'{label_key}' is a group, not an array")
                n_images = data.shape[0] if data.ndim else 0
                if labels_ds.ndim == 0 or labels_ds.size > 2 * n_images * 4096:
                    raise InputError(path, f"'{label_key}' has shape {labels_ds.shape}; expected one label per image")
                if labels_ds.shape[0] != n_images:
                    raise InputError(path, f"{labels_ds.shape[0]} labels for {n_images} images")
            images = _to_uint8_images(path, data)
            labels = None if labels_ds is None else _to_labels(path, np.asarray(labels_ds), len(images))
        except OSError as err:
            raise InputError(path, f"unreadable data, the file may be truncated ({first_line(err)})") from None
    names = [f"{path}[{i}]" for i in range(len(images))]
    return ImageSet(images, labels, names, str(path))


def _read_npz(path: Path) -> ImageSet:
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            x_key = next((k for k in ("x", "data", "images") if k in keys), None)
            if x_key is None:
                raise InputError(path, f"no 'x' array; found {', '.join(sorted(keys)) or 'nothing'}")
            y_key = next((k for k in ("y", "label", "labels") if k in keys), None)
            x_shape = npz_member_shape(npz, x_key)
            if len(x_shape) == 4:
                channels_first = x_shape[1] in (1, 3, 4) and x_shape[3] not in (1, 3, 4)
                check_fits_in_memory(path, x_shape[0], *(x_shape[2:4] if channels_first else x_shape[1:3]))
            if y_key is not None and np.prod(npz_member_shape(npz, y_key), dtype=float) > 2 * max(1, x_shape[0]) * 4096:
                raise InputError(path, f"'{y_key}' has shape {npz_member_shape(npz, y_key)}; expected one label per image")
            images = _to_uint8_images(path, npz[x_key])
            labels = None if y_key is None else _to_labels(path, npz[y_key], len(images))
    except InputError:
        raise
    except MemoryError:
        raise InputError(path, "arrays too large for this machine's memory") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise InputError(path, f"not a readable .npz file ({first_line(err)})") from None
    return ImageSet(images, labels, [f"{path}[{i}]" for i in range(len(images))], str(path))


def npz_member_shape(npz, key: str) -> tuple[int, ...]:
    """An .npz array's shape from its header, without reading the array."""
    with npz.zip.open(f"{key}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, _ = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, _ = np.lib.format.read_array_header_2_0(fh)
    return tuple(int(d) for d in shape)


def _read_folder(folder: Path, size: tuple[int, int] | None) -> ImageSet:
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise InputError(folder, "folder holds no images")
    images, warnings = [], []
    for p in files:
        img = _read_image(p)
        if size is not None and img.shape[:2] != tuple(size):
            warnings.append(f"{p}: image is {img.shape[0]}x{img.shape[1]}, resized to the model's {size[0]}x{size[1]}")
            img = _resize_image(img, size)
        elif images and img.shape != images[0].shape:
            raise InputError(p, f"image is {img.shape[0]}x{img.shape[1]}, others in the folder are "
                             f"{images[0].shape[0]}x{images[0].shape[1]}")
        images.append(img)
    found = [_label_from_name(p) for p in files]
    labels = None
    if all(k is not None for k in found):
        labels = np.array(found, dtype=np.int64)
    elif any(k is not None for k in found):
        warnings.append(f"{folder}: only some file names carry label<k>; labels ignored")
    return ImageSet(np.stack(images), labels, [str(p) for p in files], str(folder), warnings)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                im = Image.alpha_composite(background, rgba)
            rgb = im.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8).copy()
    except UnidentifiedImageError:
        raise InputError(path, "not an image file (expected PNG, JPEG, BMP, HDF5, .npz or a folder)") from None
    except Image.DecompressionBombError:
        raise InputError(path, "image is too large to be a face crop (decompression bomb guard)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(path, f"damaged image ({first_line(err)})") from None


def _resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One uint8 RGB image to (height, width), bilinear."""
    from PIL import Image

    h, w = size
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))


def _label_from_name(path: Path) -> int | None:
    m = LABEL_IN_NAME.search(path.stem)
    return int(m.group(1)) if m else None


# --- arrays ----------------------------------------------------------------------------


def _to_uint8_images(path: Path, data) -> np.ndarray:
    """(N, 3, H, W) or (N, H, W, C) numeric array -> uint8 (N, H, W, 3), chunk by chunk."""
    shape = tuple(data.shape)
    if len(shape) != 4:
        raise InputError(path, f"image array has rank {len(shape)} {shape}; expected (N, 3, H, W) or (N, H, W, 3)")
    channels_first = shape[1] in (1, 3, 4) and shape[3] not in (1, 3, 4)
    if not channels_first and shape[3] not in (1, 3, 4):
        raise InputError(path, f"image array {shape} has no channel axis of 1, 3 or 4")
    kind = np.dtype(data.dtype).kind
    if kind not in "uif" and not (kind == "b"):
        raise InputError(path, f"image array has non-numeric dtype {data.dtype}")
    n = shape[0]
    if n == 0:
        raise InputError(path, "image array is empty")
    h, w = (shape[2], shape[3]) if channels_first else (shape[1], shape[2])
    check_fits_in_memory(path, n, h, w)
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    unit_range = None
    for start in range(0, n, CHUNK):
        chunk = np.asarray(data[start : start + CHUNK])
        if channels_first:
            chunk = chunk.transpose(0, 2, 3, 1)
        if kind == "f":
            if not np.isfinite(chunk).all():
                raise InputError(path, "image array holds NaN or infinite values")
            if unit_range is None:
                unit_range = float(chunk.max()) <= 1.0
            if unit_range:
                chunk = chunk * 255.0
            chunk = np.rint(chunk)
        lo, hi = chunk.min(), chunk.max()
        if lo < 0 or hi > 255:
            raise InputError(path, f"pixel values range {lo}..{hi}, outside 0..255")
        c = chunk.shape[-1]
        if c == 4:
            chunk = chunk[..., :3]
        elif c == 1:
            chunk = np.repeat(chunk, 3, axis=-1)
        out[start : start + len(chunk)] = chunk
    return out


def _to_labels(path: Path, labels: np.ndarray, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:  # one-hot
        labels = labels.argmax(axis=1)
    labels = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
    if labels.ndim != 1:
        raise InputError(path, f"labels have shape {labels.shape}; expected one per image")
    if len(labels) != n:
        raise InputError(path, f"{len(labels)} labels for {n} images")
    if labels.dtype.kind not in "uif":
        raise InputError(path, f"labels have non-numeric dtype {labels.dtype}")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels) & (labels == np.round(labels))):
        raise InputError(path, "labels are not whole numbers")
    if len(labels) and labels.min() < 0:
        raise InputError(path, "labels are negative")
    if len(labels) and labels.max() > MAX_LABEL:
        raise InputError(path, f"label {labels.max()} is not a plausible class number")
    return labels.astype(np.int64)


def check_fits_in_memory(path: Path, n: int, h: int, w: int) -> None:
    """Refuse, before allocating, a set whose pixels would not fit in half this machine's memory."""
    if min(n, h, w) <= 0:
        raise InputError(path, f"image array of {n} images of {h}x{w} is empty")
    need = int(n) * int(h) * int(w) * 3
    limit = memory_bytes() // 2
    if need > limit:
        raise InputError(path, f"holds {n} images of {h}x{w} ({need / 2**30:.1f} GiB as pixels), more than "
                         f"half this machine's memory ({limit / 2**30:.1f} GiB); split it into smaller files")


def memory_bytes() -> int:
    """The machine's physical memory in bytes (8 GiB where the system cannot say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return 8 * 2**30


def check_labels_in_range(images: ImageSet, num_classes: int) -> None:
    """Labels must be classes of the model they are used with."""
    if images.labels is None or len(images.labels) == 0:
        return
    top = int(images.labels.max())
    if top >= num_classes:
        bad = int(np.sum(images.labels >= num_classes))
        raise InputError(images.source, f"{bad} label(s) up to {top} are not classes of this model "
                         f"(0..{num_classes - 1})")

