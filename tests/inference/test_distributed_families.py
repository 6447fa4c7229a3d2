"""Two processes (gloo) fit what one process fits: Mixture over families, with missing
values and categorical levels found across ranks; FactorAnalysis on its scatter matrix."""

import warnings

import numpy as np
import pytest

from elbokit import ConvergenceWarning, FactorAnalysis, Mixture
from elbokit.families import Categorical, FactorAnalyzer, Gaussian, StudentT

from .test_distributed import WORLD, shards, spawn


def cases():
    g = np.random.default_rng(0)
    n = 601
    binary = (g.random((n, 5)) < g.uniform(0.1, 0.9, (1, 5))).astype(float)
    cats = np.stack([g.integers(0, 3, n), g.integers(0, 4, n)], 1).astype(float)
    cats[:300, 1] = np.minimum(cats[:300, 1], 2)  # rank 0 never sees level 3
    gauss = g.normal(size=(n, 3)) @ np.array([[1, 0.5, 0], [0, 1, 0.2], [0, 0, 1]])
    gauss[g.random(gauss.shape) < 0.1] = np.nan
    counts = g.poisson(g.uniform(1, 6, (1, 4)), (n, 4)).astype(float)
    unit = g.normal(size=(n, 3)) + [2.0, 0, 0]
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    return {"bernoulli": (binary, "bernoulli"), "categorical": (cats, Categorical()),
            "gaussian-missing": (gauss, Gaussian("full")), "poisson": (counts, "poisson"),
            "multinomial": (counts, "multinomial"), "student_t": (gauss, StudentT("diag")),
            "vmf": (unit, "von_mises_fisher"), "factor": (np.nan_to_num(gauss), FactorAnalyzer(1))}


def kwargs(X, family):
    start = Mixture(2, family=family, max_iter=1, random_state=0, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start.fit(X)
    return dict(n_components=2, family=family, dtype="float64", tol=0, max_iter=6,
                weights_init=start.weights_, params_init=start.params_)


@pytest.mark.filterwarnings("ignore::elbokit.ConvergenceWarning")
def test_family_mixtures_across_processes_equal_one_process(tmp_path):
    data, single = {}, {}
    for name, (X, family) in cases().items():
        kw = kwargs(X, family)
        data[name] = (shards(X, [300, 301]), kw)
        single[name] = Mixture(**kw).fit(X)
    g = np.random.default_rng(1)
    Xfa = g.normal(size=(500, 2)) @ g.normal(size=(2, 6)) * 2 + g.normal(size=(500, 6)) * g.uniform(0.3, 1, 6)
    data["_fa"] = shards(Xfa, [250, 250])
    spawn(_fit_all, data, tmp_path)
    fa = FactorAnalysis(2, tol=0, max_iter=25).fit(Xfa)
    for rank in range(WORLD):
        for name, m in single.items():
            got = np.load(tmp_path / f"{name}-{rank}.npz")
            np.testing.assert_allclose(got["bounds"], m.lower_bounds_, rtol=1e-9, err_msg=name)
            np.testing.assert_allclose(got["weights"], m.weights_, rtol=1e-8, err_msg=name)
            for k, v in m.params_.items():
                np.testing.assert_allclose(got[k.replace(".", "_")], v, rtol=1e-7, atol=1e-10, err_msg=name)
        got = np.load(tmp_path / f"fa-{rank}.npz")
        np.testing.assert_allclose(got["cov"], fa.get_covariance(), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(got["bounds"], fa.lower_bounds_, rtol=1e-10)


def _fit_all(rank, data, out):
    fa_parts = data["_fa"]
    rest = {k: v for k, v in data.items() if k != "_fa"}
    for name, (parts, kw) in rest.items():
        m = Mixture(**kw).fit(parts[rank])
        np.savez(out / f"{name}-{rank}.npz", bounds=m.lower_bounds_, weights=m.weights_,
                 **{k.replace(".", "_"): v for k, v in m.params_.items()})
    fa = FactorAnalysis(2, tol=0, max_iter=25).fit(fa_parts[rank])
    np.savez(out / f"fa-{rank}.npz", cov=fa.get_covariance(), bounds=fa.lower_bounds_)
