"""Every component family: density, statistics + maximiser against direct weighted
maximum likelihood, sampler moments, missing entries against brute-force marginalisation."""

import math

import numpy as np
import pytest
import torch
from scipy import stats as st

from elbokit.families import (
    Bernoulli,
    Categorical,
    FactorAnalyzer,
    Gaussian,
    Multinomial,
    Poisson,
    Product,
    StudentT,
    VonMisesFisher,
    family_spec,
    get_family,
)
from elbokit.families.gaussian import masked_gaussian
from elbokit.families.student_t import solve_df
from elbokit.families.von_mises_fisher import estimate_concentration, log_normaliser, mean_resultant

F64 = torch.float64
K, N = 3, 400


def rng(seed=0):
    return np.random.default_rng(seed)


def resp(n=N, k=K, seed=1):
    r = rng(seed).dirichlet(np.ones(k), n)
    return torch.as_tensor(r)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ data per family
def data_for(name, n=N, seed=0):
    g = rng(seed)
    if name == "bernoulli":
        return torch.as_tensor((g.random((n, 5)) < 0.3).astype(float))
    if name == "poisson":
        return torch.as_tensor(g.poisson(3.0, (n, 4)).astype(float))
    if name == "multinomial":
        return torch.as_tensor(g.multinomial(20, [0.1, 0.2, 0.3, 0.4], n).astype(float))
    if name == "categorical":
        return torch.as_tensor(np.stack([g.integers(0, 3, n), g.integers(0, 5, n)], 1).astype(float))
    if name == "vmf":
        A = g.normal(size=(n, 3)) + [2, 0, 0]
        return torch.as_tensor(A / np.linalg.norm(A, axis=1, keepdims=True))
    A = g.normal(size=(n, 3)) @ np.array([[1, 0.5, 0], [0, 1, 0.3], [0, 0, 0.5]])
    return torch.as_tensor(A + 1.0)


# ------------------------------------------------------------------ statistics and maximiser
def weighted_ml(name, X, r):
    """Direct weighted maximum likelihood with NumPy, per component."""
    X, r = X.numpy(), r.numpy()
    nk = r.sum(0)
    if name in ("bernoulli", "poisson"):
        return {"probs" if name == "bernoulli" else "rate": (r.T @ X) / nk[:, None]}
    if name == "multinomial":
        c = r.T @ X
        return {"probs": c / c.sum(1, keepdims=True)}
    if name == "categorical":
        out = np.zeros((r.shape[1], X.shape[1], 5))
        for j, L in enumerate([3, 5]):
            for lev in range(L):
                out[:, j, lev] = r.T @ (X[:, j] == lev)
            out[:, j, :L] /= out[:, j, :L].sum(1, keepdims=True)
        return {"probs": out}
    raise KeyError(name)


FACTORISED = {"bernoulli": Bernoulli(), "poisson": Poisson(), "multinomial": Multinomial(),
              "categorical": Categorical()}


@pytest.mark.parametrize("name", list(FACTORISED))
def test_discrete_statistics_and_maximiser_equal_weighted_ml(name):
    X, r = data_for(name), resp()
    fam = FACTORISED[name].prepare(X)
    got = fam.maximize(fam.statistics(None, X, r), None)
    for key, expected in weighted_ml(name, X, r).items():
        np.testing.assert_allclose(got[key].numpy(), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_gaussian_statistics_and_maximiser_equal_weighted_ml(ct):
    X, r = data_for("gaussian"), resp()
    fam = Gaussian(ct, reg_covar=0.0)
    anchor = {"loc": torch.as_tensor(rng(3).normal(size=(K, 3))),
              "covariance": fam.param_shapes(K, 3)["covariance"]}
    anchor["covariance"] = {"full": torch.eye(3).expand(K, 3, 3), "tied": torch.eye(3),
                            "diag": torch.ones(K, 3), "spherical": torch.ones(K)}[ct].to(F64)
    got = fam.maximize(fam.statistics(anchor, X, r), anchor)  # statistics about the anchor
    Xn, rn = X.numpy(), r.numpy()
    nk = rn.sum(0)
    means = rn.T @ Xn / nk[:, None]
    covs = np.stack([np.cov(Xn.T, aweights=rn[:, k], bias=True) for k in range(K)])
    np.testing.assert_allclose(got["loc"].numpy(), means, rtol=1e-11)
    expected = {"full": covs, "tied": (covs * nk[:, None, None]).sum(0) / nk.sum(),
                "diag": np.stack([np.diag(c) for c in covs]),
                "spherical": np.stack([np.diag(c).mean() for c in covs])}[ct]
    np.testing.assert_allclose(got["covariance"].numpy(), expected, rtol=1e-10, atol=1e-12)


def test_von_mises_fisher_concentration_solves_the_likelihood_equation():
    for D in (3, 10, 300):
        for rbar in (0.05, 0.5, 0.95):
            kappa = estimate_concentration(torch.tensor([rbar], dtype=F64), D)
            assert mean_resultant(kappa.numpy(), D)[0] == pytest.approx(rbar, rel=1e-7)


def test_student_t_degrees_of_freedom_solve_their_equation():
    c = torch.tensor([-1.5, -1.05, -1.001], dtype=F64)
    nu = solve_df(c)
    x = nu / 2
    np.testing.assert_allclose((x.log() - torch.digamma(x) + 1 + c).numpy(), 0, atol=1e-9)


# ------------------------------------------------------------------ densities
def random_params(name, D=3, seed=0):
    g = rng(seed)
    if name == "gaussian":
        A = g.normal(size=(K, D, D))
        return Gaussian("full"), {"loc": torch.as_tensor(g.normal(size=(K, D))),
                                  "covariance": torch.as_tensor(A @ A.transpose(0, 2, 1) + np.eye(D))}
    if name == "student_t":
        fam, p = random_params("gaussian", D, seed)
        p["df"] = torch.tensor([3.0, 7.0, 20.0], dtype=F64)
        return StudentT("full"), p
    if name == "factor":
        return FactorAnalyzer(2), {"loc": torch.as_tensor(g.normal(size=(K, D))),
                                   "components": torch.as_tensor(g.normal(size=(K, D, 2))),
                                   "noise_variance": torch.as_tensor(g.uniform(0.2, 1, (K, D)))}
    raise KeyError(name)


def scipy_logpdf(name, p, x, k, cols=None):
    cols = slice(None) if cols is None else cols
    if name == "factor":
        W, psi = p["components"][k].numpy(), p["noise_variance"][k].numpy()
        cov = W @ W.T + np.diag(psi)
    else:
        cov = p["covariance"][k].numpy()
    loc = p["loc"][k].numpy()
    sub = np.ix_(cols, cols) if not isinstance(cols, slice) else (cols, cols)
    if name == "student_t":
        return st.multivariate_t(loc[cols], cov[sub], df=float(p["df"][k])).logpdf(x[cols])
    return st.multivariate_normal(loc[cols], cov[sub]).logpdf(x[cols])


@pytest.mark.parametrize("name", ["gaussian", "student_t", "factor"])
def test_continuous_densities_and_missing_marginals_match_scipy(name):
    fam, p = random_params(name)
    X = torch.as_tensor(rng(5).normal(size=(6, 3)))
    X[1, 0] = X[2, 1] = X[2, 2] = X[4, 2] = float("nan")
    lp = fam.log_prob(p, X).numpy()
    for i in range(6):
        obs = np.flatnonzero(~np.isnan(X[i].numpy()))
        for k in range(K):
            assert lp[i, k] == pytest.approx(scipy_logpdf(name, p, X[i].numpy(), k, obs), rel=1e-10)


def test_discrete_missing_entries_are_brute_force_marginals():
    """p(x_obs | k) = sum over the missing entry's values of p(x | k)."""
    cases = [(Bernoulli(), data_for("bernoulli")[:4], [0, 1]),
             (Categorical([3, 5]), data_for("categorical")[:4], range(5)),
             (Poisson(), data_for("poisson")[:4], range(80))]
    for fam, X, values in cases:
        fam = fam.prepare(X) if isinstance(fam, Categorical) else fam
        p = fam.initialize(X, resp(4), gen())
        Xm = X.clone()
        Xm[0, 1] = float("nan")
        brute = []
        for v in values:
            Xv = X[:1].clone()
            Xv[0, 1] = v
            if isinstance(fam, Categorical) and v >= fam.n_levels[1]:
                continue
            brute.append(fam.log_prob(p, Xv)[0])
        np.testing.assert_allclose(fam.log_prob(p, Xm)[0].numpy(),
                                   torch.logsumexp(torch.stack(brute), 0).numpy(), rtol=1e-10)


def test_gaussian_e_step_with_missing_entries_equals_the_conditional_gaussian():
    fam, p = random_params("gaussian")
    x = torch.as_tensor(rng(2).normal(size=(1, 3)))
    x[0, 1] = float("nan")
    _, _, _, shift, A = masked_gaussian(p["loc"], p["covariance"], x, True)
    for k in range(K):
        S, mu = p["covariance"][k].numpy(), p["loc"][k].numpy()
        o, m = [0, 2], [1]
        cond = mu[m] + S[np.ix_(m, o)] @ np.linalg.solve(S[np.ix_(o, o)], x[0, o].numpy() - mu[o])
        np.testing.assert_allclose(mu[m] + shift[0, k, m].numpy(), cond, rtol=1e-11)
        C = S - A[0, k].numpy() @ S
        cond_cov = S[np.ix_(m, m)] - S[np.ix_(m, o)] @ np.linalg.solve(S[np.ix_(o, o)], S[np.ix_(o, m)])
        np.testing.assert_allclose(C[np.ix_(m, m)], cond_cov, rtol=1e-10)
        np.testing.assert_allclose(C[np.ix_(o, o)], 0, atol=1e-12)


def test_no_missing_entries_take_the_complete_data_path_exactly():
    """The padded-covariance computation with every entry observed equals the plain one."""
    fam, p = random_params("gaussian")
    X = data_for("gaussian")[:50]
    maha, log_det, _, shift, _ = masked_gaussian(p["loc"], p["covariance"], X, True)
    plain = fam.log_prob(p, X)
    np.testing.assert_allclose((-0.5 * (maha + log_det + 3 * math.log(2 * math.pi))).numpy(),
                               plain.numpy(), rtol=1e-12)
    np.testing.assert_allclose(shift.numpy(), (X[:, None] - p["loc"][None]).numpy(), atol=1e-12)


@pytest.mark.parametrize("ct", ["diag", "spherical"])
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_factorised_fast_path_equals_the_general_path(ct, dtype):
    """Complete diag/spherical rows (one GEMM on [x - c | (x - c)^2]) give what the general
    per-column path gives: a batch with one all-missing row more takes the general one."""
    fam = Gaussian(ct)
    g = rng(4)
    p = {"loc": torch.as_tensor(g.normal(scale=3.0, size=(K, 3)) + 50.0),
         "covariance": torch.as_tensor(g.uniform(0.5, 2.0, size=(K, 3) if ct == "diag" else K))}
    X = torch.as_tensor(g.normal(scale=3.0, size=(N, 3)) + 50.0)
    r = resp()
    Xn = torch.cat([X, torch.full((1, 3), math.nan, dtype=F64)])
    rn = torch.cat([r, torch.full((1, K), 1.0 / K, dtype=F64)])
    assert fam._fast(p, X.to(dtype))[0] == dtype and fam._fast(p, Xn.to(dtype)) is None
    tol = 1e-12 if dtype == F64 else 1e-5
    fast, general = fam.log_prob(p, X.to(dtype)), fam.log_prob(p, Xn.to(dtype))[:-1]
    assert fast.dtype == dtype
    torch.testing.assert_close(fast.to(F64), general.to(F64), rtol=tol, atol=tol)
    fast, general = fam.statistics(p, X.to(dtype), r.to(dtype)), fam.statistics(p, Xn.to(dtype), rn.to(dtype))
    for key in general:
        torch.testing.assert_close(fast[key], general[key], rtol=tol, atol=tol * N)
    # two narrow components apart: one is far from any centre, float32 would lose it
    p["covariance"] = p["covariance"].clone()
    p["covariance"][:2] = 1e-6
    assert fam._fast(p, X.to(dtype))[0] == F64


def test_discrete_densities_match_scipy():
    X = data_for("multinomial")[:5]
    p = {"probs": torch.as_tensor(rng(1).dirichlet(np.ones(4), K))}
    lp = Multinomial().log_prob(p, X).numpy()
    for i in range(5):
        for k in range(K):
            assert lp[i, k] == pytest.approx(st.multinomial(20, p["probs"][k].numpy()).logpmf(X[i].numpy()))
    Xp = data_for("poisson")[:5]
    rate = torch.as_tensor(rng(2).uniform(1, 5, (K, 4)))
    lp = Poisson().log_prob({"rate": rate}, Xp).numpy()
    np.testing.assert_allclose(lp, st.poisson(rate.numpy()[None]).logpmf(Xp.numpy()[:, None]).sum(-1))


def test_von_mises_fisher_density_matches_scipy():
    X = data_for("vmf")[:5]
    loc = torch.as_tensor(rng(3).normal(size=(K, 3)))
    loc = loc / loc.norm(dim=1, keepdim=True)
    kappa = torch.tensor([0.5, 5.0, 80.0], dtype=F64)
    lp = VonMisesFisher().log_prob({"loc": loc, "concentration": kappa}, X).numpy()
    for k in range(K):
        ref = st.vonmises_fisher(loc[k].numpy(), float(kappa[k])).logpdf(X.numpy())
        np.testing.assert_allclose(lp[:, k], ref, rtol=1e-9)
    # large dimension: the Debye branch against SciPy's log-density
    D = 400
    mu = np.zeros(D)
    mu[0] = 1
    ref = st.vonmises_fisher(mu, 150.0).logpdf(mu)
    assert float(log_normaliser(torch.tensor([150.0], dtype=F64), D)[0]) + 150.0 == pytest.approx(ref, rel=1e-8)


# ------------------------------------------------------------------ samplers
SAMPLER_CASES = {
    "bernoulli": (Bernoulli(), {"probs": torch.tensor([[0.2, 0.9]], dtype=F64)}),
    "poisson": (Poisson(), {"rate": torch.tensor([[0.5, 7.0]], dtype=F64)}),
    "categorical": (Categorical([3]), {"probs": torch.tensor([[[0.2, 0.5, 0.3]]], dtype=F64)}),
    "multinomial": (Multinomial(), {"probs": torch.tensor([[0.1, 0.6, 0.3]], dtype=F64)}),
    "gaussian": (Gaussian("full"), {"loc": torch.tensor([[1.0, -2.0]], dtype=F64),
                                    "covariance": torch.tensor([[[2.0, 0.6], [0.6, 1.0]]], dtype=F64)}),
    "student_t": (StudentT("full"), {"loc": torch.tensor([[1.0, -2.0]], dtype=F64),
                                     "covariance": torch.tensor([[[2.0, 0.6], [0.6, 1.0]]], dtype=F64),
                                     "df": torch.tensor([8.0], dtype=F64)}),
    "vmf": (VonMisesFisher(), {"loc": torch.tensor([[0.6, 0.8, 0.0]], dtype=F64),
                               "concentration": torch.tensor([4.0], dtype=F64)}),
    "factor": (FactorAnalyzer(1), {"loc": torch.tensor([[1.0, 0.0, 2.0]], dtype=F64),
                                   "components": torch.tensor([[[1.0], [0.5], [-1.0]]], dtype=F64),
                                   "noise_variance": torch.tensor([[0.3, 0.2, 0.1]], dtype=F64)}),
}


@pytest.mark.parametrize("name", list(SAMPLER_CASES))
def test_sample_moments_match_the_parameters(name):
    fam, p = SAMPLER_CASES[name]
    n = 5000 if name == "vmf" else 20000
    X = fam.sample(p, torch.zeros(n, dtype=torch.int64), gen(4))
    mean = X.mean(0)
    if name == "categorical":
        freq = torch.bincount(X[:, 0].long(), minlength=3).double() / n
        np.testing.assert_allclose(freq.numpy(), p["probs"][0, 0].numpy(), atol=0.015)
        return
    if name == "multinomial":
        np.testing.assert_allclose((mean / 100).numpy(), p["probs"][0].numpy(), atol=0.005)
        return
    if name == "vmf":
        np.testing.assert_allclose(X.norm(dim=1).numpy(), 1, atol=1e-12)
    np.testing.assert_allclose(mean.numpy(), fam.mean(p)[0].numpy(), atol=0.05)
    cov = np.cov(X.numpy().T)
    if name == "gaussian":
        np.testing.assert_allclose(cov, p["covariance"][0].numpy(), atol=0.06)
    elif name == "student_t":
        np.testing.assert_allclose(cov, p["covariance"][0].numpy() * 8 / 6, atol=0.2)
    elif name == "factor":
        np.testing.assert_allclose(cov, fam.covariance(p)[0].numpy(), atol=0.05)
    elif name in ("bernoulli", "poisson"):
        var = p["probs"][0] * (1 - p["probs"][0]) if name == "bernoulli" else p["rate"][0]
        np.testing.assert_allclose(np.diag(cov), var.numpy(), rtol=0.06)


# ------------------------------------------------------------------ specs and products
def test_specs_round_trip_and_names_resolve():
    prod = Product([([0, 1], Gaussian("diag")), ([2], "categorical")])
    back = get_family(family_spec(prod))
    assert isinstance(back, Product) and back.parts[0][1].covariance_type == "diag"
    assert get_family("student_t").covariance_type == "full"
    with pytest.raises(ValueError, match="unknown"):
        get_family("nope")


def test_product_is_the_sum_of_its_parts():
    Xg, Xc = data_for("gaussian")[:20], data_for("categorical")[:20]
    X = torch.cat([Xg, Xc], 1)
    prod = Product([([0, 1, 2], Gaussian("full")), ([3, 4], Categorical())]).prepare(X)
    p = prod.initialize(X, resp(20), gen())
    g, c = prod.parts[0][1], prod.parts[1][1]
    expected = g.log_prob(prod._sub(p, 0), Xg) + c.log_prob(prod._sub(p, 1), Xc)
    np.testing.assert_allclose(prod.log_prob(p, X).numpy(), expected.numpy())
    assert prod.n_parameters(p) == g.n_parameters(prod._sub(p, 0)) + c.n_parameters(prod._sub(p, 1))


@pytest.mark.parametrize("bad, family, match", [
    ([[0.0, 2.0]], Bernoulli(), "0/1"),
    ([[1.5, 2.0]], Poisson(), "integer counts"),
    ([[-1.0, 2.0]], Categorical(), "level codes"),
    ([[1.0, 2.0]], VonMisesFisher(), "unit vectors"),
    ([[float("nan"), 1.0]], VonMisesFisher(), "impute"),
])
def test_data_outside_the_support_is_a_clear_error(bad, family, match):
    with pytest.raises(ValueError, match=match):
        family.check(torch.tensor(bad, dtype=F64))
