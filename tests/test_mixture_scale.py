"""GaussianMixture at scale: streamed fits, stepwise EM, float32 numerics, degeneracy."""

import warnings

import numpy as np
import pytest
import torch

from elbokit import ConvergenceWarning, DegenerateComponentWarning, GaussianMixture

from .conftest import COVARIANCE_TYPES, make_blobs_data


@pytest.fixture(scope="module")
def big():
    return make_blobs_data(n=3000, d=4, k=3, seed=5).astype(np.float32)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_streamed_fits_equal_the_in_memory_fit(ct, big, tmp_path):
    np.save(tmp_path / "x.npy", big)
    kw = dict(n_components=3, covariance_type=ct, random_state=0, max_iter=20, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = GaussianMixture(**kw).fit(big)
        fits = [
            GaussianMixture(batch_size=257, **kw).fit(big),
            GaussianMixture(batch_size=257, **kw).fit(str(tmp_path / "x.npy")),
            GaussianMixture(batch_size=300, **kw).fit(np.load(tmp_path / "x.npy", mmap_mode="r")),
            GaussianMixture(**kw).fit([big[i:i + 700] for i in range(0, len(big), 700)]),
            GaussianMixture(**kw).fit(lambda: (big[i:i + 999] for i in range(0, len(big), 999))),
        ]
    for gm in fits:
        np.testing.assert_allclose(gm.means_, ref.means_, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(gm.covariances_, ref.covariances_, rtol=1e-4, atol=1e-5)
        # float32 GEMMs round differently for other chunk shapes: agreement to rounding
        np.testing.assert_allclose(gm.lower_bounds_, ref.lower_bounds_, rtol=1e-4)
        assert gm.lower_bound_ == pytest.approx(ref.lower_bound_, rel=1e-6)
    # predictions and scores stream too
    np.testing.assert_array_equal(fits[1].predict(str(tmp_path / "x.npy")), ref.predict(big))
    assert fits[1].score(str(tmp_path / "x.npy")) == pytest.approx(ref.score(big), rel=1e-6)


def test_streamed_weights_equal_sample_weight(big):
    X = big.astype(np.float64)  # float64 in, float64 fitted arrays, as for streams
    w = np.random.default_rng(0).uniform(0, 2, len(X))
    kw = dict(n_components=3, random_state=0, dtype="float64", means_init=X[:3], max_iter=10)
    a = GaussianMixture(**kw).fit(X, sample_weight=w)
    b = GaussianMixture(**kw).fit([(X[i:i + 500], w[i:i + 500]) for i in range(0, len(X), 500)])
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-10)


def test_partial_fit_reaches_the_batch_optimum(big):
    batch = GaussianMixture(3, random_state=0, n_init=3).fit(big)
    online = GaussianMixture(3, random_state=0)
    rng = np.random.default_rng(1)
    for epoch in range(4):
        order = rng.permutation(len(big))
        for i in range(0, len(big), 200):
            online.partial_fit(big[order[i:i + 200]])
    assert online.n_steps_ == 4 * 15
    assert len(online.lower_bounds_) == online.n_steps_
    assert online.score(big) == pytest.approx(batch.score(big), abs=0.02)
    order = np.argsort(online.means_[:, 0])
    np.testing.assert_allclose(online.means_[order], batch.means_[np.argsort(batch.means_[:, 0])],
                               atol=0.1)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_stepwise_algorithm_converges_near_exact_em(ct, big):
    exact = GaussianMixture(3, covariance_type=ct, random_state=0).fit(big)
    online = GaussianMixture(3, covariance_type=ct, random_state=0, algorithm="stepwise",
                             batch_size=256, max_iter=30, tol=1e-4).fit(big)
    assert online.n_steps_ > 0
    assert online.lower_bound_ == pytest.approx(online.score(big), rel=1e-6)
    assert online.score(big) == pytest.approx(exact.score(big), abs=0.02)


@pytest.mark.parametrize("kwargs, match", [
    (dict(step_decay=0.5), "step_decay"),
    (dict(step_decay=1.5), "step_decay"),
    (dict(step_offset=-1.0), "step_offset"),
    (dict(algorithm="sgd"), "algorithm='sgd'"),
])
def test_step_schedule_is_validated(kwargs, match, big):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(2, **kwargs).partial_fit(big[:100])
    with pytest.raises(ValueError, match=match):
        GaussianMixture(2, algorithm="stepwise", **{k: v for k, v in kwargs.items() if k != "algorithm"}
                        ).set_params(**kwargs).fit(big[:100])


def test_partial_fit_needs_enough_rows_and_matching_features(big):
    with pytest.raises(ValueError, match="n_components=5 must be <= n_samples=3"):
        GaussianMixture(5).partial_fit(big[:3])
    gm = GaussianMixture(2, random_state=0).partial_fit(big[:100])
    with pytest.raises(ValueError, match="expecting 4 features"):
        gm.partial_fit(big[:10, :3])


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_float32_matches_float64_on_ill_scaled_data(ct):
    """Large means, small variances: where E[x^2] - E[x]^2 cancels in float32."""
    rng = np.random.default_rng(0)
    centres = 1e4 + rng.normal(scale=1.0, size=(3, 3))
    X = np.concatenate([c + 1e-2 * rng.normal(size=(400, 3)) for c in centres])
    kw = dict(n_components=3, covariance_type=ct, random_state=0, reg_covar=1e-9)
    f64 = GaussianMixture(dtype="float64", **kw).fit(X)
    f32 = GaussianMixture(dtype="float32", means_init=f64.means_, **kw).fit(X)
    order32, order64 = np.argsort(f32.means_[:, 0]), np.argsort(f64.means_[:, 0])
    np.testing.assert_allclose(f32.means_[order32], f64.means_[order64], rtol=0, atol=1e-3)
    np.testing.assert_allclose(f32.covariances_[order32] if ct != "tied" else f32.covariances_,
                               f64.covariances_[order64] if ct != "tied" else f64.covariances_,
                               rtol=0.05, atol=5e-3 * np.abs(f64.covariances_).max())
    assert f32.score(X) == pytest.approx(f64.score(X), abs=0.05)


def test_empty_components_are_reseeded_and_reported():
    """Start two components far from all data: they lose every sample."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(2000, 2)) - 4, rng.normal(size=(2000, 2)) + 4])
    means_init = np.array([[-4.0, 0.0], [4.0, 0.0], [1e3, 1e3], [-1e3, 1e3]])
    with pytest.warns(DegenerateComponentWarning, match="re-seeded"):
        gm = GaussianMixture(4, means_init=means_init, random_state=0, max_iter=50).fit(X)
    assert gm.n_reseeded_ >= 2
    for a in ("weights_", "means_", "covariances_"):
        assert np.isfinite(getattr(gm, a)).all()
    assert np.all(gm.weights_ > 0.01)  # every component holds data again
    assert np.isfinite(gm.score_samples(X)).all()


def test_predict_on_many_rows_works_in_bounded_chunks():
    gm = GaussianMixture(4, random_state=0, batch_size=4096).fit(np.random.default_rng(0).normal(size=(500, 3)))
    X = torch.randn(200_000, 3)
    labels = gm.predict(X)
    assert labels.shape == (200_000,) and labels.dtype == torch.int64


def test_fit_from_csv_and_parquet_files(big, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    np.savetxt(tmp_path / "x.csv", big, delimiter=",", header="a,b,c,d", comments="", fmt="%.9g")
    pq.write_table(pa.table({c: big[:, i] for i, c in enumerate("abcd")}), tmp_path / "x.parquet")
    kw = dict(n_components=3, random_state=0)
    ref = GaussianMixture(**kw).fit(big)
    for name in ("x.csv", "x.parquet"):
        gm = GaussianMixture(**kw).fit(tmp_path / name)
        np.testing.assert_allclose(gm.means_, ref.means_, atol=1e-4)
        assert isinstance(gm.predict(tmp_path / name), np.ndarray)


def test_sample_weight_with_a_stream_is_refused(big):
    with pytest.raises(ValueError, match="sample_weight goes with in-memory X"):
        GaussianMixture(2).fit([big], sample_weight=np.ones(len(big)))
