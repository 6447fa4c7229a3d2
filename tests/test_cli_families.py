"""The shell's view of the EM families: fit mixture (typed table, missing cells), fit factor,
predict, score, report."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import elbokit
from elbokit.cli import main


def test_fit_mixture_from_a_typed_parquet_file_then_predict_and_report(tmp_path, capsys):
    g = np.random.default_rng(0)
    z = g.integers(0, 2, 300)
    height = g.normal(3.0 * z, 1.0)
    height[:20] = np.nan  # empty cells: missing values
    pq.write_table(pa.table({"height": height, "visits": g.poisson(1 + 4 * z),
                             "colour": np.where(z == 1, "red", "blue")}), tmp_path / "t.parquet")
    assert main(["fit", "mixture", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "m"),
                 "-k", "2"]) == 0
    model = elbokit.load(tmp_path / "m")
    assert model.categories_ == {"colour": ["blue", "red"]}
    assert main(["predict", str(tmp_path / "m"), str(tmp_path / "t.parquet"),
                 "--out", str(tmp_path / "p.npy")]) == 0
    labels = np.load(tmp_path / "p.npy")
    assert max(np.mean(labels == z), np.mean(labels != z)) > 0.95
    assert main(["report", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "report.html").read_text().count("<img") >= 2


def test_fit_factor_and_mixture_families_on_csv(tmp_path):
    g = np.random.default_rng(1)
    X = g.normal(size=(200, 2)) @ g.normal(size=(2, 5)) + g.normal(size=(200, 5)) * 0.3
    X[g.random(X.shape) < 0.05] = np.nan
    np.savetxt(tmp_path / "x.csv", X, delimiter=",", header="a,b,c,d,e", comments="")
    assert main(["fit", "factor", str(tmp_path / "x.csv"), "--out", str(tmp_path / "f"), "-k", "2"]) == 0
    assert main(["transform", str(tmp_path / "f"), str(tmp_path / "x.csv"),
                 "--out", str(tmp_path / "z.npy")]) == 0
    assert np.load(tmp_path / "z.npy").shape == (200, 2)
    B = (g.random((200, 6)) < 0.3).astype(float)
    np.save(tmp_path / "b.npy", B)
    assert main(["fit", "mixture", str(tmp_path / "b.npy"), "--out", str(tmp_path / "b"),
                 "--family", "bernoulli", "-k", "3"]) == 0
    assert main(["score", str(tmp_path / "b"), str(tmp_path / "b.npy"),
                 "--out", str(tmp_path / "s.npy")]) == 0
    assert np.isfinite(np.load(tmp_path / "s.npy")).all()
    assert main(["report", str(tmp_path / "f")]) == 0
