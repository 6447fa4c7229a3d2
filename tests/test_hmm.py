"""The HMM estimators: monotone Baum-Welch, agreement with hmmlearn from the same start,
batches == one sequence at a time, streams == memory, frozen parameters, structural
zeros, pseudo-counts, save/load, sampling, model selection, stepwise EM, errors."""

import warnings

import numpy as np
import pytest
import torch

import elbokit
from elbokit import CategoricalHMM, ConvergenceWarning, GaussianHMM, GMMHMM, HMM, PoissonHMM
from elbokit.families import StudentT

hmmlearn = pytest.importorskip("hmmlearn.hmm")

COVARIANCE_TYPES = ["diag", "full", "spherical", "tied"]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def gaussian_data(n_seq=12, T=60, seed=0, D=2):
    """Sequences from a 3-state Gaussian HMM with well separated means."""
    rng = np.random.default_rng(seed)
    A = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.15, 0.15, 0.7]])
    means = np.array([[0.0] * D, [4.0] * D, [-4.0, 4.0] * (D // 2) + [0.0] * (D % 2)])
    X, lengths = [], []
    for s in range(n_seq):
        L = T + (s % 4) * 7  # different lengths
        z = [rng.choice(3, p=[0.5, 0.3, 0.2])]
        for _ in range(L - 1):
            z.append(rng.choice(3, p=A[z[-1]]))
        X.append(means[z] + rng.normal(size=(L, D)))
        lengths.append(L)
    return np.concatenate(X), np.array(lengths)


@pytest.fixture(scope="module")
def data():
    return gaussian_data()


def symbols(seed=0, n=1500, L=4):
    rng = np.random.default_rng(seed)
    z = np.cumsum(rng.random(n) < 0.1) % 2  # sticky two-state chain
    p = np.array([[0.6, 0.3, 0.05, 0.05], [0.05, 0.05, 0.3, 0.6]])[:, :L]
    p /= p.sum(1, keepdims=True)
    return np.array([[rng.choice(L, p=p[k])] for k in z]), np.array([100] * (n // 100))


# ----------------------------------------------------------------------- monotone EM
MODELS = [
    pytest.param(lambda: GaussianHMM(3, ct, dtype="float64"), id=f"gaussian-{ct}")
    for ct in COVARIANCE_TYPES
] + [
    pytest.param(lambda: GMMHMM(2, n_mix=2, covariance_type="diag", dtype="float64"), id="gmm-diag"),
    pytest.param(lambda: GMMHMM(2, n_mix=2, covariance_type="tied", dtype="float64"), id="gmm-tied"),
    pytest.param(lambda: HMM(3, emission=StudentT("diag"), dtype="float64"), id="student-t"),
]


@pytest.mark.parametrize("make", MODELS)
def test_the_bound_never_decreases(make, data):
    X, lengths = data
    model = make().set_params(n_iter=12, tol=0, random_state=0).fit(X, lengths)
    diffs = np.diff(model.lower_bounds_)
    assert len(model.lower_bounds_) == 13
    assert diffs.min() >= -1e-9 * abs(model.lower_bounds_).max(), diffs
    np.testing.assert_allclose(model.lower_bound_, model.score(X, lengths), rtol=1e-9)


def test_the_bound_never_decreases_for_counts():
    X, lengths = symbols()
    for model in (CategoricalHMM(2, dtype="float64"), PoissonHMM(2, dtype="float64")):
        model.set_params(n_iter=15, tol=0, random_state=1).fit(X, lengths)
        assert np.diff(model.lower_bounds_).min() >= -1e-9


# ----------------------------------------------------------------------- hmmlearn
def same_start(ours, theirs, X, lengths, names):
    """Fit hmmlearn once for a start, then both 8 iterations from it."""
    theirs.set_params(n_iter=1, random_state=0)
    theirs.fit(X, lengths)
    start = {n: np.array(getattr(theirs, n)) for n in names}
    if "covars_" in names:
        start["covars_"] = np.array(theirs._covars_)
    theirs.set_params(n_iter=8, tol=-np.inf, init_params="")
    theirs.monitor_ = type(theirs.monitor_)(-np.inf, 8, False)
    for n, v in start.items():
        setattr(theirs, n, v.copy())
        setattr(ours, n, v.copy())
    theirs.fit(X, lengths)
    ours.set_params(n_iter=8, tol=0, init_params="", dtype="float64").fit(X, lengths)
    return theirs, ours


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_gaussian_agrees_with_hmmlearn(ct, data):
    X, lengths = data
    h, m = same_start(GaussianHMM(3, ct, min_covar=0.0),
                      hmmlearn.GaussianHMM(3, ct, covars_prior=0.0, min_covar=0.0), X, lengths,
                      ["startprob_", "transmat_", "means_", "covars_"])
    np.testing.assert_allclose(m.lower_bounds_[:-1] * len(X), h.monitor_.history, rtol=1e-10)
    np.testing.assert_allclose(m.score(X, lengths) * len(X), h.score(X, lengths), rtol=1e-10)
    for a, b in [(m.means_, h.means_), (m.transmat_, h.transmat_), (m.startprob_, h.startprob_)]:
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    theirs = h._covars_[:, 0] if ct == "spherical" else h._covars_
    np.testing.assert_allclose(m.params_["covariance"], theirs, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(m.predict_proba(X, lengths), h.predict_proba(X, lengths), atol=1e-9)
    assert np.array_equal(m.predict(X, lengths), h.predict(X, lengths))
    np.testing.assert_allclose(m.decode(X, lengths)[0], h.decode(X, lengths)[0], rtol=1e-10)


def test_categorical_and_poisson_agree_with_hmmlearn():
    X, lengths = symbols()
    prior = np.full((2, 2), 1.5)
    h, m = same_start(CategoricalHMM(2, transmat_prior=prior, emissionprob_prior=1.3),
                      hmmlearn.CategoricalHMM(2, transmat_prior=prior, emissionprob_prior=1.3),
                      X, lengths, ["startprob_", "transmat_", "emissionprob_"])
    np.testing.assert_allclose(m.lower_bounds_[:-1] * len(X), h.monitor_.history, rtol=1e-10)
    np.testing.assert_allclose(m.emissionprob_, h.emissionprob_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m.transmat_, h.transmat_, rtol=1e-9)
    # (hmmlearn's Gamma prior on the rates divides by the posterior count of all states,
    # the conjugate update by the state's own: they agree without a prior)
    h, m = same_start(PoissonHMM(2), hmmlearn.PoissonHMM(2), X + 1, lengths,
                      ["startprob_", "transmat_", "lambdas_"])
    np.testing.assert_allclose(m.lower_bounds_[:-1] * len(X), h.monitor_.history, rtol=1e-10)
    np.testing.assert_allclose(m.lambdas_, h.lambdas_, rtol=1e-9)


@pytest.mark.parametrize("ct", ["diag", "full"])
def test_gmmhmm_differs_from_hmmlearn_only_by_its_exact_covariance_step(ct, data):
    # hmmlearn's GMMHMM takes the covariances around the E-step's means; the exact M-step
    # takes them around the new ones: theirs = ours + (new mean - old mean)^2 (diag).
    X, lengths = data
    h = hmmlearn.GMMHMM(2, n_mix=2, covariance_type=ct, n_iter=1, random_state=0).fit(X, lengths)
    names = ["startprob_", "transmat_", "weights_", "means_", "covars_"]
    start = {n: np.array(getattr(h, n)) for n in names}
    h = hmmlearn.GMMHMM(2, n_mix=2, covariance_type=ct, n_iter=1, init_params="")
    m = GMMHMM(2, n_mix=2, covariance_type=ct, min_covar=0.0, n_iter=1, init_params="",
               dtype="float64")
    for n, v in start.items():
        setattr(h, n, v.copy())
        setattr(m, n, v.copy())
    h.fit(X, lengths)
    m.fit(X, lengths)
    np.testing.assert_allclose(m.means_, h.means_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.weights_, h.weights_, rtol=1e-10)
    d = m.means_ - start["means_"]
    shift = d ** 2 if ct == "diag" else d[..., :, None] * d[..., None, :]
    np.testing.assert_allclose(m.covars_ + shift, h.covars_, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------- batches, streams
def test_a_batch_of_sequences_equals_them_one_by_one(data):
    X, lengths = data
    start = np.concatenate([[0], np.cumsum(lengths)])
    kw = dict(n_iter=6, tol=0, random_state=0, dtype="float64")
    whole = GaussianHMM(3, "full", **kw).fit(X, lengths)
    single = GaussianHMM(3, "full", batch_size=1, **kw).fit(X, lengths)  # one sequence per batch
    np.testing.assert_allclose(single.lower_bounds_, whole.lower_bounds_, rtol=1e-12)
    np.testing.assert_allclose(single.means_, whole.means_, rtol=1e-10)
    np.testing.assert_allclose(single.transmat_, whole.transmat_, rtol=1e-10)
    one = [whole.score_samples(X[a:b])[0] for a, b in zip(start[:-1], start[1:])]
    np.testing.assert_allclose(whole.score_samples(X, lengths), one, rtol=1e-12)
    states = np.concatenate([whole.predict(X[a:b]) for a, b in zip(start[:-1], start[1:])])
    assert np.array_equal(whole.predict(X, lengths), states)
    post = np.concatenate([whole.predict_proba(X[a:b]) for a, b in zip(start[:-1], start[1:])])
    np.testing.assert_allclose(whole.predict_proba(X, lengths), post, atol=1e-12)


def test_streamed_sequences_equal_in_memory(data, tmp_path):
    X, lengths = data
    seqs = np.split(X, np.cumsum(lengths)[:-1])
    (tmp_path / "seqs").mkdir()
    for i, s in enumerate(seqs):
        np.save(tmp_path / "seqs" / f"seq{i:02d}.npy", s)
    np.save(tmp_path / "rows.npy", X)
    kw = dict(n_iter=5, tol=0, random_state=0, dtype="float64")
    ref = GaussianHMM(3, **kw).fit(X, lengths)
    inputs = [(seqs, None), (tmp_path / "seqs", None), (sorted((tmp_path / "seqs").glob("*.npy")), None),
              (lambda: iter(seqs), None), (tmp_path / "rows.npy", lengths)]
    for source, lens in inputs:
        got = GaussianHMM(3, batch_size=150, **kw).fit(source, lens)
        np.testing.assert_allclose(got.lower_bounds_, ref.lower_bounds_, rtol=1e-10)
        np.testing.assert_allclose(got.means_, ref.means_, rtol=1e-9)
        np.testing.assert_allclose(got.score_samples(source, lens), ref.score_samples(X, lengths),
                                   rtol=1e-10)


def test_stepwise_em_over_a_stream_of_sequences(data):
    X, lengths = data
    exact = GaussianHMM(3, random_state=0, dtype="float64").fit(X, lengths)
    seqs = np.split(X, np.cumsum(lengths)[:-1])
    step = GaussianHMM(3, algorithm="stepwise", batch_size=200, n_iter=20, random_state=0,
                       dtype="float64").fit(lambda: iter(seqs))
    assert step.n_steps_ > 20
    assert step.score(X, lengths) > exact.score(X, lengths) - 0.02
    online = GaussianHMM(3, random_state=0, dtype="float64")
    for epoch in range(4):
        for i in range(0, len(seqs), 3):
            online.partial_fit(np.concatenate(seqs[i:i + 3]), lengths[i:i + 3])
    assert online.n_steps_ == 16
    assert online.score(X, lengths) > exact.score(X, lengths) - 0.05


# ----------------------------------------------------------------------- parameters
def test_frozen_parameters_stay_and_preset_ones_are_used(data):
    X, lengths = data
    ref = GaussianHMM(3, random_state=0, dtype="float64").fit(X, lengths)
    m = GaussianHMM(3, params="st", init_params="st", dtype="float64", n_iter=5)
    m.means_, m.covars_ = ref.means_ + 0.5, ref.params_["covariance"]
    m.fit(X, lengths)
    np.testing.assert_array_equal(m.means_, ref.means_ + 0.5)
    np.testing.assert_array_equal(m.params_["covariance"], ref.params_["covariance"])
    assert not np.allclose(m.transmat_, np.full((3, 3), 1 / 3))
    m = GaussianHMM(3, params="mc", random_state=0, dtype="float64", n_iter=5,
                    startprob_init=[0.2, 0.3, 0.5], transmat_init=ref.transmat_).fit(X, lengths)
    np.testing.assert_array_equal(m.startprob_, [0.2, 0.3, 0.5])
    np.testing.assert_array_equal(m.transmat_, ref.transmat_)


def test_left_right_structural_zeros_are_kept_with_pseudo_counts(data):
    X, lengths = data
    A = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
    m = GaussianHMM(3, random_state=0, dtype="float64", init_params="mc", transmat_prior=2.0,
                    startprob_prior=3.0, n_iter=10)
    m.startprob_, m.transmat_ = np.array([1.0, 0.0, 0.0]), A
    m.fit(X, lengths)
    assert np.all(m.transmat_[A == 0] == 0) and np.all(m.transmat_[A > 0] > 0)
    assert np.all(m.startprob_[1:] == 0)
    assert np.all(np.isfinite(m.predict_proba(X, lengths)))
    # zeros are not free parameters: no free start probability, 2 free transitions
    K, D = 3, X.shape[1]
    assert m._n_parameters() == 0 + 2 + 2 * K * D
    np.testing.assert_allclose(m.bic(X, lengths),
                               -2 * m.score(X, lengths) * len(X) + m._n_parameters() * np.log(len(X)))


def test_n_init_random_state_and_warm_start(data):
    X, lengths = data
    a = GaussianHMM(3, random_state=3, n_init=3, init_method="random").fit(X, lengths)
    b = GaussianHMM(3, random_state=3, n_init=3, init_method="random").fit(X, lengths)
    np.testing.assert_array_equal(a.means_, b.means_)
    singles = [GaussianHMM(3, random_state=3, init_method="random") for _ in range(1)]
    assert a.lower_bound_ >= max(s.fit(X, lengths).lower_bound_ for s in singles) - 1e-6
    w = GaussianHMM(3, random_state=0, warm_start=True, n_iter=2, tol=0).fit(X, lengths)
    first = w.lower_bound_
    w.fit(X, lengths)
    assert w.lower_bounds_[0] == pytest.approx(first, abs=1e-6) and w.lower_bound_ >= first - 1e-7


def test_missing_values_are_marginalised(data):
    X, lengths = data
    m = GaussianHMM(3, "diag", random_state=0, dtype="float64").fit(X, lengths)
    Xm = X.copy()
    Xm[::5, 1] = np.nan
    one = GaussianHMM(3, "diag", n_iter=0, init_params="", dtype="float64")
    one.startprob_, one.transmat_ = m.startprob_, m.transmat_
    one.means_, one.covars_ = m.means_[:, :1], m.params_["covariance"][:, :1]
    one.fit(X[:, :1])
    partial = m.score_samples(Xm, lengths)
    assert np.all(np.isfinite(partial))
    Xm[:, 1] = np.nan  # with the second column all missing: the one-column model
    np.testing.assert_allclose(m.score_samples(Xm, lengths), one.score_samples(X[:, :1], lengths),
                               rtol=1e-10)
    GaussianHMM(3, "full", random_state=0, n_iter=3).fit(Xm[:, :2], lengths)


def test_save_and_load_every_model(data, tmp_path):
    X, lengths = data
    Xs, ls = symbols()
    models = [(GaussianHMM(3, "tied", random_state=0, n_iter=3), X, lengths),
              (CategoricalHMM(2, random_state=0, n_iter=3), Xs, ls),
              (PoissonHMM(2, random_state=0, n_iter=3), Xs, ls),
              (GMMHMM(2, n_mix=2, covariance_type="full", random_state=0, n_iter=3), X, lengths),
              (HMM(2, emission="bernoulli", random_state=0, n_iter=3), (Xs > 1).astype(float), ls)]
    for i, (model, Xi, li) in enumerate(models):
        model.fit(Xi, li)
        path = model.save(tmp_path / f"m{i}")
        back = elbokit.load(path)
        assert type(back) is type(model)
        np.testing.assert_allclose(back.score_samples(Xi, li), model.score_samples(Xi, li))
        np.testing.assert_array_equal(back.transmat_, model.transmat_)
    bad = GaussianHMM(3, random_state=0, n_iter=2).fit(X, lengths)
    bad.transmat_ = bad.transmat_ * 2
    with pytest.raises((ValueError, elbokit.ModelFormatError), match="transmat"):
        bad.save(tmp_path / "bad")
        elbokit.load(tmp_path / "bad")


def test_sample_follows_the_chain(data):
    X, lengths = data
    m = GaussianHMM(3, random_state=0).fit(X, lengths)
    Xs, z = m.sample(40, 250, random_state=1)
    assert Xs.shape == (10_000, 2) and z.shape == (10_000,)
    z = z.reshape(40, 250)
    counts = np.zeros((3, 3))
    np.add.at(counts, (z[:, :-1].ravel(), z[:, 1:].ravel()), 1)
    np.testing.assert_allclose(counts / counts.sum(1, keepdims=True), m.transmat_, atol=0.03)
    np.testing.assert_allclose(np.bincount(z[:, 0], minlength=3) / 40, m.startprob_, atol=0.25)
    for k in range(3):
        np.testing.assert_allclose(Xs[z.ravel() == k].mean(0), m.means_[k], atol=0.15)
    again = m.sample(40, 250, random_state=1)
    np.testing.assert_array_equal(again[1], z.ravel())


def test_torch_input_gives_torch_output_and_names_are_kept(data):
    X, lengths = data
    m = GaussianHMM(3, random_state=0, n_iter=3).fit(torch.as_tensor(X, dtype=torch.float32), lengths)
    assert isinstance(m.means_, torch.Tensor) and isinstance(m.predict(torch.as_tensor(X), lengths),
                                                             torch.Tensor)
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=["a", "b"])
    m = GaussianHMM(3, random_state=0, n_iter=3).fit(frame, lengths)
    assert list(m.feature_names_in_) == ["a", "b"]


def test_bad_input_gets_a_clear_error(data):
    X, lengths = data
    with pytest.raises(ValueError, match="sums to"):
        GaussianHMM(2).fit(X, lengths[:-1])
    with pytest.raises(ValueError, match="params="):
        GaussianHMM(2, params="sx").fit(X, lengths)
    with pytest.raises(ValueError, match="must have shape"):
        GaussianHMM(2, init_params="", startprob_init=[1.0], transmat_init=np.eye(2)).fit(X)
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianHMM(2, startprob_init=[0.9, 0.9]).fit(X)
    with pytest.raises(ValueError, match="level codes"):
        CategoricalHMM(2).fit(X, lengths)
    with pytest.raises(ValueError, match="expecting 2 features"):
        GaussianHMM(2, n_iter=2).fit(X, lengths).score(X[:, :1])
    with pytest.raises(ValueError, match="n_components"):
        GaussianHMM(5).fit(X[:3])
    with pytest.warns(ConvergenceWarning, match="increase n_iter"):  # its own name, not max_iter
        GaussianHMM(2, n_iter=1, random_state=0).fit(X, lengths)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_equals_cpu(data):
    X, lengths = data
    kw = dict(n_iter=5, tol=0, random_state=0, dtype="float64", init_params="")
    start = GaussianHMM(3, random_state=0, n_iter=1).fit(X, lengths)
    fits = []
    for device in ("cpu", "cuda"):
        m = GaussianHMM(3, device=device, **kw)
        m.startprob_, m.transmat_, m.means_, m.covars_ = (start.startprob_, start.transmat_,
                                                          start.means_, start.params_["covariance"])
        fits.append(m.fit(X, lengths))
    np.testing.assert_allclose(fits[1].lower_bounds_, fits[0].lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(fits[1].means_, fits[0].means_, rtol=1e-9)
