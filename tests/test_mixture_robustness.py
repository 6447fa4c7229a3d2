"""GaussianMixture on data nobody tuned it on: float32 as safe as float64, offsets and
scales, degenerate data, warm starts, fitted state and feature names."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.exceptions import NotFittedError

import elbokit
from elbokit import ConvergenceWarning, DegenerateComponentWarning, GaussianMixture

from .conftest import COVARIANCE_TYPES

EPS32 = float(np.finfo(np.float32).eps)


def exact_score(gm, X):
    """Mean log p(x) of gm's fitted parameters, computed in float64."""
    twin = GaussianMixture(gm.n_components, covariance_type=gm.covariance_type, dtype="float64")
    twin.__dict__.update({k: v for k, v in vars(gm).items() if k.endswith("_")})
    return twin.score(X)


def falls(bounds):
    """Indices of the steps where the bound fell by more than float32 rounding."""
    b = np.asarray(bounds)
    return set(np.flatnonzero(np.diff(b) < -4 * EPS32 * (1 + np.abs(b[:-1]))).tolist())


def fit_both(X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        f32 = GaussianMixture(random_state=0, **kw).fit(X)
        f64 = GaussianMixture(random_state=0, dtype="float64", **kw).fit(X)
    return f32, f64


# ---------------------------------------------------------------- float32 == float64
# scikit-learn's digits (64 pixels, several constant) and breast_cancer (30 features
# spanning six orders of magnitude) at the K where float32 used to break: the default
# dtype reaches float64's optimum from the same start, and its bound climbs as float64's
ROBUSTNESS = [("digits", load_digits, k, ct) for k in (11, 13, 15) for ct in COVARIANCE_TYPES] + [
    ("breast_cancer", load_breast_cancer, k, ct) for k in range(11, 16) for ct in COVARIANCE_TYPES]


@pytest.fixture(scope="module")
def bundled():
    return {"digits": load_digits().data, "breast_cancer": load_breast_cancer().data}


@pytest.mark.parametrize("name, loader, k, ct", ROBUSTNESS, ids=[f"{n}-{k}-{ct}" for n, _, k, ct in ROBUSTNESS])
def test_float32_default_reaches_the_float64_optimum(name, loader, k, ct, bundled):
    X = bundled[name]
    f32, f64 = fit_both(X, n_components=k, covariance_type=ct)
    assert exact_score(f32, X) == pytest.approx(f64.score(X), abs=1e-3)
    assert f32.lower_bound_ == pytest.approx(exact_score(f32, X), abs=1e-4)  # reported = exact
    # the bound never falls beyond rounding, but where float64's falls too (reg_covar
    # makes the M-step a regularised maximiser, which may cost log-likelihood)
    assert falls(f32.lower_bounds_) <= falls(f64.lower_bounds_)
    assert f32.converged_ == f64.converged_


def offset_data():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(size=(300, 3)) - 3, rng.normal(size=(300, 3)) + 3])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_a_large_offset_costs_no_accuracy(dtype, ct):
    """1e8 + 1e-3 X fits as 1e-3 X does: k-means, E- and M-steps all work on centred data."""
    X = 1e-3 * offset_data()
    kw = dict(n_components=2, covariance_type=ct, dtype=dtype, random_state=0)
    plain = GaussianMixture(**kw).fit(X)
    shifted = GaussianMixture(**kw).fit(1e8 + X)
    assert shifted.converged_
    sd = 1e-3  # the clusters' spread: agreement to float32's (or float64's) rounding of it
    rounding = 1e-5 if dtype == "float32" else 1e-7
    # (float64 holds a mean near 1e8 to its spacing there, 1.5e-8)
    np.testing.assert_allclose(shifted.means_ - 1e8, plain.means_, rtol=0,
                               atol=rounding * sd + 4 * np.spacing(1e8))
    np.testing.assert_allclose(shifted.covariances_, plain.covariances_, rtol=10 * rounding,
                               atol=10 * rounding * np.abs(plain.covariances_).max())
    assert shifted.score(1e8 + X) == pytest.approx(plain.score(X), abs=1e-5)
    np.testing.assert_array_equal(shifted.predict(1e8 + X), plain.predict(X))


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
@pytest.mark.parametrize("scale", [1e30, 1e-15])
def test_extreme_scales_in_float32(ct, scale):
    """Data far outside float32's comfortable range: the affected work runs in float64."""
    X = offset_data()
    kw = dict(n_components=2, covariance_type=ct, random_state=0, reg_covar=1e-6 * scale ** 2)
    gm = GaussianMixture(**kw).fit((X * scale).astype(np.float32))
    ref = GaussianMixture(**{**kw, "reg_covar": 1e-6}, dtype="float64").fit(X)
    D = X.shape[1]
    assert gm.score(X * scale) + D * np.log(scale) == pytest.approx(ref.score(X), abs=1e-3)
    np.testing.assert_allclose(np.sort(gm.means_[:, 0]) / scale, np.sort(ref.means_[:, 0]), atol=1e-3)


# ---------------------------------------------------------------- degenerate data
def test_identical_rows_warn_and_report_duplicates():
    X = np.tile([[1.0, 2.0, 3.0]], (50, 1))
    with pytest.warns(SklearnConvergenceWarning, match=r"Number of distinct clusters \(1\) found "
                      r"smaller than n_clusters \(2\)"):
        with pytest.warns(DegenerateComponentWarning, match="duplicate another"):
            gm = GaussianMixture(2, random_state=0).fit(X)
    assert np.isfinite(gm.score(X))


def test_fewer_distinct_points_than_components_warn():
    X = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 9.0]]), 20, axis=0)
    with pytest.warns(SklearnConvergenceWarning, match=r"\(3\) found smaller than n_clusters \(4\)"):
        with pytest.warns(DegenerateComponentWarning, match="decrease n_components"):
            GaussianMixture(4, covariance_type="diag", random_state=0).fit(X)


def test_distinct_clusters_do_not_warn(wine):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GaussianMixture(3, random_state=0).fit(wine[0])


# ---------------------------------------------------------------- warm start, fitted state
def test_warm_start_converges_across_calls(wine):
    X, _ = wine
    gm = GaussianMixture(3, max_iter=1, warm_start=True, random_state=0, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for calls in range(1, 100):
            gm.fit(X)
            if gm.converged_:
                break
    assert gm.converged_ and calls < 50
    cold = GaussianMixture(3, random_state=0, dtype="float64").fit(X)
    assert calls == cold.n_iter_  # one iteration per call, the same convergence test
    assert gm.score(X) == pytest.approx(cold.score(X), abs=1e-9)


def test_warm_start_on_another_feature_count_is_a_clear_error(wine):
    X, _ = wine
    gm = GaussianMixture(3, warm_start=True, random_state=0).fit(X)
    with pytest.raises(ValueError, match="X has 12 features, but GaussianMixture is expecting 13 "
                                         "features as input: warm_start=True"):
        gm.fit(X[:, :12])
    assert gm.n_features_in_ == 13


UNFITTED = [("predict", (np.zeros((3, 2)),)), ("predict_proba", (np.zeros((3, 2)),)),
            ("score", (np.zeros((3, 2)),)), ("score_samples", (np.zeros((3, 2)),)),
            ("log_joint", (np.zeros((3, 2)),)), ("bic", (np.zeros((3, 2)),)),
            ("aic", (np.zeros((3, 2)),)), ("sample", (5,)), ("save", ("unused",)),
            ("predict", ("unused.npy",))]


@pytest.mark.parametrize("method, args", UNFITTED, ids=[f"{m}-{type(a[0]).__name__}" for m, a in UNFITTED])
def test_every_method_of_an_unfitted_model_raises_not_fitted(method, args):
    with pytest.raises(NotFittedError, match="This GaussianMixture instance is not fitted yet"):
        getattr(GaussianMixture(2), method)(*args)


# ---------------------------------------------------------------- feature names
def frame(X, columns):
    pd = pytest.importorskip("pandas")
    return pd.DataFrame(X, columns=columns)


def test_dataframe_feature_names_are_kept_and_checked(wine):
    X, _ = wine
    names = [f"f{j}" for j in range(X.shape[1])]
    gm = GaussianMixture(3, random_state=0).fit(frame(X, names))
    assert list(gm.feature_names_in_) == names
    np.testing.assert_array_equal(gm.predict(frame(X, names)), gm.predict(X))
    reordered = frame(X[:, ::-1], names[::-1])
    for method in (gm.predict, gm.predict_proba, gm.score, gm.score_samples):
        with pytest.raises(ValueError, match="Feature names must be in the same order as they were in fit"):
            method(reordered)
    with pytest.raises(ValueError, match="Feature names unseen at fit time:\n- other"):
        gm.predict(frame(X, names[:-1] + ["other"]))
    refit = GaussianMixture(3, random_state=0).fit(X)  # refit without names forgets them
    assert not hasattr(refit, "feature_names_in_")


def test_file_headers_are_feature_names(wine, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    X, _ = wine
    names = [f"c{j}" for j in range(X.shape[1])]
    np.savetxt(tmp_path / "x.csv", X, delimiter=",", header=",".join(names), comments="")
    pq.write_table(pa.table({c: X[:, j] for j, c in enumerate(names)}), tmp_path / "x.parquet")
    swapped = names[1:] + names[:1]
    np.savetxt(tmp_path / "swapped.csv", X, delimiter=",", header=",".join(swapped), comments="")
    for name in ("x.csv", "x.parquet"):
        gm = GaussianMixture(3, random_state=0).fit(tmp_path / name)
        assert list(gm.feature_names_in_) == names
        assert gm.predict(tmp_path / "x.csv").shape == (len(X),)
        with pytest.raises(ValueError, match="Feature names must be in the same order"):
            gm.score(tmp_path / "swapped.csv")
        gm.save(tmp_path / f"model-{name}")
        assert list(elbokit.load(tmp_path / f"model-{name}").feature_names_in_) == names


def test_cli_sample_writes_the_feature_names(wine, tmp_path):
    from click.testing import CliRunner

    from elbokit.cli import cli

    X, _ = wine
    names = [f"c{j}" for j in range(X.shape[1])]
    np.savetxt(tmp_path / "x.csv", X, delimiter=",", header=",".join(names), comments="")
    run = CliRunner().invoke
    assert run(cli, ["fit", "gmm", str(tmp_path / "x.csv"), "--out", str(tmp_path / "m"), "-k", "2"]).exit_code == 0
    assert run(cli, ["sample", str(tmp_path / "m"), "--out", str(tmp_path / "s.csv"), "-n", "5"]).exit_code == 0
    header = (tmp_path / "s.csv").read_text().splitlines()[0]
    assert header == ",".join(names + ["component"])
