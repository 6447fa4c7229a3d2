"""GaussianMixture, the estimator: EM properties, agreement with scikit-learn, API."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from elbokit import ConvergenceWarning, GaussianMixture
from elbokit.bounds import decompose_discrete

from .conftest import COVARIANCE_TYPES


def same_start(reference, **kw):
    """Estimator kwargs that start from ``reference``'s fitted parameters."""
    return dict(weights_init=reference.weights_, means_init=reference.means_,
                precisions_init=reference.precisions_, **kw)


# ---------------------------------------------------------------- EM properties
@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_em_never_decreases_the_log_likelihood(ct, weighted, blobs):
    w = np.random.default_rng(1).uniform(0.1, 3.0, len(blobs)) if weighted else None
    gm = GaussianMixture(4, covariance_type=ct, reg_covar=0.0, tol=0.0, max_iter=40,
                         init_params="random", random_state=0, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(blobs, sample_weight=w)
    steps = np.diff(gm.lower_bounds_)
    assert len(gm.lower_bounds_) == gm.n_iter_ + 1
    assert np.all(steps >= -1e-10 * np.abs(gm.lower_bounds_[1:])), steps.min()
    assert steps.sum() > 0


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_final_bound_is_the_exact_log_likelihood(ct, wine):
    X, _ = wine
    gm = GaussianMixture(3, covariance_type=ct, random_state=0, dtype="float64").fit(X)
    assert gm.lower_bound_ == pytest.approx(gm.score(X), rel=1e-12)
    assert gm.lower_bound_ == gm.lower_bounds_[-1]


def test_elbo_plus_kl_is_log_likelihood(wine):
    """log p(x) = ELBO(q) + KL(q || p(z|x)) for the posterior and for other q."""
    X, _ = wine
    gm = GaussianMixture(3, random_state=0, dtype="float64").fit(X)
    log_joint = torch.as_tensor(gm.log_joint(X))
    exact = decompose_discrete(log_joint)
    torch.testing.assert_close(exact.elbo, exact.log_marginal, rtol=0, atol=1e-9)
    assert float(exact.kl.abs().max()) < 1e-9
    torch.testing.assert_close(exact.log_marginal, torch.as_tensor(gm.score_samples(X)))
    g = torch.Generator().manual_seed(0)
    uniform = torch.full_like(log_joint, 1 / 3)
    perturbed = torch.softmax(log_joint + torch.randn(log_joint.shape, generator=g, dtype=torch.float64), 1)
    for q in (uniform, perturbed):
        parts = decompose_discrete(log_joint, q)
        torch.testing.assert_close(parts.elbo + parts.kl, parts.log_marginal, rtol=0, atol=1e-9)
        assert bool((parts.kl >= -1e-12).all()) and float(parts.kl.sum()) > 0
    assert bool((decompose_discrete(log_joint, uniform).kl > 0).all())


# ---------------------------------------------------------------- scikit-learn
@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_agrees_with_sklearn_from_the_same_start(ct, wine):
    X, _ = wine
    start = GaussianMixture(3, covariance_type=ct, max_iter=2, random_state=1,
                            init_params="random_from_data", dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start.fit(X)
        ours = GaussianMixture(3, covariance_type=ct, max_iter=8, tol=0, dtype="float64",
                               **same_start(start)).fit(X)
        sk = SkGaussianMixture(3, covariance_type=ct, max_iter=8, tol=0,
                               **same_start(start)).fit(X)
    np.testing.assert_allclose(ours.weights_, sk.weights_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.means_, sk.means_, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(ours.covariances_, sk.covariances_, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(ours.precisions_, sk.precisions_, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(ours.score_samples(X), sk.score_samples(X), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), atol=1e-9)
    assert ours.bic(X) == pytest.approx(sk.bic(X), rel=1e-10)
    assert ours.aic(X) == pytest.approx(sk.aic(X), rel=1e-10)
    # float32 compute (the default) stays close to the float64 reference
    f32 = GaussianMixture(3, covariance_type=ct, max_iter=8, tol=0, **same_start(start))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        f32.fit(X)
    np.testing.assert_allclose(f32.means_, sk.means_, atol=1e-4)
    np.testing.assert_allclose(f32.score_samples(X), sk.score_samples(X), atol=1e-3)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_integer_sample_weight_equals_repeated_rows(ct, wine):
    X, _ = wine
    w = np.random.default_rng(0).integers(0, 4, len(X))
    start = GaussianMixture(3, covariance_type=ct, random_state=0, dtype="float64").fit(X)
    kw = dict(covariance_type=ct, max_iter=6, tol=0, dtype="float64", **same_start(start))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = GaussianMixture(3, **kw).fit(X, sample_weight=w)
        repeated = GaussianMixture(3, **kw).fit(np.repeat(X, w, axis=0))
        sk = SkGaussianMixture(3, covariance_type=ct, max_iter=6, tol=0,
                               **same_start(start)).fit(np.repeat(X, w, axis=0))
    for a in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(weighted, a), getattr(repeated, a), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(getattr(weighted, a), getattr(sk, a), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(weighted.lower_bounds_, repeated.lower_bounds_, rtol=1e-10)


def test_clusters_recover_known_labels(wine):
    from sklearn.metrics import adjusted_rand_score

    X, y = wine
    gm = GaussianMixture(3, covariance_type="diag", n_init=3, random_state=0).fit(X)
    assert adjusted_rand_score(y, gm.predict(X)) > 0.8


# ---------------------------------------------------------------- API behaviour
def test_fit_predict_equals_fit_then_predict(blobs):
    a = GaussianMixture(3, random_state=0).fit_predict(blobs)
    b = GaussianMixture(3, random_state=0).fit(blobs).predict(blobs)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random", "random_from_data"])
def test_every_init_is_repeatable_and_fits(init, blobs):
    a = GaussianMixture(3, init_params=init, random_state=3, max_iter=200).fit(blobs)
    b = GaussianMixture(3, init_params=init, random_state=3, max_iter=200).fit(blobs)
    np.testing.assert_array_equal(a.means_, b.means_)
    assert a.converged_
    truth = GaussianMixture(3, n_init=5, random_state=0).fit(blobs).lower_bound_
    if init in ("kmeans", "k-means++"):  # random starts may settle in a worse optimum
        assert a.lower_bound_ == pytest.approx(truth, abs=1e-2)


def test_n_init_keeps_the_best_run(blobs):
    single = [GaussianMixture(6, init_params="random", random_state=s).fit(blobs).lower_bound_
              for s in range(3)]
    best = GaussianMixture(6, init_params="random", n_init=3, random_state=0).fit(blobs)
    assert best.lower_bound_ >= min(single) - 1e-9


def test_chunked_e_step_equals_one_batch(blobs):
    kw = dict(n_components=3, random_state=0, dtype="float64", init_params="random_from_data")
    whole = GaussianMixture(**kw).fit(blobs)
    chunked = GaussianMixture(batch_size=37, **kw).fit(blobs)
    np.testing.assert_allclose(whole.means_, chunked.means_, rtol=1e-10)
    np.testing.assert_allclose(whole.lower_bounds_, chunked.lower_bounds_, rtol=1e-12)
    np.testing.assert_allclose(whole.score_samples(blobs), chunked.score_samples(blobs), rtol=1e-12)


def test_convergence_warning_when_max_iter_is_too_small(wine):
    X, _ = wine
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        gm = GaussianMixture(3, max_iter=1, tol=1e-12, random_state=0).fit(X)
    assert not gm.converged_


def test_warm_start_continues_from_the_fitted_parameters(blobs):
    gm = GaussianMixture(3, max_iter=1, tol=0, warm_start=True, random_state=0, dtype="float64")
    bounds = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(4):
            bounds.append(gm.fit(blobs).lower_bound_)
    assert np.all(np.diff(bounds) >= -1e-12)
    assert gm.lower_bounds_[0] == pytest.approx(bounds[-2])


def test_verbose_prints_the_bound_per_iteration(capsys, wine):
    GaussianMixture(3, verbose=2, random_state=0).fit(wine[0])
    out = capsys.readouterr().out
    assert "iteration    1" in out and "bound" in out and "converged" in out


def test_sample_follows_the_fitted_mixture(blobs):
    gm = GaussianMixture(3, random_state=0, dtype="float64").fit(blobs)
    X, y = gm.sample(30000)
    assert X.shape == (30000, 3) and y.shape == (30000,)
    np.testing.assert_allclose(np.bincount(y, minlength=3) / 30000, gm.weights_, atol=0.015)
    for k in range(3):
        np.testing.assert_allclose(X[y == k].mean(0), gm.means_[k], atol=0.1)
        np.testing.assert_allclose(np.cov(X[y == k].T), gm.covariances_[k], rtol=0.08, atol=0.1)
    X2, _ = gm.sample(5)
    np.testing.assert_array_equal(X2, gm.sample(5)[0])  # random_state makes it repeatable


def test_torch_in_torch_out_numpy_in_numpy_out(blobs):
    Xt = torch.as_tensor(blobs)
    gm = GaussianMixture(3, random_state=0).fit(Xt)
    assert isinstance(gm.means_, torch.Tensor) and gm.means_.dtype == torch.float64
    for method in (gm.predict, gm.predict_proba, gm.score_samples, gm.log_joint):
        assert isinstance(method(Xt), torch.Tensor)
        assert isinstance(method(blobs), np.ndarray)
    assert isinstance(gm.sample(4)[0], torch.Tensor)
    ref = GaussianMixture(3, random_state=0).fit(blobs)
    np.testing.assert_allclose(gm.means_.numpy(), ref.means_, rtol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_fit_on_the_gpu(blobs):
    Xc = torch.as_tensor(blobs, device="cuda")
    for ct in COVARIANCE_TYPES:  # the same start on both devices (their random streams differ)
        start = GaussianMixture(3, covariance_type=ct, max_iter=2, random_state=0).fit(blobs)
        kw = dict(n_components=3, covariance_type=ct, **same_start(start))
        gm = GaussianMixture(**kw).fit(Xc)
        assert gm.means_.device.type == "cuda" and gm.predict(Xc).device.type == "cuda"
        ref = GaussianMixture(**kw).fit(blobs)
        np.testing.assert_allclose(gm.means_.cpu().numpy(), ref.means_, atol=1e-4)
        np.testing.assert_allclose(gm.score(blobs), ref.score(blobs), atol=1e-4)
    online = GaussianMixture(3, random_state=0).partial_fit(Xc[:300]).partial_fit(Xc[300:])
    assert online.means_.device.type == "cuda"


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad, match", [
    (np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 1.0]]), "NaN or inf"),
    (np.array([[0.0, np.inf], [1.0, 2.0], [3.0, 1.0]]), "NaN or inf"),
    (np.arange(5.0), "2-D"),
    (np.empty((0, 3)), "minimum of 1 is required"),
    (np.empty((4, 0)), "0 feature"),
    (np.array([["a", "b"], ["c", "d"]]), "numbers"),
])
def test_bad_X_is_a_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(1).fit(bad)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_components=10), "n_components=10 must be <= n_samples=5"),
    (dict(covariance_type="banana"), "covariance_type='banana'"),
    (dict(init_params="magic"), "init_params='magic'"),
    (dict(n_components=0), "n_components"),
    (dict(reg_covar=-1.0), "reg_covar"),
    (dict(tol=float("nan")), "tol"),
    (dict(dtype="float16"), "dtype"),
    (dict(means_init=np.zeros((2, 3))), r"means_init of shape \(1, 2\)"),
])
def test_bad_hyperparameters_are_clear_errors(kwargs, match):
    X = np.random.default_rng(0).normal(size=(5, 2))
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**kwargs).fit(X)


@pytest.mark.parametrize("w, match", [
    (-np.ones(20), "negative"),
    (np.zeros(20), "all zeros"),
    (np.ones(7), r"shape \(20,\)"),
    (np.full(20, np.nan), "NaN"),
])
def test_bad_sample_weight_is_a_clear_error(w, match, blobs):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(2).fit(blobs[:20], sample_weight=w)


def test_feature_count_mismatch_at_predict_time(blobs):
    gm = GaussianMixture(2, random_state=0).fit(blobs)
    with pytest.raises(ValueError, match="has 2 features, but GaussianMixture is expecting 3 features"):
        gm.predict(blobs[:, :2])


def test_unfitted_model_says_so():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        GaussianMixture(2).predict(np.zeros((3, 2)))


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_duplicated_points_do_not_produce_nan(ct, dtype):
    rng = np.random.default_rng(0)
    X = np.concatenate([np.repeat([[1.0, 2.0, 3.0]], 50, 0), rng.normal(size=(50, 3))])
    gm = GaussianMixture(4, covariance_type=ct, random_state=0, dtype=dtype).fit(X)
    for a in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert np.all(np.isfinite(getattr(gm, a)))
    assert np.all(np.isfinite(gm.score_samples(X)))
    assert np.isfinite(gm.lower_bounds_).all()


# ---------------------------------------------------------------- scikit-learn's checks
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402


_RANDOM_INIT_REASON = (
    "k-means++ draws rows at random: weighted draws and draws among repeated rows consume the "
    "random stream differently, so the two fits start elsewhere. EM itself is exactly "
    "weight-equivalent: see test_integer_sample_weight_equals_repeated_rows."
)


def _expected_failures(estimator):
    if estimator.n_components > 1:
        return {"check_sample_weight_equivalence_on_dense_data": _RANDOM_INIT_REASON}
    return {}


@parametrize_with_checks([GaussianMixture(), GaussianMixture(2, covariance_type="diag")],
                         expected_failed_checks=_expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    """scikit-learn's estimator checks pass, but one that needs a deterministic start."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)
