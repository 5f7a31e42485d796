"""Data reading: every supported layout, and a clear one-line error for each kind of bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image

from engine.io import datasets
from engine.errors import InputError

RNG = np.random.default_rng(7)


def faces(n=5, h=55, w=47):
    return RNG.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def write_h5(path, **arrays):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return path


def test_official_layout_float32_nchw(tmp_path):
    x = faces()
    path = write_h5(tmp_path / "clean.h5", data=x.transpose(0, 3, 1, 2).astype(np.float32), label=np.arange(5, dtype=np.float32))
    s = datasets.read(path)
    assert s.images.dtype == np.uint8
    np.testing.assert_array_equal(s.images, x)
    np.testing.assert_array_equal(s.labels, np.arange(5))
    assert s.names[2] == f"{path}[2]"


def test_nhwc_uint8_and_unit_range_floats(tmp_path):
    x = faces()
    s = datasets.read(write_h5(tmp_path / "a.h5", data=x, label=np.zeros(5)))
    np.testing.assert_array_equal(s.images, x)
    s = datasets.read(write_h5(tmp_path / "b.h5", data=x.astype(np.float32) / 255, label=np.zeros(5)))
    np.testing.assert_array_equal(s.images, x)


def test_npz(tmp_path):
    x = faces()
    np.savez(tmp_path / "set.npz", x=x, y=np.arange(5))
    s = datasets.read(tmp_path / "set.npz")
    np.testing.assert_array_equal(s.images, x)
    np.testing.assert_array_equal(s.labels, np.arange(5))


def test_folder_with_labels_in_names_rgba_and_gray(tmp_path):
    x = faces(3)
    Image.fromarray(x[0]).save(tmp_path / "a_label4.png")
    rgba = np.dstack([x[1], np.full((55, 47), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "b_label7.png")
    Image.fromarray(x[2][..., 0]).save(tmp_path / "c_label9.bmp")
    (tmp_path / ".DS_Store").write_bytes(b"\0\1junk")
    s = datasets.read(tmp_path)
    assert len(s) == 3
    np.testing.assert_array_equal(s.labels, [4, 7, 9])
    np.testing.assert_array_equal(s.images[0], x[0])
    np.testing.assert_array_equal(s.images[1], x[1])  # opaque alpha dropped
    np.testing.assert_array_equal(s.images[2], np.repeat(x[2][..., :1], 3, axis=-1))


def test_single_image_resized_with_warning_naming_the_file(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(faces(1, 110, 94)[0]).save(path)
    s = datasets.read(path, size=(55, 47))
    assert s.images.shape == (1, 55, 47, 3)
    assert s.labels is None
    assert len(s.warnings) == 1 and str(path) in s.warnings[0] and "resized" in s.warnings[0]


def test_digest_depends_on_content_only(tmp_path):
    x = faces()
    a = datasets.read(write_h5(tmp_path / "a.h5", data=x, label=np.zeros(5)))
    b = datasets.read(write_h5(tmp_path / "b.h5", data=x.transpose(0, 3, 1, 2), label=np.zeros(5)))
    c = datasets.read(write_h5(tmp_path / "c.h5", data=x[::-1], label=np.zeros(5)))
    assert a.digest == b.digest != c.digest


def _truncated(tmp_path):
    good = write_h5(tmp_path / "good.h5", data=faces(50), label=np.zeros(50))
    bad = tmp_path / "data.h5"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    return bad


BAD_INPUTS = {
    "missing file": (lambda d: d / "nope.h5", "no such file"),
    "not HDF5": (lambda d: (d / "data.h5").write_text("just text") and d / "data.h5", "not an HDF5 file"),
    "truncated HDF5": (_truncated, "truncated|damaged"),
    "no data/label": (lambda d: write_h5(d / "data.h5", images=np.zeros((2, 55, 47, 3))), "no 'data' dataset; found images"),
    "wrong rank": (lambda d: write_h5(d / "data.h5", data=np.zeros((4, 55, 47)), label=np.zeros(4)), "rank 3"),
    "label count": (lambda d: write_h5(d / "data.h5", data=faces(5), label=np.zeros(4)), "4 labels for 5 images"),
    "values out of range": (lambda d: write_h5(d / "data.h5", data=np.full((2, 55, 47, 3), 300.0)), "outside 0..255"),
    "empty folder": (lambda d: (d / "empty").mkdir() or d / "empty", "holds no images"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_data_inputs(tmp_path, case):
    make, message = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(InputError, match=message) as err:
        datasets.read(path)
    text = str(err.value)
    assert text.startswith(str(path)) and "\n" not in text


def test_non_image_file_among_images_names_that_file(tmp_path):
    Image.fromarray(faces(1)[0]).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not a face")
    with pytest.raises(InputError, match="not an image file") as err:
        datasets.read(tmp_path)
    assert str(tmp_path / "notes.txt") in str(err.value)


def test_labels_only_some_names_are_ignored_with_warning(tmp_path):
    x = faces(2)
    Image.fromarray(x[0]).save(tmp_path / "a_label1.png")
    Image.fromarray(x[1]).save(tmp_path / "b.png")
    s = datasets.read(tmp_path)
    assert s.labels is None and "labels ignored" in s.warnings[0]


def test_read_many_joins_sources(tmp_path):
    x = faces(3)
    Image.fromarray(x[0]).save(tmp_path / "one_label3.png")
    path = write_h5(tmp_path / "set.h5", data=x[1:], label=[5, 6])
    s = datasets.read_many([tmp_path / "one_label3.png", path])
    assert len(s) == 3
    np.testing.assert_array_equal(s.labels, [3, 5, 6])
