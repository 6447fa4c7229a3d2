"""scikit-learn's own BayesianGaussianMixture tests, run against elbokit's.

The test module ships in scikit-learn's wheel
(``sklearn/mixture/tests/test_bayesian_mixture.py``); it is loaded from the
installed package unchanged, its ``BayesianGaussianMixture`` replaced by the
thin adapter below, and every one of its tests is run as written.

The adapter only
* computes in float64, as scikit-learn does (elbokit's default is a float32
  E-step, which cannot meet assertions to 7 decimals);
* maps the two private hooks ``test_compare_covar_type`` calls:
  ``_check_parameters(X)`` (the priors from X) and
  ``_initialize_parameters(X, random_state)`` (the first coordinate update
  from the initial responsibilities), to a fit with ``max_iter=0``;
* accepts scikit-learn's ``verbose_interval`` (elbokit reports every iteration).

``test_log_dirichlet_norm`` and ``test_log_wishart_norm`` check scikit-learn's
private normalisers, not an estimator; they run unchanged (elbokit's own KL
terms are tested in tests/models/test_bayesian_mixture.py).
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest
import sklearn

import elbokit


class BayesianGaussianMixture(elbokit.BayesianGaussianMixture):
    """elbokit's estimator with scikit-learn's constructor (float64 compute)."""

    def __init__(self, *, n_components=1, covariance_type="full", tol=1e-3, reg_covar=1e-6,
                 max_iter=100, n_init=1, init_params="kmeans",
                 weight_concentration_prior_type="dirichlet_process",
                 weight_concentration_prior=None, mean_precision_prior=None, mean_prior=None,
                 degrees_of_freedom_prior=None, covariance_prior=None, random_state=None,
                 warm_start=False, verbose=0, verbose_interval=10):
        super().__init__(
            n_components, covariance_type=covariance_type, tol=tol, reg_covar=reg_covar,
            max_iter=max_iter, n_init=n_init, init_params=init_params,
            weight_concentration_prior_type=weight_concentration_prior_type,
            weight_concentration_prior=weight_concentration_prior,
            mean_precision_prior=mean_precision_prior, mean_prior=mean_prior,
            degrees_of_freedom_prior=degrees_of_freedom_prior, covariance_prior=covariance_prior,
            random_state=random_state, warm_start=warm_start, verbose=verbose, dtype="float64")
        self.verbose_interval = verbose_interval

    def _check_parameters(self, X):
        """Nothing to do: the fit that ``_initialize_parameters`` runs sets the priors from X."""

    def _initialize_parameters(self, X, random_state):
        saved = (self.random_state, self.max_iter)
        self.random_state, self.max_iter = random_state, 0
        try:
            self.fit(X)
        finally:
            self.random_state, self.max_iter = saved


def _load_sklearn_tests():
    path = Path(sklearn.__file__).parent / "mixture" / "tests" / "test_bayesian_mixture.py"
    spec = importlib.util.spec_from_file_location("sklearn_test_bayesian_mixture", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.BayesianGaussianMixture = BayesianGaussianMixture
    return module


_SK = _load_sklearn_tests()
_TESTS = [name for name, fn in vars(_SK).items() if name.startswith("test_") and callable(fn)]


def _cases():
    for name in _TESTS:
        fn = getattr(_SK, name)
        marks = getattr(fn, "pytestmark", [])
        params = [m for m in marks if m.name == "parametrize"]
        others = [m for m in marks if m.name != "parametrize"]
        if not params:
            yield pytest.param(name, {}, marks=others, id=name)
            continue
        (mark,) = params
        names = [n.strip() for n in mark.args[0].split(",")]
        for values in mark.args[1]:
            values = values if isinstance(values, tuple) else (values,)
            yield pytest.param(name, dict(zip(names, values)), marks=others,
                               id=f"{name}[{'-'.join(map(str, values))}]")


def test_every_test_is_collected():
    assert len(_TESTS) >= 12  # the module as shipped holds 14 tests
    for name in _TESTS:
        assert inspect.signature(getattr(_SK, name)).parameters.keys() <= {"seed", "max_iter", "tol"}


@pytest.mark.parametrize("name, kwargs", list(_cases()))
def test_sklearn(name, kwargs):
    getattr(_SK, name)(**kwargs)
