"""IDX files (the MNIST family's format)."""

import gzip

import numpy as np
import pytest

from elbokit.data.idx import load_idx_images, load_idx_labels, read_idx


def write_idx(path, array, type_code=0x08):
    header = bytes([0, 0, type_code, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(np.uint8 if type_code == 0x08 else ">f4").tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_images_round_trip(tmp_path, name):
    images = np.random.default_rng(0).integers(0, 256, size=(7, 4, 4), dtype=np.uint8)
    write_idx(tmp_path / name, images)
    np.testing.assert_array_equal(read_idx(tmp_path / name), images)
    X = load_idx_images(tmp_path / name)
    assert X.shape == (7, 16) and X.dtype == np.float32
    np.testing.assert_allclose(X, images.reshape(7, 16) / 255.0)
    B = load_idx_images(tmp_path / name, binarize="static", seed=1)
    assert set(np.unique(B)) <= {0.0, 1.0}
    assert abs(B.mean() - X.mean()) < 0.15


def test_labels_and_float_arrays(tmp_path):
    write_idx(tmp_path / "labels", np.arange(5))
    np.testing.assert_array_equal(load_idx_labels(tmp_path / "labels"), np.arange(5))
    write_idx(tmp_path / "floats", np.ones((2, 3)), type_code=0x0D)
    np.testing.assert_array_equal(read_idx(tmp_path / "floats"), np.ones((2, 3)))


def test_bad_files_are_clear_errors(tmp_path):
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    write_idx(tmp_path / "x", np.zeros((3, 4, 4)))
    raw = (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "x")
    write_idx(tmp_path / "v", np.zeros(3))
    with pytest.raises(ValueError, match="not a stack"):
        load_idx_images(tmp_path / "v")
