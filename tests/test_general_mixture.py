"""Mixture: EM over any family (monotone, with and without missing values), a family
defined here, save/load, streams, labels, frozen parameters, imputation, tables."""

import warnings

import numpy as np
import pytest
import torch

import elbokit
from elbokit import ConvergenceWarning, GaussianMixture, Mixture
from elbokit.families import (
    Categorical,
    FactorAnalyzer,
    Family,
    Gaussian,
    Product,
    StudentT,
    VonMisesFisher,
)

from .conftest import COVARIANCE_TYPES, make_blobs_data

F64 = torch.float64


class quiet(warnings.catch_warnings):
    """Ignore ConvergenceWarning inside the block."""

    def __enter__(self):
        out = super().__enter__()
        warnings.simplefilter("ignore", ConvergenceWarning)
        return out


def dataset(name, n=300, seed=0):
    """Data with 3 planted clusters for each family."""
    g = np.random.default_rng(seed)
    z = g.integers(0, 3, n)
    if name == "bernoulli":
        p = np.array([[0.9, 0.1, 0.8, 0.2], [0.1, 0.9, 0.2, 0.8], [0.5, 0.5, 0.9, 0.9]])
        return (g.random((n, 4)) < p[z]).astype(float)
    if name == "categorical":
        return np.stack([(z + g.integers(0, 2, n)) % 3, (2 * z + g.integers(0, 2, n)) % 4], 1).astype(float)
    if name == "multinomial":
        p = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.4, 0.4]])
        return np.stack([g.multinomial(15, p[k]) for k in z]).astype(float)
    if name == "poisson":
        return g.poisson(np.array([[1.0, 8.0], [6.0, 1.0], [4.0, 4.0]])[z]).astype(float)
    if name == "vmf":
        mu = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
        A = mu[z] * 4 + g.normal(size=(n, 3))
        return A / np.linalg.norm(A, axis=1, keepdims=True)
    if name == "product":
        num = make_blobs_data(n=n, d=2, k=3, seed=seed)[:, :2]
        return np.concatenate([num, g.integers(0, 3, (n, 1)), g.poisson(3.0, (n, 1))], 1).astype(float)
    return make_blobs_data(n=n, d=3, k=3, seed=seed)


FAMILIES = {
    "bernoulli": lambda: "bernoulli", "categorical": lambda: "categorical",
    "multinomial": lambda: "multinomial", "poisson": lambda: "poisson",
    **{f"gaussian-{ct}": (lambda ct=ct: Gaussian(ct)) for ct in COVARIANCE_TYPES},
    "student_t": lambda: StudentT("full"), "student_t-diag": lambda: StudentT("diag"),
    "vmf": lambda: VonMisesFisher(), "factor": lambda: FactorAnalyzer(1),
    "ppca": lambda: FactorAnalyzer(1, "spherical"),
    "product": lambda: Product([([0, 1], Gaussian("full")), ([2], Categorical()), ([3], "poisson")]),
}


def data_name(key):
    return key.split("-")[0] if key.split("-")[0] in ("bernoulli", "categorical", "multinomial",
                                                      "poisson", "vmf", "product") else "gaussian"


def with_missing(X, fraction=0.15, seed=3):
    X = X.copy()
    mask = np.random.default_rng(seed).random(X.shape) < fraction
    mask[:, 0] &= ~mask[:, 1:].all(1)  # keep at least one entry per row
    X[mask] = np.nan
    return X


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "missing"])
@pytest.mark.parametrize("key", list(FAMILIES))
def test_em_never_decreases_the_log_likelihood(key, missing):
    if missing and key == "vmf":
        pytest.skip("vMF rows are unit vectors: no marginal over missing coordinates")
    X = dataset(data_name(key))
    if missing:
        X = with_missing(X)
    with quiet():
        m = Mixture(3, family=FAMILIES[key](), tol=0, max_iter=12, random_state=0,
                    dtype="float64").fit(X)
    steps = np.diff(m.lower_bounds_)
    assert np.all(steps >= -1e-9 * np.abs(m.lower_bounds_[1:])), steps.min()
    assert m.lower_bound_ == pytest.approx(m.score(X), rel=1e-10)
    assert np.isfinite(m.score_samples(X)).all()
    assert m.predict(X).shape == (len(X),)


# ------------------------------------------------------------------ the seam
class Exponential(Family):
    """A new family in a few lines: independent exponential columns, rate lambda."""

    name = "test_exponential"

    def log_prob(self, params, X):
        rate = params["rate"].to(X.dtype)
        return rate.log().sum(1) - X @ rate.mT

    def statistics(self, params, X, resp):
        return {"n": resp.sum(0, dtype=F64), "sum": (resp.mT @ X).to(F64)}

    def maximize(self, stats, params, fixed=None):
        return {"rate": stats["n"][:, None] / stats["sum"]}

    def sample(self, params, z, generator):
        u = torch.rand(z.shape[0], params["rate"].shape[1], dtype=F64, generator=generator)
        return -u.log() / params["rate"][z]

    def n_parameters(self, params):
        return params["rate"].numel()

    def param_shapes(self, K, D):
        return {"rate": (K, D)}


def test_a_family_defined_in_a_test_file_fits_through_mixture():
    g = np.random.default_rng(0)
    rates = np.array([[0.2, 5.0], [4.0, 0.3]])
    z = g.integers(0, 2, 2000)
    X = g.exponential(1 / rates[z])
    m = Mixture(2, family=Exponential(), random_state=0, dtype="float64", tol=1e-8,
                max_iter=500).fit(X)
    assert np.all(np.diff(m.lower_bounds_) >= -1e-10)
    order = np.argsort(m.params_["rate"][:, 0])
    np.testing.assert_allclose(m.params_["rate"][order], rates, rtol=0.12)
    agreement = max(np.mean(m.predict(X) == z), np.mean(m.predict(X) != z))
    assert agreement > 0.9
    Xs, zs = m.sample(10)
    assert Xs.shape == (10, 2) and m.bic(X) > 0


# ------------------------------------------------------------------ agreement with GaussianMixture
@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_gaussian_family_equals_gaussian_mixture_from_the_same_start(ct, wine):
    X, _ = wine
    with quiet():
        start = GaussianMixture(3, covariance_type=ct, max_iter=2, random_state=1, dtype="float64").fit(X)
        gm = GaussianMixture(3, covariance_type=ct, max_iter=6, tol=0, dtype="float64", reg_covar=1e-6,
                             weights_init=start.weights_, means_init=start.means_,
                             precisions_init=start.precisions_).fit(X)
        m = Mixture(3, family=Gaussian(ct, reg_covar=1e-6), max_iter=6, tol=0, dtype="float64",
                    weights_init=start.weights_,
                    params_init={"loc": start.means_, "covariance": start.covariances_}).fit(X)
    np.testing.assert_allclose(m.lower_bounds_, gm.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(m.params_["loc"], gm.means_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(m.params_["covariance"], gm.covariances_, rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------------ plumbing
@pytest.mark.parametrize("key", ["bernoulli", "categorical", "multinomial", "poisson", "gaussian-tied",
                                 "student_t", "vmf", "factor", "product"])
def test_save_load_round_trip(key, tmp_path):
    X = dataset(data_name(key))
    with quiet():
        m = Mixture(3, family=FAMILIES[key](), random_state=0, max_iter=5).fit(X)
    m.save(tmp_path / "m")
    back = elbokit.load(tmp_path / "m")
    assert type(back) is Mixture and back.family_config_ == m.family_config_
    np.testing.assert_array_equal(back.predict(X), m.predict(X))
    np.testing.assert_allclose(back.score_samples(X), m.score_samples(X), rtol=1e-6)
    np.testing.assert_array_equal(back.lower_bounds_, m.lower_bounds_)


@pytest.mark.parametrize("key", ["bernoulli", "categorical", "multinomial", "poisson", "gaussian-full",
                                 "student_t", "vmf", "factor", "product"])
def test_streamed_batches_equal_in_memory(key):
    X = dataset(data_name(key))
    kw = dict(n_components=3, family=FAMILIES[key](), random_state=0, dtype="float64", tol=0,
              max_iter=6, init_params="random_from_data")
    with quiet():
        a = Mixture(**kw).fit(X)
        b = Mixture(**kw).fit([X[:100], X[100:250], X[250:]])
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(a.weights_, b.weights_, rtol=1e-9)


def test_partial_fit_and_stepwise_climb():
    X = dataset("bernoulli", n=3000)
    m = Mixture(3, family="bernoulli", random_state=0)
    for chunk in np.array_split(X, 10):
        m.partial_fit(chunk)
    assert m.n_steps_ == 10
    with quiet():
        s = Mixture(3, family=Gaussian("diag"), algorithm="stepwise", batch_size=200, max_iter=5,
                    random_state=0).fit(dataset("gaussian", n=1500))
    assert s.lower_bound_ > -8
    assert m.score(X) > Mixture(3, family="bernoulli", max_iter=0, random_state=0).fit(X).score(X) - 0.05


def test_known_labels_keep_their_component_and_frozen_parameters_stay():
    X = dataset("gaussian", n=600)
    truth = GaussianMixture(3, random_state=0, dtype="float64").fit(X).predict(X)
    y = np.full(len(X), -1)
    y[:30] = (truth[:30] + 1) % 3  # labels that EM alone would not choose
    with quiet():
        m = Mixture(3, family=Gaussian("full"), random_state=0, dtype="float64").fit(X, y)
    p = m.predict_proba(X[:30])
    assert np.all(p.argmax(1) == y[:30]) or np.mean(m.predict(X[:30]) == y[:30]) > 0.8
    means = np.array([[0.0, 0, 0], [1, 1, 1], [2, 2, 2]])
    with quiet():
        f = Mixture(3, family=Gaussian("diag"), frozen={"loc": means, "weights": np.ones(3) / 3},
                    random_state=0, max_iter=5, dtype="float64").fit(X)
    np.testing.assert_array_equal(f.params_["loc"], means)
    np.testing.assert_allclose(f.weights_, 1 / 3)
    assert np.all(np.diff(f.lower_bounds_) >= -1e-9)


def test_impute_uses_the_conditional_gaussian():
    g = np.random.default_rng(0)
    A = np.array([[1.0, 0.9, 0.8], [0.9, 1.0, 0.85], [0.8, 0.85, 1.0]])
    X = g.multivariate_normal([0, 0, 0], A, 2000)
    Xm = with_missing(X, 0.2)
    m = Mixture(1, family=Gaussian("full"), dtype="float64", random_state=0).fit(Xm)
    filled = m.impute(Xm)
    miss = np.isnan(Xm)
    assert not np.isnan(filled).any() and np.array_equal(filled[~miss], Xm[~miss])
    col_means = np.nanmean(Xm, 0)
    err = np.sqrt(np.mean((filled - X)[miss] ** 2))
    err_mean = np.sqrt(np.mean((np.where(miss, col_means, Xm) - X)[miss] ** 2))
    assert err < 0.6 * err_mean
    np.testing.assert_allclose(m.params_["covariance"][0], A, atol=0.1)
    assert m.predict(Xm[miss.any(1)]).shape[0] == miss.any(1).sum()


def test_a_pyarrow_table_gets_one_family_per_column_type(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    g = np.random.default_rng(0)
    z = g.integers(0, 2, 400)
    table = pa.table({"height": g.normal(z * 3.0, 1.0), "visits": g.poisson(1 + 5 * z),
                      "colour": pa.array(np.where(z == 1, "red", "blue")).dictionary_encode(),
                      "member": g.random(400) < 0.2 + 0.6 * z})
    m = Mixture(2, random_state=0).fit(table)
    kinds = [p[1]["name"] for p in m.family_config_["config"]["parts"]]
    assert kinds == ["gaussian", "poisson", "bernoulli", "categorical"]
    assert m.categories_ == {"colour": ["blue", "red"]}
    assert list(m.feature_names_in_) == ["height", "visits", "colour", "member"]
    agreement = max(np.mean(m.predict(table) == z), np.mean(m.predict(table) != z))
    assert agreement > 0.95
    pq.write_table(table, tmp_path / "t.parquet")
    again = Mixture(2, random_state=0).fit(str(tmp_path / "t.parquet"))
    np.testing.assert_allclose(again.lower_bounds_, m.lower_bounds_)
    with pytest.raises(ValueError, match="feature names"):
        m.predict(table.select(["visits", "height", "colour", "member"]))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="0/1"):
        Mixture(2, family="bernoulli").fit(np.array([[0.0, 2.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="unknown"):
        Mixture(2, family="nope").fit(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="labels"):
        Mixture(2, family="poisson").fit(np.ones((4, 2)), y=[0, 1, 2, -1])
    X = dataset("poisson")
    m = Mixture(2, family="poisson", random_state=0, max_iter=3).fit(X)
    with pytest.raises(ValueError, match="features"):
        m.predict(X[:, :1])


# ------------------------------------------------------------------ scikit-learn's checks
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402


class UnsupervisedMixture(Mixture):
    """Mixture with y ignored: the checks pass class labels as y, which Mixture would read
    as known components (its semi-supervised fit)."""

    def fit(self, X, y=None, sample_weight=None):
        return super().fit(X, None, sample_weight)

    def partial_fit(self, X, y=None, sample_weight=None):
        return super().partial_fit(X, None, sample_weight)


@parametrize_with_checks(
    [UnsupervisedMixture(2, family=Gaussian("diag")), elbokit.FactorAnalysis(2)],
    expected_failed_checks=lambda e: {"check_sample_weight_equivalence_on_dense_data":
                                      "k-means++ draws rows at random: weighted and repeated rows "
                                      "consume the stream differently (as for GaussianMixture)"}
    if isinstance(e, Mixture) else {})
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("key", ["bernoulli", "categorical", "gaussian-full", "factor", "product"])
def test_cuda_tensors_fit_on_the_gpu(key):
    X = dataset(data_name(key))
    Xg = torch.as_tensor(X, device="cuda")
    with quiet():
        m = Mixture(3, family=FAMILIES[key](), random_state=0, dtype="float64", max_iter=5,
                    init_params="random_from_data").fit(Xg)
        c = Mixture(3, family=FAMILIES[key](), random_state=0, dtype="float64", max_iter=5,
                    init_params="random_from_data").fit(torch.as_tensor(X))
    assert m.weights_.device.type == "cuda"
    assert m.lower_bound_ == pytest.approx(c.lower_bound_, rel=1e-6)
    fa = elbokit.FactorAnalysis(1).fit(torch.as_tensor(dataset("gaussian"), device="cuda"))
    assert fa.transform(torch.as_tensor(dataset("gaussian"), device="cuda")).device.type == "cuda"
