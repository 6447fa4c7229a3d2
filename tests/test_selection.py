"""elbokit.select: the sweep over K x covariance type (x family), its scores and its choice."""

import math

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import elbokit
from elbokit.selection import icl, kmeans_partition, start_from_partition, ward_partitions

from .conftest import make_blobs_data


@pytest.fixture(scope="module")
def cigars():
    """Two parallel cigar-shaped clusters, apart along their short axis (scikit-learn#34845)."""
    rng = np.random.default_rng(0)
    cov = np.diag([30.0, 0.15])
    return np.concatenate([rng.multivariate_normal([0, 0], cov, 150),
                           rng.multivariate_normal([0, 2.0], cov, 150)])


def test_the_sweep_finds_parallel_cigars(cigars):
    sel = elbokit.select(cigars, range(1, 5), dtype="float64")
    assert sel.best_settings["K"] == 2 and sel.best_settings["covariance_type"] in ("tied", "full")
    assert len(sel.rows) == 16 and {r[1] for r in sel.rows} == {"full", "tied", "diag", "spherical"}
    curves = sel.pivot("BIC")
    assert set(curves) == {("gaussian", t) for t in ("full", "tied", "diag", "spherical")}
    assert curves[("gaussian", "tied")][2] == min(curves[("gaussian", "tied")].values())
    # k-means splits cigars across their long axis; the Ward tree on whitened data does not
    truth = np.repeat([0, 1], 150)
    assert adjusted_rand_score(truth, ward_partitions(cigars, [2])[2]) > 0.9
    assert adjusted_rand_score(truth, kmeans_partition(cigars, 2, seed=0)) < 0.2
    assert "start=" in " ".join(r[-1] for r in sel.rows)
    assert sel.best_model_ is sel.models[sel.best]  # fitted on every row already
    assert "best by bic" in str(sel)


def test_scores_bic_and_icl(cigars):
    sel = elbokit.select(cigars, [2, 3], ["diag"], dtype="float64")
    h = sel.header
    for row, model in zip(sel.rows, sel.models):
        n = len(cigars)
        assert row[h.index("BIC")] == pytest.approx(
            -2 * row[h.index("log-likelihood")] + row[h.index("parameters")] * math.log(n))
        tau = model.predict_proba(cigars)
        assert row[h.index("ICL")] == pytest.approx(
            row[h.index("BIC")] - 2 * np.log(tau.max(1)).sum())
        assert row[h.index("ICL")] >= row[h.index("BIC")]
        assert icl(model, cigars) == pytest.approx(row[h.index("ICL")])


def test_one_partition_starts_every_covariance_type():
    X = make_blobs_data(n=300, d=3, k=3, seed=4)
    labels = kmeans_partition(X, 3, seed=0)
    full = start_from_partition(X, labels, 3, "full", 0.0)
    for k in range(3):
        part = X[labels == k]
        np.testing.assert_allclose(full["means_init"][k], part.mean(0), rtol=1e-10)
        np.testing.assert_allclose(np.linalg.inv(full["precisions_init"][k]),
                                   np.cov(part.T, bias=True), rtol=1e-8)
    diag = start_from_partition(X, labels, 3, "diag", 0.0)
    np.testing.assert_allclose(1 / diag["precisions_init"],
                               [np.diag(np.linalg.inv(p)) for p in full["precisions_init"]], rtol=1e-8)
    assert start_from_partition(X, np.zeros(300, dtype=int), 3, "full", 0.0) is None  # empty parts


def test_held_out_scores_refit_and_errors():
    X = make_blobs_data(n=300, d=2, k=3, seed=6)
    sel = elbokit.select(X, [2, 3, 4], ["full", "spherical"], criterion="heldout",
                         validation_fraction=0.25, prior="default", dtype="float64")
    j = sel.header.index("held-out log p(x)")
    assert sel.rows[sel.best][j] == max(r[j] for r in sel.rows)
    assert sel.best_settings["prior"] == "default"
    best = sel.best_model_
    assert best is not sel.models[sel.best]  # refitted on every row
    assert best.n_components == sel.best_settings["K"] and best.prior == "default"
    with pytest.raises(ValueError, match="validation_fraction"):
        elbokit.select(X, [2], criterion="heldout")
    with pytest.raises(ValueError, match="criterion"):
        elbokit.select(X, [2], criterion="bicc")


def test_other_families_join_the_sweep():
    rng = np.random.default_rng(0)
    counts = np.concatenate([rng.poisson([1, 8, 2], (150, 3)), rng.poisson([9, 1, 6], (150, 3))])
    sel = elbokit.select(counts.astype(float), [1, 2, 3], ["diag"], families=["gaussian", "poisson"])
    fams = {r[0] for r in sel.rows}
    assert fams == {"gaussian", "poisson"}
    assert sel.best_settings["family"] == "poisson" and sel.best_settings["K"] == 2


def test_a_dataframes_column_names_go_with_every_model():
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(make_blobs_data(n=200, d=2, k=2, seed=1), columns=["height", "weight"])
    sel = elbokit.select(X, [1, 2], ["full", "diag"], validation_fraction=0.2)
    for model in [*sel.models, sel.best_model]:
        assert list(model.feature_names_in_) == ["height", "weight"]
    with pytest.raises(ValueError, match="Feature names must be in the same order"):
        sel.best_model.predict(X[["weight", "height"]])
