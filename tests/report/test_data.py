"""A report's data: samples that keep their row numbers, labels checked against the rows."""

import numpy as np
import pytest

from elbokit.report.data import Data, categories, read_labels


def test_a_streamed_sample_keeps_the_row_numbers(tmp_path):
    X = np.arange(30000, dtype=np.float64).reshape(-1, 3)  # row i holds 3i, 3i+1, 3i+2
    np.save(tmp_path / "x.npy", X)
    rows = Data(str(tmp_path / "x.npy")).sample(700, seed=3)
    assert rows.n_total == 10000 and rows.is_sample and len(rows.index) == 700
    assert (np.diff(rows.index) > 0).all()
    np.testing.assert_array_equal(rows.X, X[rows.index])
    np.testing.assert_array_equal(Data(str(tmp_path / "x.npy")).take([9999, 5, 5]), X[[9999, 5, 5]])


def test_labels_from_text_with_or_without_a_header(tmp_path):
    (tmp_path / "a.csv").write_text("species\nsetosa\nvirginica\nsetosa\n")
    assert read_labels(str(tmp_path / "a.csv"), 3, "d").tolist() == ["setosa", "virginica", "setosa"]
    (tmp_path / "b.txt").write_text("class\n1\n0\n")
    assert read_labels(str(tmp_path / "b.txt"), 2, "d").tolist() == [1, 0]
    (tmp_path / "c.csv").write_text("x,y\n1,a\n2,b\n")
    assert read_labels(f"{tmp_path / 'c.csv'}:y", 2, "d").tolist() == ["a", "b"]
    with pytest.raises(ValueError, match="several columns"):
        read_labels(str(tmp_path / "c.csv"), 2, "d")
    with pytest.raises(ValueError, match=r"4 entries \(3 after a header line\) but d has 5 rows"):
        read_labels(str(tmp_path / "a.csv"), 5, "d")
    np.save(tmp_path / "l.npy", np.array([2, 0, 2]))
    names, codes = categories(read_labels(str(tmp_path / "l.npy"), 3, "d"))
    assert names == [0, 2] and codes.tolist() == [1, 0, 1]
