"""PPCA and FactorAnalysis: scikit-learn's likelihoods, the exact posterior (KL = 0),
EM on rows == ECME on the scatter matrix, missing values, save/load."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.decomposition import FactorAnalysis as SkFactorAnalysis

import elbokit
from elbokit import ConvergenceWarning, FactorAnalysis, Mixture, PPCA
from elbokit.families import FactorAnalyzer


def low_rank_data(n=3000, d=8, q=2, seed=0):
    g = np.random.default_rng(seed)
    W = g.normal(size=(d, q)) * 2
    return g.normal(size=(n, q)) @ W.T + g.normal(size=(n, d)) * g.uniform(0.3, 1.0, d) + 5.0


@pytest.fixture(scope="module")
def X():
    return low_rank_data()


def test_ppca_maximum_likelihood_equals_sklearn_pca_score(X):
    ours = PPCA(2).fit(X)
    sk = PCA(2).fit(X)
    # scikit-learn's PCA divides by n - 1; the maximum-likelihood PPCA by n, which raises
    # the mean log-likelihood by D / (4 n^2) + O(n^-3): 2e-7 here
    assert ours.score(X) - sk.score(X) == pytest.approx(X.shape[1] / (4 * len(X) ** 2), rel=1e-2, abs=1e-9)
    assert abs(ours.score(X) - sk.score(X)) < 1e-6
    axes = ours.components_ / np.linalg.norm(ours.components_, axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs(axes @ sk.components_.T).max(1), 1, atol=1e-6)


def test_factor_analysis_matches_sklearn_at_convergence(X):
    ours = FactorAnalysis(2, tol=1e-10).fit(X)
    sk = SkFactorAnalysis(2, tol=1e-8, max_iter=5000).fit(X)
    assert ours.converged_
    assert ours.score(X) >= sk.score(X) - 1e-4
    assert abs(ours.score(X) - sk.score(X)) < 1e-4
    np.testing.assert_allclose(ours.noise_variance_, sk.noise_variance_, rtol=1e-3)
    np.testing.assert_allclose(ours.get_covariance(), sk.get_covariance(), rtol=1e-3, atol=1e-4)
    assert np.all(np.diff(ours.lower_bounds_) >= -1e-12)


@pytest.mark.parametrize("cls", [PPCA, FactorAnalysis])
def test_em_on_rows_equals_the_scatter_solver_and_climbs(cls, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        em = cls(2, solver="em", tol=0, max_iter=300, batch_size=700).fit(X[:1000])
    fast = cls(2, tol=1e-10).fit(X[:1000])
    assert np.all(np.diff(em.lower_bounds_) >= -1e-10)
    assert em.lower_bound_ == pytest.approx(fast.lower_bound_, abs=2e-4)
    assert em.lower_bound_ <= fast.lower_bound_ + 1e-9


def test_the_posterior_is_exact_so_kl_is_zero(X):
    fa = FactorAnalysis(2).fit(X)
    exact = fa.bound(X[:20])
    np.testing.assert_allclose(exact.elbo.numpy(), exact.log_marginal.numpy(), atol=1e-9)
    np.testing.assert_allclose(exact.kl.numpy(), 0, atol=1e-10)
    np.testing.assert_allclose(exact.log_marginal.numpy(), fa.score_samples(X[:20]), rtol=1e-10)
    other = fa.bound(X[:20], q_mean=np.zeros((20, 2)), q_cov=np.eye(2))
    np.testing.assert_allclose((other.elbo + other.kl).numpy(), other.log_marginal.numpy(), atol=1e-8)
    assert bool((other.kl > 0).all())


def test_transform_inverse_transform_and_sample(X):
    fa = FactorAnalysis(2, random_state=0).fit(X)
    Z = fa.transform(X)
    assert Z.shape == (len(X), 2)
    sk = SkFactorAnalysis(2, tol=1e-8, max_iter=5000).fit(X)
    # the same posterior means up to a rotation of the latent space
    R, *_ = np.linalg.lstsq(Z, sk.transform(X), rcond=None)
    np.testing.assert_allclose(Z @ R, sk.transform(X), atol=1e-3)
    back = fa.inverse_transform(Z)
    assert back.shape == X.shape and np.mean((back - X) ** 2) < np.var(X, 0).sum()
    S = fa.sample(20000)
    # sampling error of a covariance from 20000 draws: sd ~ sqrt(2 / n) relative, ~1%
    cov = fa.get_covariance()
    scale = np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    assert np.abs(np.cov(S.T) - cov).max() / scale.max() < 0.05


def test_missing_values_inside_em(X):
    g = np.random.default_rng(1)
    Xm = X[:1500].copy()
    Xm[g.random(Xm.shape) < 0.2] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fa = FactorAnalysis(2, max_iter=200).fit(Xm)
    assert np.all(np.diff(fa.lower_bounds_) >= -1e-10)
    Z = fa.transform(Xm)
    assert np.isfinite(Z).all()
    full = FactorAnalysis(2).fit(X[:1500])
    np.testing.assert_allclose(fa.get_covariance(), full.get_covariance(), rtol=0.15, atol=0.3)
    filled = fa.impute(Xm)
    miss = np.isnan(Xm)
    err = np.mean((filled - X[:1500])[miss] ** 2)
    assert err < np.mean((np.nanmean(Xm, 0)[None].repeat(1500, 0) - X[:1500])[miss] ** 2)


def test_mixture_of_factor_analysers_separates_two_subspaces():
    a, b = low_rank_data(800, 6, 1, seed=1), low_rank_data(800, 6, 1, seed=2) - 10
    X = np.concatenate([a, b])
    m = Mixture(2, family=FactorAnalyzer(1), random_state=0, dtype="float64").fit(X)
    labels = m.predict(X)
    assert max(np.mean(labels[:800] == 0), np.mean(labels[:800] == 1)) > 0.98
    assert np.all(np.diff(m.lower_bounds_) >= -1e-9)


def test_save_load(X, tmp_path):
    fa = FactorAnalysis(2).fit(X)
    fa.save(tmp_path / "fa")
    back = elbokit.load(tmp_path / "fa")
    np.testing.assert_allclose(back.transform(X[:10]), fa.transform(X[:10]))
    np.testing.assert_allclose(back.components_, fa.components_)
    p = PPCA(3).fit(torch.as_tensor(X))
    assert isinstance(p.components_, torch.Tensor) and isinstance(p.noise_variance_, float)


def test_frozen_loadings_keep_em_monotone(X):
    W = np.random.default_rng(3).normal(size=(1, X.shape[1], 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m = Mixture(1, family=FactorAnalyzer(2), frozen={"components": W}, dtype="float64",
                    tol=0, max_iter=15).fit(X[:800])
    np.testing.assert_array_equal(m.params_["components"], W)
    assert np.all(np.diff(m.lower_bounds_) >= -1e-10)
    np.testing.assert_allclose(m.params_["loc"][0], X[:800].mean(0), rtol=1e-6)


def test_streamed_batches_equal_in_memory_em(X):
    kw = dict(solver="em", tol=0, max_iter=20, batch_size=250)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = FactorAnalysis(2, **kw).fit(X[:900])
        b = FactorAnalysis(2, **kw).fit([X[:300], X[300:600], X[600:900]])
        c = PPCA(2, algorithm="stepwise", batch_size=100, max_iter=3).fit(X[:900])
    np.testing.assert_allclose(b.lower_bounds_, a.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(b.get_covariance(), a.get_covariance(), rtol=1e-8)
    assert c.score(X[:900]) > PPCA(2).fit(X[:900]).score(X[:900]) - 0.5
