"""The Gaussian mixture's math: densities, statistics, maximiser, sampler."""

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from elbokit.models.gaussian_mixture import (
    DegenerateCovarianceError,
    GaussianMixtureModel,
    GaussianMixtureParams,
    n_parameters,
    precisions_cholesky_from_covariances,
)

from ..conftest import COVARIANCE_TYPES


def random_params(ct, K=3, D=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    weights = torch.rand(K, generator=g, dtype=f64) + 0.2
    weights /= weights.sum()
    means = torch.randn(K, D, generator=g, dtype=f64) * 3
    A = torch.randn(K, D, D, generator=g, dtype=f64)
    full = A @ A.mT + torch.eye(D, dtype=f64)
    cov = {"full": full, "tied": full[0], "diag": full.diagonal(dim1=1, dim2=2).clone(),
           "spherical": full.diagonal(dim1=1, dim2=2).mean(1)}[ct]
    return GaussianMixtureParams(weights, means, cov, precisions_cholesky_from_covariances(cov, ct))


def dense_cov(params, ct, k):
    c = params.covariances
    D = params.means.shape[1]
    return {"full": lambda: c[k], "tied": lambda: c, "diag": lambda: torch.diag(c[k]),
            "spherical": lambda: c[k] * torch.eye(D, dtype=c.dtype)}[ct]().numpy()


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_log_joint_matches_scipy(ct):
    params = random_params(ct)
    model = GaussianMixtureModel(ct, 0.0, torch.float64)
    X = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    lj = model.log_joint(params, X).numpy()
    for k in range(3):
        ref = np.log(params.weights[k].item()) + multivariate_normal(
            params.means[k].numpy(), dense_cov(params, ct, k)).logpdf(X.numpy())
        np.testing.assert_allclose(lj[:, k], ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_maximize_on_hard_assignments_gives_sample_moments(ct):
    """With one-hot responsibilities the M-step returns per-cluster means and covariances."""
    params = random_params(ct)
    model = GaussianMixtureModel(ct, 0.0, torch.float64)
    X, z = model.sample(params, 3000, torch.Generator().manual_seed(2))
    resp = torch.nn.functional.one_hot(z, 3).double()
    # anchor deliberately far from the answer: the result must not depend on it
    anchor = GaussianMixtureParams(params.weights, params.means + 5.0, params.covariances,
                                   params.precisions_cholesky)
    new = model.maximize(model.statistics_from_responsibilities(anchor, X, resp, None), anchor)
    for k in range(3):
        Xk = X[z == k].numpy()
        np.testing.assert_allclose(new.means[k].numpy(), Xk.mean(0), atol=1e-9)
        np.testing.assert_allclose(new.weights[k].item(), len(Xk) / len(X), atol=1e-9)
    if ct == "full":
        for k in range(3):
            Xk = X[z == k].numpy()
            np.testing.assert_allclose(new.covariances[k].numpy(), np.cov(Xk.T, bias=True), atol=1e-8)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_sampler_matches_its_density(ct):
    """Moments of many draws match the parameters (within Monte Carlo error)."""
    params = random_params(ct)
    model = GaussianMixtureModel(ct, 0.0, torch.float64)
    n = 60000
    X, z = model.sample(params, n, torch.Generator().manual_seed(3))
    counts = torch.bincount(z, minlength=3).double() / n
    np.testing.assert_allclose(counts.numpy(), params.weights.numpy(), atol=4 * np.sqrt(0.25 / n))
    for k in range(3):
        Xk = X[z == k].numpy()
        cov = dense_cov(params, ct, k)
        se = np.sqrt(np.diag(cov) / len(Xk))
        assert np.all(np.abs(Xk.mean(0) - params.means[k].numpy()) < 5 * se + 1e-12)
        np.testing.assert_allclose(np.cov(Xk.T), cov, rtol=0.1, atol=0.1 * np.abs(cov).max())


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_non_positive_definite_covariance_is_a_clear_error(ct):
    cov = {"full": -torch.eye(2).expand(2, 2, 2), "tied": -torch.eye(2),
           "diag": -torch.ones(2, 2), "spherical": torch.tensor([1.0, 0.0])}[ct].double()
    with pytest.raises(DegenerateCovarianceError, match="reg_covar"):
        precisions_cholesky_from_covariances(cov, ct)


def test_parameter_count_matches_sklearn():
    from sklearn.mixture import GaussianMixture as SK

    X = np.random.default_rng(0).normal(size=(40, 3))
    for ct in COVARIANCE_TYPES:
        sk = SK(4, covariance_type=ct, random_state=0).fit(X)
        assert n_parameters(4, 3, ct) == sk._n_parameters()


def test_scatter_over_active_rows_equals_the_dense_scatter():
    """float32 skips rows whose responsibility is negligible; the sums do not change."""
    g = torch.Generator().manual_seed(0)
    K, D, n = 6, 4, 300
    Y = torch.randn(n, K, D, generator=g)
    owner = torch.randint(0, K, (n,), generator=g)
    rw = torch.zeros(n, K)
    rw[torch.arange(n), owner] = torch.rand(n, generator=g) * 0.5 + 0.5
    rw[torch.arange(n), (owner + 1) % K] = 1e-12  # negligible: dropped
    model = GaussianMixtureModel("full", 0.0, torch.float32)
    Yk, kept = model._active_rows(Y, rw)
    assert Yk.shape[:2] == kept.shape and Yk.shape[1] < n // 2  # the sparse path was taken
    Yt, rwt = Y.transpose(0, 1), rw.T  # (K, n, D), (K, n)
    dense = torch.bmm((Yt * rwt.unsqueeze(2)).mT, Yt)
    sparse = torch.bmm((Yk * kept.unsqueeze(2)).mT, Yk)
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close((Yk * kept.unsqueeze(2)).sum(1), (Yt * rwt.unsqueeze(2)).sum(1),
                               rtol=1e-5, atol=1e-6)
    # float64 keeps every row
    Y64, kept64 = GaussianMixtureModel("full", 0.0, torch.float64)._active_rows(Y.double(), rw.double())
    assert Y64.shape[1] == n
