"""Two processes (gloo) fit the HMM one process fits: each rank holds its own whole
sequences; the start, transition and emission statistics are summed across ranks."""

import warnings

import numpy as np
import pytest

from elbokit import CategoricalHMM, ConvergenceWarning, GaussianHMM

from ..test_hmm import gaussian_data, symbols
from .test_distributed import WORLD, spawn


def split_sequences(X, lengths, n_first):
    """Rank 0 gets the first ``n_first`` sequences, rank 1 the rest."""
    cut = int(np.sum(lengths[:n_first]))
    return [(X[:cut], lengths[:n_first]), (X[cut:], lengths[n_first:])]


def start(model, X, lengths):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.set_params(n_iter=1, random_state=0).fit(X, lengths)
    return dict(startprob_init=model.startprob_, transmat_init=model.transmat_,
                params_init=model.params_, init_params="", n_iter=6, tol=0, dtype="float64")


def cases():
    X, lengths = gaussian_data(n_seq=10, T=40)
    Xs, ls = symbols(n=1000)
    return {
        "gaussian-full": (GaussianHMM, dict(n_components=3, covariance_type="full"), X, lengths, 4),
        "categorical": (CategoricalHMM, dict(n_components=2), Xs, ls, 7),
    }


def _fit_all(rank, data, out):
    for name, (cls, kw, parts) in data.items():
        Xr, lr = parts[rank]
        m = cls(**kw).fit(Xr, lr)
        np.savez(out / f"{name}-{rank}.npz", bounds=m.lower_bounds_, transmat=m.transmat_,
                 startprob=m.startprob_, **{k.replace(".", "_"): v for k, v in m.params_.items()})
        free = cls(**{k: v for k, v in kw.items() if k in ("n_components", "covariance_type")},
                   random_state=rank, n_iter=4).fit(Xr, lr)  # its own init: ranks must still agree
        np.savez(out / f"{name}-free-{rank}.npz", transmat=free.transmat_)


@pytest.mark.filterwarnings("ignore::elbokit.ConvergenceWarning")
def test_hmm_across_processes_equals_one_process(tmp_path):
    data, single = {}, {}
    for name, (cls, base, X, lengths, n_first) in cases().items():
        kw = dict(base, **start(cls(**base), X, lengths))
        data[name] = (cls, kw, split_sequences(X, lengths, n_first))
        single[name] = cls(**kw).fit(X, lengths)
    spawn(_fit_all, data, tmp_path)
    for name, m in single.items():
        for rank in range(WORLD):
            got = np.load(tmp_path / f"{name}-{rank}.npz")
            np.testing.assert_allclose(got["bounds"], m.lower_bounds_, rtol=1e-12)
            np.testing.assert_allclose(got["transmat"], m.transmat_, rtol=1e-10, atol=1e-13)
            np.testing.assert_allclose(got["startprob"], m.startprob_, rtol=1e-10, atol=1e-13)
            for k, v in m.params_.items():
                np.testing.assert_allclose(got[k.replace(".", "_")], v, rtol=1e-9, atol=1e-12)
        a, b = (np.load(tmp_path / f"{name}-free-{r}.npz") for r in range(WORLD))
        np.testing.assert_array_equal(a["transmat"], b["transmat"])
