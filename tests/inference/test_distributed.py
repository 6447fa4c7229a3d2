"""Two processes on loopback (gloo) fit what one process fits.

Each test spawns 2 ranks with torch.multiprocessing; a rank writes what it
fitted to a file, and the parent compares with a single-process fit.
"""

import socket
import time
import warnings
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from elbokit import ConvergenceWarning, GaussianMixture
from elbokit.inference.distributed import RankFailedError, Reducer
from elbokit.inference.em import run_em

from ..conftest import COVARIANCE_TYPES, make_blobs_data

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, *args, timeout: float = 240.0):
    """Run ``fn(rank, *args)`` on WORLD spawned ranks; fail (killing them) after ``timeout`` s."""
    context = mp.spawn(_run, args=(fn, free_port(), args), nprocs=WORLD, join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):  # raises if a rank failed
        if time.monotonic() >= deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {WORLD} ranks did not finish within {timeout:.0f} s")


def _run(rank, fn, port, args):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        warnings.simplefilter("ignore", ConvergenceWarning)
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def shards(X, sizes):
    bounds = np.cumsum([0, *sizes])
    return [X[bounds[i]:bounds[i + 1]] for i in range(len(sizes))]


def same_start(ct, X):
    start = GaussianMixture(3, covariance_type=ct, max_iter=2, random_state=0, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start.fit(X)
    return dict(n_components=3, covariance_type=ct, dtype="float64", max_iter=15, tol=0,
                weights_init=start.weights_, means_init=start.means_,
                precisions_init=start.precisions_)


def _fit_every_type(rank, parts, kws, out):
    results = {}
    for ct, kw in kws.items():
        gm = GaussianMixture(**kw).fit(parts[rank])
        results[ct] = gm
        np.savez(out / f"{ct}-{rank}.npz", means=gm.means_, covariances=gm.covariances_,
                 weights=gm.weights_, bounds=gm.lower_bounds_, n_iter=gm.n_iter_)
    # a random initialisation too: every rank must end with the same parameters
    gm = GaussianMixture(3, random_state=rank, max_iter=20).fit(parts[rank])
    np.savez(out / f"random-{rank}.npz", means=gm.means_, n_iter=gm.n_iter_)


@pytest.fixture(scope="module")
def data():
    return make_blobs_data(n=1001, d=3, k=3, seed=7)


def test_uneven_shards_give_the_single_process_fit(data, tmp_path):
    kws = {ct: same_start(ct, data) for ct in COVARIANCE_TYPES}
    spawn(_fit_every_type, shards(data, [501, 500]), kws, tmp_path)
    for ct, kw in kws.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            single = GaussianMixture(**kw).fit(data)
        for rank in range(WORLD):
            got = np.load(tmp_path / f"{ct}-{rank}.npz")
            np.testing.assert_allclose(got["means"], single.means_, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(got["covariances"], single.covariances_, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(got["weights"], single.weights_, rtol=1e-10)
            np.testing.assert_allclose(got["bounds"], single.lower_bounds_, rtol=1e-12)
            assert int(got["n_iter"]) == single.n_iter_
    a, b = (np.load(tmp_path / f"random-{r}.npz") for r in range(WORLD))
    np.testing.assert_array_equal(a["means"], b["means"])  # one model, not two
    assert int(a["n_iter"]) == int(b["n_iter"])  # all ranks stopped together


def _fit_full(rank, parts, kw, out):
    gm = GaussianMixture(**kw).fit(parts[rank])
    np.savez(out / f"full-{rank}.npz", means=gm.means_, n_iter=gm.n_iter_)


def test_an_empty_rank_takes_part(data, tmp_path):
    kw = same_start("full", data)
    spawn(_fit_full, shards(data, [0, 1001]), kw, tmp_path)
    single = GaussianMixture(**kw).fit(data)
    for rank in range(WORLD):
        got = np.load(tmp_path / f"full-{rank}.npz")
        np.testing.assert_allclose(got["means"], single.means_, rtol=1e-10)


def test_a_bad_shard_fails_the_job_instead_of_hanging(data):
    parts = shards(data, [501, 500])
    parts[1] = parts[1].copy()
    parts[1][3, 1] = np.nan
    # rank 1 raises its own error, rank 0 a RankFailedError naming rank 1: no hang
    with pytest.raises(Exception, match=r"NaN or inf|rank\(s\) \[1\] of 2 failed"):
        spawn(_fit_full, parts, dict(n_components=3), None)


class FailsOnRankOne:
    """A model whose E-step raises on rank 1 at its third call."""

    def __init__(self):
        self.calls = 0

    def expected_statistics(self, params, X, weight):
        self.calls += 1
        if dist.get_rank() == 1 and self.calls == 3:
            raise ArithmeticError("rank 1 broke")
        return {"s": X.sum(0).double()}, X.new_tensor(-1.0, dtype=torch.float64)

    def maximize(self, stats, params):
        return params


def _raise_mid_fit(rank, out):
    X = torch.ones(4, 2)
    try:
        run_em(FailsOnRankOne(), None, [(X, None)], tol=0, max_iter=5, reduce=Reducer())
    except (ArithmeticError, RankFailedError) as err:
        (out / f"error-{rank}.txt").write_text(type(err).__name__)


def test_an_error_on_one_rank_is_raised_on_every_rank(tmp_path):
    spawn(_raise_mid_fit, tmp_path)
    assert (tmp_path / "error-1.txt").read_text() == "ArithmeticError"
    assert (tmp_path / "error-0.txt").read_text() == "RankFailedError"


def test_distributed_true_without_a_process_group_is_a_clear_error(data):
    with pytest.raises(ValueError, match="torchrun"):
        GaussianMixture(2, distributed=True).fit(data)


# ------------------------------------------------------------------ LDA (batch VI)
def _lda_fit(rank, parts, kw, out):
    from elbokit import LDA

    lda = LDA(**kw).fit(parts[rank])
    np.savez(out / f"lda-{rank}.npz", components=lda.components_, alpha=lda.alpha_,
             bounds=lda.lower_bounds_, n_iter=lda.n_iter_)


# a fixed number of local (per-document) iterations: how documents are grouped
# into batches then cannot change the result, only the order of the sums.
# Online: the mini-batches are cut from one global shuffle, so each step sees
# the documents one process's step sees.
LDA_METHODS = {
    "batch": dict(method="batch", max_iter=8, random_state=0, local_max_iter=60),
    "online": dict(method="online", max_iter=3, batch_size=100, random_state=5, local_max_iter=40),
}


@pytest.mark.parametrize("sizes", [[501, 500], [0, 1001]], ids=["uneven", "empty-rank"])
@pytest.mark.parametrize("method", list(LDA_METHODS))
def test_lda_vi_across_processes_equals_one_process(method, sizes, tmp_path):
    from elbokit import LDA

    from ..conftest import make_lda_corpus

    X, _, _ = make_lda_corpus(n_docs=1001, n_words=30, n_topics=3, doc_len=30, seed=3)
    kw = dict(n_topics=3, dtype="float64", tol=0, alpha="auto", local_tol=0.0,
              **LDA_METHODS[method])
    spawn(_lda_fit, shards(X, sizes), kw, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        single = LDA(**kw).fit(X)
    for rank in range(WORLD):
        got = np.load(tmp_path / f"lda-{rank}.npz")
        # (batch VI's fresh re-solves carry the sums' rounding a little further than
        # warm starts alone: 1e-8, not 1e-9)
        np.testing.assert_allclose(got["components"], single.components_, rtol=1e-8)
        np.testing.assert_allclose(got["alpha"], single.alpha_, rtol=1e-8)
        np.testing.assert_allclose(got["bounds"], single.lower_bounds_, rtol=1e-10)
        assert int(got["n_iter"]) == single.n_iter_


def _lda_partial_fit(rank, parts, kw, out):
    from elbokit import LDA

    lda = LDA(**kw)
    for part in parts[rank]:
        lda.partial_fit(part)
    np.savez(out / f"lda-{rank}.npz", components=lda.components_)


def test_lda_partial_fit_across_processes_steps_on_the_union(tmp_path):
    from elbokit import LDA

    from ..conftest import make_lda_corpus

    X, _, _ = make_lda_corpus(n_docs=300, n_words=30, n_topics=3, doc_len=30, seed=4)
    kw = dict(n_topics=3, dtype="float64", total_docs=300, random_state=1, local_tol=0.0,
              local_max_iter=40)
    batches = [X[0:100], X[100:200], X[200:300]]
    # rank 0 holds 60, 0 and 100 documents of the three mini-batches
    parts = [[b[:n] for b, n in zip(batches, (60, 0, 100))],
             [b[n:] for b, n in zip(batches, (60, 0, 100))]]
    spawn(_lda_partial_fit, parts, kw, tmp_path)
    single = LDA(**kw, batch_size=100)
    for b in batches:
        single.partial_fit(b)
    for rank in range(WORLD):
        got = np.load(tmp_path / f"lda-{rank}.npz")
        np.testing.assert_allclose(got["components"], single.components_, rtol=1e-9)


def _lda_gibbs(rank, parts, kw, out):
    from elbokit import LDA

    lda = LDA(**kw).fit(parts[rank])
    np.savez(out / f"gibbs-{rank}.npz", components=lda.components_, ll=lda.lower_bounds_)


@pytest.mark.parametrize("init", ["random", "batch"])
def test_lda_gibbs_across_processes(init, tmp_path):
    """One chain (from random topics or from batch VI's), the one-process chain: the
    sampler's random numbers are keyed by each document's corpus row, so with rank 1
    empty and with the documents split alike, every rank holds the one-process topics
    and log-likelihoods (the batch-VI start sums its statistics in another order: equal
    to rounding)."""
    from elbokit import LDA

    from ..conftest import make_lda_corpus

    X, _, _ = make_lda_corpus(n_docs=400, n_words=40, n_topics=4, doc_len=60, seed=0)
    kw = dict(n_topics=4, method="gibbs", init=init, max_iter=40, random_state=2, eta=0.05)
    single = LDA(**kw).fit(X)
    for split in ([400, 0], [150, 250]):
        spawn(_lda_gibbs, shards(X, split), kw, tmp_path)
        for rank in range(WORLD):
            got = np.load(tmp_path / f"gibbs-{rank}.npz")
            np.testing.assert_allclose(got["components"], single.components_, rtol=1e-12)
            np.testing.assert_allclose(got["ll"], single.lower_bounds_, rtol=1e-9)


# ------------------------------------------------------------------ VAE (DistributedDataParallel)
VAE_CASES = {
    "uneven": ([600, 401], dict(likelihood="continuous_bernoulli")),
    "uneven-mixture-prior-labels": ([700, 301], dict(likelihood="continuous_bernoulli",
                                                     prior="mog", prior_components=3,
                                                     labels="onehot")),
    "empty-rank-binarised-free-bits-covariates": ([0, 1001], dict(
        likelihood="bernoulli", binarize="dynamic", free_bits=0.05, kl_warmup=2,
        labels="continuous")),
    "uneven-iwae-dreg": ([1, 1000], dict(likelihood="bernoulli", binarize="dynamic",
                                         objective="iwae", k=3, dreg=True)),
    "vampprior-cyclical": ([500, 501], dict(likelihood="continuous_bernoulli", prior="vamp",
                                            prior_components=7, kl_cycles=2)),
}


def _vae(**kw):
    from elbokit import VAE

    kw = {k: v for k, v in kw.items() if k != "labels"}
    return VAE(3, hidden_sizes=(32,), epochs=3, batch_size=64, random_state=0, dtype="float64",
               validation_fraction=0.1, **kw)


def _vae_labels(kw, n):
    """Covariates of the digits: their labels, or two real columns made from them."""
    from sklearn.datasets import load_digits

    y = load_digits().target[:n]
    if kw.get("labels") == "continuous":
        return np.stack([y / 9.0, np.cos(y)], 1)
    return y if kw.get("labels") else None


def _vae_arrays(vae):
    history = {f"history_{k}": np.asarray(v, dtype=np.float64) for k, v in vae.history_.items()}
    return dict(bounds=vae.lower_bounds_, **history,
                **{k.replace(".", "_"): v.numpy() for k, v in vae.state_dict_.items()})


def _vae_fit(rank, parts, labels, kw, out):
    y = None if labels is None else labels[rank]
    vae = _vae(checkpoint_dir=out / f"ckpt-{rank}", **kw).fit(parts[rank], y)
    np.savez(out / f"vae-{rank}.npz", **_vae_arrays(vae))


@pytest.mark.parametrize("case", list(VAE_CASES))
def test_vae_across_processes_equals_one_process(case, tmp_path):
    """Every rank makes the whole batch's shuffles and draws and keeps its rows, so the
    weights, bounds and diagnostics are the single-process ones up to rounding."""
    from sklearn.datasets import load_digits

    sizes, kw = VAE_CASES[case]
    X = load_digits().data[:1001] / 16.0
    y = _vae_labels(kw, len(X))
    spawn(_vae_fit, shards(X, sizes), None if y is None else shards(y, sizes), kw, tmp_path)
    single = _vae(**kw).fit(X, y)
    expected = _vae_arrays(single)
    for rank in range(WORLD):
        got = np.load(tmp_path / f"vae-{rank}.npz")
        assert sorted(got.files) == sorted(expected)
        for key in got.files:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-9, atol=1e-11,
                                       err_msg=f"rank {rank}: {key}")
    assert single.lower_bounds_[-1] > single.lower_bounds_[0]
    assert (tmp_path / "ckpt-0" / "checkpoint.safetensors").is_file()  # rank 0 writes checkpoints,
    assert not (tmp_path / "ckpt-1").exists()  # the others do not
