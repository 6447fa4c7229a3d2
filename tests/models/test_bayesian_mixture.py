"""The variational Gaussian mixture's math: scikit-learn's updates from the same start,
the ELBO against its terms, the KLs against Monte Carlo, the predictive density."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.mixture import BayesianGaussianMixture as SklearnBGMM
from torch.distributions import Wishart

from elbokit import BayesianGaussianMixture
from elbokit.bounds import decompose_discrete
from elbokit.kl import kl
from elbokit.models.bayesian_mixture import sklearn_bound_offset

from ..conftest import COVARIANCE_TYPES, make_blobs_data

PRIORS = ["dirichlet_process", "dirichlet_distribution"]


@pytest.fixture(scope="module")
def data():
    return make_blobs_data(n=450, d=3, k=3, seed=3)


def _sklearn_from(ours, X, n_iter):
    """scikit-learn's estimator started from elbokit's initial globals, run n_iter iterations."""
    sk = SklearnBGMM(n_components=ours.n_components, covariance_type=ours.covariance_type,
                     weight_concentration_prior_type=ours.weight_concentration_prior_type,
                     reg_covar=ours.reg_covar, max_iter=n_iter, tol=0, warm_start=True)
    sk._check_parameters(X)
    wc = ours.weight_concentration_
    sk._set_parameters((tuple(wc) if wc.ndim == 2 else wc, ours.mean_precision_, ours.means_,
                        ours.degrees_of_freedom_, ours.covariances_, ours.precisions_cholesky_))
    sk.converged_, sk.lower_bound_ = False, -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sk.fit(X)


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_same_start_as_sklearn_same_globals_and_bound(data, ct, prior):
    kw = dict(covariance_type=ct, weight_concentration_prior_type=prior, dtype="float64",
              reg_covar=0.0, random_state=0, tol=0)
    start = BayesianGaussianMixture(5, max_iter=0, **kw).fit(data)
    sk = _sklearn_from(start, data, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = BayesianGaussianMixture(5, max_iter=12, **kw).fit(data)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "mean_precision_",
                 "degrees_of_freedom_", "weight_concentration_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(sk, name), rtol=1e-9, atol=1e-10,
                                   err_msg=name)
    # scikit-learn's bound is the ELBO after each update less the constant it drops
    offset = sklearn_bound_offset(ours._prior("cpu"), 5, data.shape[1], len(data))
    theirs = np.asarray(sk.lower_bounds_, dtype=np.float64).reshape(-1)
    np.testing.assert_allclose(ours.lower_bounds_[:-1] * len(data) - offset, theirs, rtol=1e-9)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_the_bound_never_decreases(data, ct):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for prior in PRIORS:
            bgm = BayesianGaussianMixture(6, covariance_type=ct, weight_concentration_prior_type=prior,
                                          dtype="float64", max_iter=60, tol=0, random_state=1,
                                          init_params="random").fit(data)
            steps = np.diff(bgm.lower_bounds_)
            assert steps.min() >= -1e-10, (prior, steps.min())
            assert bgm.lower_bounds_[-1] > bgm.lower_bounds_[0] + 0.1


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_elbo_terms_add_up_to_the_reported_bound(data, ct):
    bgm = BayesianGaussianMixture(4, covariance_type=ct, dtype="float64", max_iter=5,
                                  random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bgm.fit(data)
    terms = bgm.elbo_terms(data)
    assert float(terms.per_sample) == pytest.approx(bgm.lower_bound_, rel=1e-12)
    assert set(terms.kl) == {"weights", "components"} and all(float(v) >= 0 for v in terms.kl.values())
    # per sample: the local bound at the optimal q(z) touches logsumexp of the expected log joint
    model, params = bgm._vi_model(bgm._prior("cpu")), bgm._params("cpu")
    table = model.log_joint(params, torch.as_tensor(data))
    parts = decompose_discrete(table)
    np.testing.assert_allclose(parts.kl.numpy(), 0.0, atol=1e-10)
    local = float(parts.elbo.sum())
    assert float(terms.expected_log_joint + terms.entropy) == pytest.approx(local, rel=1e-12)


def test_wishart_kl_matches_monte_carlo():
    torch.manual_seed(0)
    A = torch.randn(3, 3, dtype=torch.float64)
    p = Wishart(df=torch.tensor(7.0, dtype=torch.float64), covariance_matrix=A @ A.T + torch.eye(3))
    q = Wishart(df=torch.tensor(5.0, dtype=torch.float64),
                covariance_matrix=torch.eye(3, dtype=torch.float64) * 0.7)
    exact = kl(p, q, method="analytic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's sampler flags rare singular draws
        mc = kl(p, q, method="monte_carlo", n_samples=20000, seed=0)
    assert abs(float(exact.value - mc.value)) < 4 * float(mc.stderr)
    assert float(kl(p, p, method="analytic").value) == pytest.approx(0.0, abs=1e-10)


def test_predictive_density_integrates_to_one():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-2, 0.5, 60), rng.normal(3, 1.0, 40)])[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bgm = BayesianGaussianMixture(4, dtype="float64", random_state=0).fit(X)
    grid = np.linspace(-40, 40, 40001)[:, None]
    density = np.exp(bgm.score_samples(grid))
    assert np.trapezoid(density, grid[:, 0]) == pytest.approx(1.0, abs=2e-3)
