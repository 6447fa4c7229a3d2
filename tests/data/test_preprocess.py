"""Column selection and standardisation of data files (the CLI's --columns/--drop/--standardize)."""

import gzip

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from elbokit.data import preprocess


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3)) * [1.0, 1e3, 1e-3] + [5.0, -2e4, 1e8]
    X[:, 2] = 7.0  # a constant column
    path = tmp_path / "t.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("a,b,c,name\n")
        for i, row in enumerate(X):
            f.write(",".join(repr(float(v)) for v in row) + f",row{i}\n")
    return path, X


def test_standardiser_is_scikit_learns_across_batches(table):
    path, X = table
    prep = preprocess.preprocessing(path, drop=["name"], standardize=True)
    assert prep.columns == [0, 1, 2] and prep.names == ["a", "b", "c"]
    ref = StandardScaler().fit(X)
    np.testing.assert_allclose(prep.mean, ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(prep.scale, ref.scale_, rtol=1e-9)
    chunked = preprocess.standardiser(path, preprocess.choose_columns(path, drop=["name"]))
    np.testing.assert_allclose(chunked.mean, ref.mean_, rtol=1e-12)
    batches = list(preprocess.batches(path, prep, batch_rows=64))
    np.testing.assert_allclose(np.concatenate(batches), ref.transform(X), atol=1e-9)
    again = preprocess.Preprocessing.from_json(prep.to_json())
    assert again == prep


def test_columns_by_name_or_position_in_the_order_given(table, tmp_path):
    path, X = table
    np.testing.assert_array_equal(preprocess.read(path, preprocess.choose_columns(path, ["b", "0"])),
                                  X[:, [1, 0]])
    np.save(tmp_path / "x.npy", X)
    assert preprocess.choose_columns(tmp_path / "x.npy", drop=["1"]).columns == [0, 2]
    with pytest.raises(ValueError, match="no column 'd'; the columns are a, b, c, name"):
        preprocess.choose_columns(path, ["d"])
    with pytest.raises(ValueError, match="give positions from 0"):
        preprocess.choose_columns(tmp_path / "x.npy", ["a"])
    with pytest.raises(ValueError, match="removes every column"):
        preprocess.choose_columns(tmp_path / "x.npy", drop=["0", "1", "2"])
    assert preprocess.preprocessing(tmp_path / "x.npy") is None


def test_idx_names_only():
    assert preprocess.is_idx("train-images-idx3-ubyte.gz") and preprocess.is_idx("a.idx3")
    assert not preprocess.is_idx("my_idx3_data.csv") and not preprocess.is_idx("idx1.npy")
