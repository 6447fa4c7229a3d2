"""BayesianGaussianMixture: what it finds, stochastic VI, streams, processes, persistence."""

import warnings

import numpy as np
import pytest
import torch

from elbokit import BayesianGaussianMixture, ConvergenceWarning, load

from .conftest import make_blobs_data
from .inference.test_distributed import shards, spawn


@pytest.fixture(scope="module")
def three():
    """Three clusters in 2-D, 600 rows."""
    return make_blobs_data(n=600, d=2, k=3, seed=5, spread=8.0)


def quiet_fit(est, X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, **kw)


def test_the_dirichlet_process_switches_off_unneeded_components(three):
    bgm = quiet_fit(BayesianGaussianMixture(10, weight_concentration_prior=0.01, max_iter=300,
                                            random_state=0), three)
    assert int((bgm.weights_ > 0.02).sum()) == 3
    assert bgm.weights_.sum() == pytest.approx(1.0)
    assert np.sort(bgm.weights_)[-3:] == pytest.approx([1 / 3] * 3, abs=0.01)


def test_online_vi_reaches_the_batch_optimum(three):
    kw = dict(dtype="float64", random_state=0, weight_concentration_prior_type="dirichlet_distribution")
    batch = quiet_fit(BayesianGaussianMixture(3, max_iter=200, tol=1e-8, **kw), three)
    online = quiet_fit(BayesianGaussianMixture(3, algorithm="online", batch_size=60, max_iter=40,
                                               tol=0, **kw), three)
    assert online.n_steps_ == 40 * 10
    assert online.lower_bound_ == pytest.approx(batch.lower_bound_, abs=2e-3)
    order = np.argsort(online.means_[:, 0])
    np.testing.assert_allclose(online.means_[order], batch.means_[np.argsort(batch.means_[:, 0])],
                               atol=0.05)
    # partial_fit: the same steps, one mini-batch per call
    est = BayesianGaussianMixture(3, algorithm="online", total_samples=len(three), **kw)
    for i in range(0, 600, 60):
        est.partial_fit(three[i:i + 60])
    assert est.n_steps_ == 10 and np.isfinite(est.lower_bounds_).all()


def test_streamed_file_equals_in_memory(three, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, three)
    kw = dict(dtype="float64", random_state=0, max_iter=8, tol=0, batch_size=128,
              init_params="random")
    a = quiet_fit(BayesianGaussianMixture(4, **kw), three)
    b = quiet_fit(BayesianGaussianMixture(4, **kw), str(path))
    np.testing.assert_allclose(b.lower_bounds_, a.lower_bounds_, rtol=1e-12)
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-10, atol=1e-12)
    # online from the file: mini-batches are its chunks
    c = quiet_fit(BayesianGaussianMixture(4, algorithm="online", **kw), str(path))
    assert c.n_steps_ == 8 * 5 and np.isfinite(c.lower_bound_)


def test_tensors_in_tensors_out_and_float32(three):
    X = torch.as_tensor(three, dtype=torch.float32)
    bgm = quiet_fit(BayesianGaussianMixture(3, random_state=0), X)
    assert isinstance(bgm.means_, torch.Tensor) and isinstance(bgm.predict(X), torch.Tensor)
    ref = quiet_fit(BayesianGaussianMixture(3, random_state=0, dtype="float64"), three)
    assert bgm.lower_bound_ == pytest.approx(ref.lower_bound_, abs=1e-4)
    assert float(bgm.score(X)) == pytest.approx(ref.score(three), abs=1e-4)


def test_save_load_round_trip(three, tmp_path):
    bgm = quiet_fit(BayesianGaussianMixture(4, covariance_type="tied", random_state=0), three)
    bgm.save(tmp_path / "m")
    again = load(tmp_path / "m")
    np.testing.assert_array_equal(again.predict(three), bgm.predict(three))
    np.testing.assert_allclose(again.score_samples(three), bgm.score_samples(three))
    assert again.degrees_of_freedom_ == bgm.degrees_of_freedom_


def test_bad_input_names_the_argument(three):
    with pytest.raises(ValueError, match="weight_concentration_prior_type"):
        BayesianGaussianMixture(weight_concentration_prior_type="dp").fit(three)
    with pytest.raises(ValueError, match="NaN"):
        BayesianGaussianMixture().fit(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="total_samples"):
        BayesianGaussianMixture().partial_fit(three)
    with pytest.raises(ValueError, match="covariance_prior"):
        BayesianGaussianMixture(covariance_type="diag", covariance_prior=[1.0]).fit(three)


def _bgmm_fit(rank, cases, out):
    for name, (parts, start) in cases.items():
        start.set_params(warm_start=True, max_iter=10)
        bgm = start.fit(parts[rank])
        online = BayesianGaussianMixture(3, algorithm="online", batch_size=100, max_iter=3,
                                         random_state=0).fit(parts[rank])
        np.savez(out / f"{name}-{rank}.npz", means=bgm.means_, bounds=bgm.lower_bounds_,
                 online=online.means_)


def test_across_processes_equals_one_process(three, tmp_path):
    start = quiet_fit(BayesianGaussianMixture(3, dtype="float64", max_iter=0, tol=0,
                                              random_state=0), three)
    cases = {"uneven": (shards(three, [350, 250]), start),
             "empty-rank": (shards(three, [0, 600]), start)}
    spawn(_bgmm_fit, cases, tmp_path)
    one = quiet_fit(start.set_params(warm_start=True, max_iter=10), three)
    for name in cases:
        got = [np.load(tmp_path / f"{name}-{rank}.npz") for rank in range(2)]
        for g in got:
            np.testing.assert_allclose(g["bounds"], one.lower_bounds_, rtol=1e-9)
            np.testing.assert_allclose(g["means"], one.means_, rtol=1e-8, atol=1e-9)
        np.testing.assert_array_equal(got[0]["online"], got[1]["online"])  # every rank alike


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu(three):
    kw = dict(dtype="float64", random_state=0, max_iter=10, tol=0, init_params="random")
    cpu = quiet_fit(BayesianGaussianMixture(3, **kw), torch.as_tensor(three))
    gpu = quiet_fit(BayesianGaussianMixture(3, **kw), torch.as_tensor(three, device="cuda"))
    assert gpu.means_.is_cuda
    online = quiet_fit(BayesianGaussianMixture(3, algorithm="online", **kw),
                       torch.as_tensor(three, device="cuda"))
    assert np.isfinite(online.lower_bound_)
    np.testing.assert_allclose(gpu.lower_bounds_[-1], cpu.lower_bounds_[-1], rtol=1e-6)


def test_dataframe_and_file_feature_names_are_kept_and_checked(three, tmp_path):
    pd = pytest.importorskip("pandas")
    X = three
    names = [f"f{j}" for j in range(X.shape[1])]
    est = quiet_fit(BayesianGaussianMixture(3, random_state=0, max_iter=20), pd.DataFrame(X, columns=names))
    assert list(est.feature_names_in_) == names
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        plain = est.predict(X)  # scikit-learn's warning for an array after a frame
    np.testing.assert_array_equal(est.predict(pd.DataFrame(X, columns=names)), plain)
    with pytest.raises(ValueError, match="Feature names must be in the same order"):
        est.score_samples(pd.DataFrame(X[:, ::-1], columns=names[::-1]))
    est.save(tmp_path / "m")
    assert list(load(tmp_path / "m").feature_names_in_) == names
    swapped = names[::-1]
    np.savetxt(tmp_path / "swapped.csv", X, delimiter=",", header=",".join(swapped), comments="")
    with pytest.raises(ValueError, match="Feature names must be in the same order"):
        est.predict(tmp_path / "swapped.csv")
    assert not hasattr(quiet_fit(BayesianGaussianMixture(3, random_state=0, max_iter=20), X),
                       "feature_names_in_")
    np.savetxt(tmp_path / "x.csv", X, delimiter=",", header=",".join(names), comments="")
    from_file = quiet_fit(BayesianGaussianMixture(3, random_state=0, max_iter=20), tmp_path / "x.csv")
    assert list(from_file.feature_names_in_) == names
    online = BayesianGaussianMixture(3, random_state=0, total_samples=len(X))
    online.partial_fit(pd.DataFrame(X[:100], columns=names))
    assert list(online.feature_names_in_) == names


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_singular_data_fits_with_the_default_priors(three, ct):
    """Constant and collinear columns (digits' blank pixels) make scikit-learn's default
    covariance_prior singular; the exact ELBO holds its normaliser, so the default is
    floored (priors.nonsingular_covariance) and the fit runs, the bound never falling
    with reg_covar=0."""
    X = np.column_stack([three, np.full(len(three), 3.0), three[:, 0] + three[:, 1]])
    est = quiet_fit(BayesianGaussianMixture(3, covariance_type=ct, reg_covar=0.0, random_state=0,
                                            dtype="float64", max_iter=60), X)
    lb = np.asarray(est.lower_bounds_)
    assert np.isfinite(lb).all() and np.isfinite(est.score(X))
    assert (np.diff(lb) >= -1e-10 * np.abs(lb[1:])).all()


def test_verbose_says_when_batch_vi_stops_unconverged(capsys):
    """The mixture warns by itself (run_batch_vi's warn=False); its verbose line must
    still say that the run stopped short, not that it stopped as asked."""
    X = make_blobs_data()
    with pytest.warns(ConvergenceWarning):
        BayesianGaussianMixture(3, max_iter=1, verbose=2, random_state=0).fit(X)
    out = capsys.readouterr().out
    assert "did not converge after 1 iterations" in out and "stopped as asked" not in out
