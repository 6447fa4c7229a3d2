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


# ---------------------------------------------------------------- float32 safety
def narrow_far_params(ct, seed=0):
    """Three components, one of them 1e-3 wide and 50 of its widths from the others."""
    params = random_params(ct, seed=seed)
    f64 = torch.float64
    cov = params.covariances.clone()
    means = params.means.clone()
    means[2] += 50.0
    if ct == "full":
        cov[2] = torch.eye(4, dtype=f64) * 1e-6
    elif ct == "diag":
        cov[2] = 1e-6
    elif ct == "spherical":
        cov[2] = 1e-6
    else:
        cov = cov * 1e-4
    return GaussianMixtureParams(params.weights, means, cov, precisions_cholesky_from_covariances(cov, ct))


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_float32_error_bounds_the_float32_log_density_error(ct):
    from elbokit.models.gaussian_mixture import FLOAT32_TOLERANCE, float32_error

    import elbokit.models.gaussian_mixture as gm_module

    params = narrow_far_params(ct)
    model64 = GaussianMixtureModel(ct, 0.0, torch.float64)
    X, z = model64.sample(params, 3000, torch.Generator().manual_seed(0))
    estimate = float32_error(params, ct)
    exact = model64.log_joint(params, X)
    old = gm_module.FLOAT32_TOLERANCE
    try:
        gm_module.FLOAT32_TOLERANCE = float("inf")  # plain float32, nothing routed
        plain = GaussianMixtureModel(ct, 0.0, torch.float32).log_joint(params, X).double()
    finally:
        gm_module.FLOAT32_TOLERANCE = old
    for k in range(3):
        own = z == k
        actual = float((plain[own, k] - exact[own, k]).abs().mean())
        assert float(estimate[k]) >= 0.5 * actual, (k, float(estimate[k]), actual)
    assert float(estimate[2]) > FLOAT32_TOLERANCE  # the narrow, far one is flagged
    # and the default model computes it accurately: in float64, or by exact pairs
    routed = GaussianMixtureModel(ct, 0.0, torch.float32).log_joint(params, X).double()
    resp = torch.softmax(exact, 1)
    relevant = resp > 1e-30  # (exact pairs leave the hopeless ones at -inf)
    assert float(torch.where(relevant, (routed - exact).abs() * resp, 0.0).sum(1).max()) < 1e-3
    torch.testing.assert_close(torch.logsumexp(routed, 1), torch.logsumexp(exact, 1), rtol=0, atol=1e-3)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_routed_statistics_equal_float64_statistics(ct):
    params = narrow_far_params(ct, seed=1)
    model64 = GaussianMixtureModel(ct, 0.0, torch.float64)
    X, _ = model64.sample(params, 2000, torch.Generator().manual_seed(2))
    stats64, ll64 = model64.expected_statistics(params, X, None)
    stats32, ll32 = GaussianMixtureModel(ct, 0.0, torch.float32).expected_statistics(params, X, None)
    assert float(ll32) == pytest.approx(float(ll64), rel=1e-5)
    new64 = model64.maximize(stats64, params)
    new32 = model64.maximize(stats32, params)
    torch.testing.assert_close(new32.means, new64.means, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(new32.covariances, new64.covariances, rtol=1e-3, atol=1e-9)


def test_a_component_too_narrow_for_float32_statistics_moves_to_float64():
    from elbokit.models.gaussian_mixture import PrecisionLostError

    p = random_params("diag", seed=3)
    params = GaussianMixtureParams(p.weights, p.means * 4, p.covariances, p.precisions_cholesky)
    model = GaussianMixtureModel("diag", 1e-12, torch.float32)
    X, z = GaussianMixtureModel("diag", 0.0, torch.float64).sample(params, 500, torch.Generator().manual_seed(0))
    X[z == 1, 0] = params.means[1, 0]  # constant within component 1: it collapses in the M-step
    assert model.prepare(params).exact is None  # every component in float32 so far
    stats, _ = model.expected_statistics(params, X, None)
    with pytest.raises(PrecisionLostError):
        model.maximize(stats, params)
    assert model.refine() and bool(model._forced[1])
    stats, _ = model.expected_statistics(params, X, None)
    new = model.maximize(stats, params)
    assert float(new.covariances[1, 0]) < 1e-9
    assert model.dtype == torch.float32  # the other components stay in float32


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_moments_from_labels_are_the_clusters_sample_moments(ct):
    g = torch.Generator().manual_seed(4)
    X = torch.randn(300, 3, generator=g, dtype=torch.float64) * 2 + 1e6
    X[:40] = X[0]  # 40 identical rows: exactly zero spread
    labels = torch.cat([torch.zeros(40, dtype=torch.long), torch.randint(1, 3, (260,), generator=g)])
    model = GaussianMixtureModel(ct, 0.0, torch.float64)
    centres = torch.stack([X[labels == k].mean(0) for k in range(3)]) + 0.5  # anywhere near
    centres[0] = X[0]
    halves = [model.statistics_from_labels(centres, X[i:i + 150], labels[i:i + 150], None)
              for i in (0, 150)]
    moments = model.moments_from_labels({k: halves[0][k] + halves[1][k] for k in halves[0]}, centres)
    for k in range(3):
        Xk = X[labels == k]
        torch.testing.assert_close(moments.means[k], Xk.mean(0), rtol=0, atol=1e-9)
        full = torch.cov(Xk.T, correction=0)
        expected = {"full": full, "diag": full.diagonal(), "spherical": full.diagonal()}.get(ct)
        if expected is not None:
            torch.testing.assert_close(moments.covariances[k], expected, rtol=1e-9, atol=1e-9)
    if ct in ("diag", "spherical", "full"):
        assert float(moments.covariances[0].abs().max()) == 0.0


def test_duplicate_components_are_found():
    from elbokit.models.gaussian_mixture import duplicate_components

    params = random_params("diag", K=4)
    cov = params.covariances.clone()
    means = params.means.clone()
    weights = torch.tensor([0.3, 0.2, 0.3, 0.2], dtype=torch.float64)
    means[2], cov[2] = means[0], cov[0]
    twin = GaussianMixtureParams(weights, means, cov, precisions_cholesky_from_covariances(cov, "diag"))
    assert duplicate_components(twin, "diag") == [(0, 2)]
    assert duplicate_components(random_params("diag", K=4), "diag") == []
