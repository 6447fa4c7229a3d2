"""MAP-EM with mclust's conjugate prior: the objective never decreases, duplicated points do
not collapse a component, the M-step is the posterior mode, the family path agrees."""

import math
import warnings

import numpy as np
import pytest
import torch

from elbokit import ConvergenceWarning, DegenerateCovarianceError, GaussianMixture
from elbokit.families import get_family
from elbokit.inference.em import run_em
from elbokit.data.sources import InMemorySource
from elbokit.models.family_mixture import MixtureParams
from elbokit.models.gaussian_mixture import GaussianMixtureModel
from elbokit.priors import GaussianPrior, MAPFamilyMixtureModel, data_moments

from .conftest import COVARIANCE_TYPES, make_blobs_data

F64 = torch.float64


@pytest.fixture(scope="module")
def duplicated():
    """Two clusters and 30 copies of one point."""
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(size=(100, 3)), np.repeat([[5.0, 5.0, 5.0]], 30, 0),
                           rng.normal(size=(80, 3)) + [0, 6, 0]])


def fit(X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(dtype="float64", **kw).fit(X)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_map_objective_never_decreases(duplicated, ct):
    gm = fit(duplicated, n_components=4, covariance_type=ct, prior="default", reg_covar=0.0,
             tol=0, max_iter=60, init_params="random", random_state=0)
    assert np.diff(gm.lower_bounds_).min() >= -1e-12
    # the bound is the MAP objective per sample: mean log-likelihood + log prior / n
    X = torch.as_tensor(duplicated)
    _, mean, cov = data_moments(InMemorySource(X), None, 3, "cpu")
    prior = GaussianPrior.resolve({}, 4, ct, mean, cov)
    log_prior = float(prior.log_density(*(torch.as_tensor(a) for a in (
        gm.weights_, gm.means_, gm.covariances_))))
    assert gm.lower_bound_ == pytest.approx(gm.score(duplicated) + log_prior / len(X), rel=1e-10)


@pytest.mark.parametrize("ct", ["full", "diag"])
def test_duplicated_points_do_not_collapse_a_component(duplicated, ct):
    with pytest.raises(DegenerateCovarianceError):
        fit(duplicated, n_components=4, covariance_type=ct, reg_covar=0.0, random_state=0)
    gm = fit(duplicated, n_components=4, covariance_type=ct, reg_covar=0.0, random_state=0,
             prior="default")
    cov = gm.covariances_ if ct == "full" else np.stack([np.diag(c) for c in gm.covariances_])
    floor = np.linalg.eigvalsh(np.cov(duplicated.T)).min() * (1 / 4) ** (2 / 3) / (5 + 210 + 3 + 2)
    assert np.linalg.eigvalsh(cov).min() >= floor * 0.99
    # mclust's BIC: the log-likelihood at the MAP estimate, the usual parameter count
    n_params = {"full": 4 * 6 + 12 + 3, "diag": 4 * 3 + 12 + 3}[ct]
    assert gm.bic(duplicated) == pytest.approx(
        -2 * gm.score(duplicated) * len(duplicated) + n_params * math.log(len(duplicated)))


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_the_m_step_is_the_posterior_mode(ct):
    """Expected complete log-likelihood + log prior is highest at the mode."""
    X = torch.as_tensor(make_blobs_data(n=120, d=3, k=3, seed=1), dtype=F64)
    rng = torch.Generator().manual_seed(0)
    resp = torch.softmax(torch.randn(120, 3, generator=rng, dtype=F64) * 2, 1)
    n, mean, cov = data_moments(InMemorySource(X), None, 3, "cpu")
    prior = GaussianPrior.resolve({"weight_concentration": 2.0}, 3, ct, mean, cov)
    gm = GaussianMixtureModel(ct, 0.0, F64)
    anchor = gm.anchor(torch.zeros(3, 3, dtype=F64))
    m = gm.moments(gm.statistics_from_responsibilities(anchor, X, resp, None), anchor)
    best = prior.mode(m)

    def objective(weights, means, covs):
        from elbokit.families.gaussian import Gaussian
        fam = Gaussian(ct, reg_covar=0.0)
        lp = fam.log_prob({"loc": means, "covariance": covs}, X) + weights.log()
        return float((resp * lp).sum() + prior.log_density(weights, means, covs))

    top = objective(*best)
    for _ in range(20):
        w, mu, c = best
        w2 = torch.softmax(w.log() + 0.05 * torch.randn(3, generator=rng, dtype=F64), 0)
        mu2 = mu + 0.05 * torch.randn(mu.shape, generator=rng, dtype=F64)
        c2 = c * torch.exp(0.05 * torch.randn(c.shape, generator=rng, dtype=F64)) if ct in (
            "diag", "spherical") else c + 0.02 * torch.eye(3, dtype=F64)
        assert objective(w2, mu2, c2) < top


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_the_family_path_agrees_with_gaussian_mixture(ct):
    X = make_blobs_data(n=300, d=3, k=3, seed=2)
    start = fit(X, n_components=3, covariance_type=ct, max_iter=1, random_state=0)
    gm = fit(X, n_components=3, covariance_type=ct, prior="default", tol=0, max_iter=8,
             weights_init=start.weights_, means_init=start.means_,
             precisions_init=start.precisions_)
    Xt = torch.as_tensor(X)
    _, mean, cov = data_moments(InMemorySource(Xt), None, 3, "cpu")
    prior = GaussianPrior.resolve({}, 3, ct, mean, cov)
    family = get_family({"name": "gaussian", "config": {"covariance_type": ct, "reg_covar": 0.0}})
    model = MAPFamilyMixtureModel(family, F64, prior=prior)
    p0 = MixtureParams(torch.as_tensor(start.weights_), {
        "loc": torch.as_tensor(start.means_), "covariance": torch.as_tensor(start.covariances_)})
    run = run_em(model, p0, InMemorySource(Xt), tol=0, max_iter=8)
    np.testing.assert_allclose(run.lower_bounds, gm.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(run.params.params["covariance"].numpy(), gm.covariances_, rtol=1e-8)


def test_mixture_takes_the_prior_too(duplicated):
    from elbokit import Mixture

    # the same start: k-means++ seeding is shared; GaussianMixture's default k-means (best
    # of three on a sample, issue 11) is not the general Mixture's
    kw = dict(n_components=4, tol=0, max_iter=15, random_state=0, init_params="k-means++")
    gm = fit(duplicated, covariance_type="diag", prior="default", **kw)
    kw["dtype"] = "float64"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mx = Mixture(family={"name": "gaussian", "config": {"covariance_type": "diag"}},
                     prior="default", **kw).fit(duplicated)
    assert np.diff(mx.lower_bounds_).min() >= -1e-12
    assert mx.lower_bound_ == pytest.approx(gm.lower_bound_, rel=1e-6)
    with pytest.raises(ValueError, match="family='gaussian'"):
        Mixture(2, family="poisson", prior="default").fit(np.abs(duplicated).round())
    # missing entries: the prior's defaults come from the observed ones
    X = duplicated.copy()
    X[::7, 1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m = Mixture(family={"name": "gaussian", "config": {"covariance_type": "diag"}},
                    prior="default", **kw).fit(X)
    assert np.isfinite(m.lower_bounds_).all() and np.diff(m.lower_bounds_).min() >= -1e-9


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_the_default_prior_takes_constant_and_collinear_columns(ct):
    """Blank border pixels (digits) make the data's covariance singular: the default
    scale is floored (priors.SINGULAR_FLOOR) and the MAP fit runs; only an X with no
    variation at all is refused, with the fix named."""
    X = make_blobs_data(n=300, d=3, k=3, seed=2)
    X = np.column_stack([X, np.zeros(len(X)), X[:, 0] - X[:, 1]])  # constant, collinear
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(3, covariance_type=ct, prior="default", random_state=0).fit(X)
    assert np.isfinite(gm.lower_bounds_).all() and np.isfinite(gm.bic(X))
    with pytest.raises(ValueError, match="every column of X is constant; give prior"):
        GaussianMixture(2, covariance_type=ct, prior="default").fit(np.ones((20, 3)))
