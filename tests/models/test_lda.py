"""LDA math: local updates, bound, global updates, sampler, evaluation helpers."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment, minimize
from scipy.special import gammaln, psi
from sklearn.decomposition import LatentDirichletAllocation
from sklearn.decomposition._lda import _dirichlet_expectation_2d, _update_doc_distribution

from elbokit.data.text import CountBatches, as_counts
from elbokit.inference.vi import run_batch_vi
from elbokit.models.lda import (
    LDADraw,
    LDAModel,
    LDAParams,
    dirichlet_expectation,
    local_update,
    split_counts,
    topic_coherence,
    update_alpha,
)

F64 = torch.float64


def one_batch(X, dtype=F64):
    return next(iter(CountBatches(as_counts(X, dtype=dtype))))


def params_for(K, V, alpha, eta, seed=0):
    lam = np.random.default_rng(seed).gamma(100.0, 0.01, (K, V))
    return lam, LDAParams(torch.tensor(lam), torch.full((K,), alpha, dtype=F64),
                          torch.full((V,), eta, dtype=F64))


def test_dirichlet_expectation_matches_digamma_formula():
    c = np.random.default_rng(0).gamma(2.0, 1.0, (3, 5))
    ref = psi(c) - psi(c.sum(1, keepdims=True))
    np.testing.assert_allclose(dirichlet_expectation(torch.tensor(c)).numpy(), ref, rtol=1e-12)


def test_one_topic_local_update_is_exact(lda_data):
    """K=1: theta = 1, so q(theta) = Dirichlet(alpha + N_d) and the bound is sum n E[log beta]."""
    X = lda_data[0][:20]
    V = X.shape[1]
    _, params = params_for(1, V, alpha=0.7, eta=0.1)
    model = LDAModel(F64)
    batch = one_batch(X)
    res = model.local_step(params, batch, None)
    lengths = np.asarray(X.sum(1)).ravel()
    np.testing.assert_allclose(res.local.gamma.numpy().ravel(), 0.7 + lengths, rtol=1e-12)
    elog_beta = dirichlet_expectation(params.concentration)[0].numpy()
    exact = (X.toarray() * elog_beta).sum()
    assert float(res.bound) == pytest.approx(exact, rel=1e-10)


def test_local_update_matches_scikit_learn_iteration_by_iteration(lda_data):
    X = lda_data[0][:30].astype(np.float64)
    K, V = 3, X.shape[1]
    lam, params = params_for(K, V, alpha=0.2, eta=0.1)
    exp_beta = np.exp(_dirichlet_expectation_2d(lam))
    # scikit-learn starts gamma at 1 when random_state is None; tol 0 runs every iteration.
    # (Agreement to ~1e-8: scikit-learn's Cython digamma is an approximation.)
    ref_gamma, ref_stats = _update_doc_distribution(X, exp_beta, 0.2, 15, 0.0, True, None)
    batch = one_batch(X)
    B = params.exp_elog_beta_t(F64)[batch.word]
    gamma, etheta, norm, n_iter = local_update(
        batch.doc, batch.count, batch.n_docs, B, params.alpha,
        torch.ones(30, K, dtype=F64), max_iter=15, tol=0.0)
    assert n_iter == 15
    np.testing.assert_allclose(gamma.numpy(), ref_gamma, rtol=1e-7)
    sw = np.zeros((V, K))
    np.add.at(sw, batch.word.numpy(),
              (etheta[batch.doc] * (batch.count / norm)[:, None]).numpy())
    np.testing.assert_allclose(sw.T, ref_stats, rtol=1e-7)


def test_one_batch_vi_iteration_agrees_with_scikit_learn(lda_data):
    """Same priors and initial lambda: lambda after one variational EM step agrees.

    (To ~1e-8: scikit-learn's Cython digamma is an approximation.)"""
    X = lda_data[0].astype(np.float64)
    K, V = 4, X.shape[1]
    lam, params = params_for(K, V, alpha=0.25, eta=0.1, seed=1)
    skl = LatentDirichletAllocation(
        n_components=K, doc_topic_prior=0.25, topic_word_prior=0.1, learning_method="batch",
        max_doc_update_iter=60, mean_change_tol=0.0, random_state=0)
    skl._init_latent_vars(V, dtype=np.float64)
    skl.random_state_ = None  # scikit-learn then starts every gamma at 1, as we do below
    skl.components_ = lam.copy()
    skl.exp_dirichlet_component_ = np.exp(_dirichlet_expectation_2d(lam))
    skl._em_step(X, total_samples=X.shape[0], batch_update=True)
    model = LDAModel(F64, local_max_iter=60, local_tol=0.0)
    batch = one_batch(X)
    sol = model.infer(params, batch, torch.ones(X.shape[0], K, dtype=F64))
    res = model.result(params, batch, sol, sol.gamma)
    new = model.maximize(res.stats, params)
    np.testing.assert_allclose(new.concentration.numpy(), skl.components_, rtol=1e-7)
    # and the bounds agree: ours (local + global terms) vs scikit-learn's _approx_bound
    gamma = res.local.numpy()
    skl.components_ = lam.copy()
    ref = skl._approx_bound(X, gamma, sub_sampling=False)
    ours = float(res.bound + model.global_bound(params))
    assert ours == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("dtype, alpha_auto", [(F64, False), (torch.float32, False),
                                               (F64, True)])
def test_batch_vi_bound_never_decreases(lda_data, dtype, alpha_auto):
    X = lda_data[0][:120]
    K, V = 4, X.shape[1]
    _, params = params_for(K, V, alpha=0.25, eta=0.1, seed=2)
    model = LDAModel(dtype, local_max_iter=200, local_tol=1e-4, learn_alpha=alpha_auto)
    source = CountBatches(as_counts(X, dtype=dtype), 50)  # several chunks
    run = run_batch_vi(model, params, source, tol=0.0, max_iter=15, warn=False)
    b = np.array(run.lower_bounds)
    slack = 1e-10 if dtype == F64 else 2e-6
    assert np.all(np.diff(b) >= -slack), np.diff(b).min()
    assert b[-1] - b[0] > 0.1  # and it really climbs
    if alpha_auto:
        assert not torch.allclose(run.params.alpha, params.alpha)


@pytest.mark.parametrize("dtype, tol, rtol", [(F64, 0.0, 1e-10), (F64, 1e-3, 1e-10),
                                             (torch.float32, 0.0, 1e-4)])
def test_compiled_local_update_equals_the_vectorised_one(lda_data, dtype, tol, rtol):
    """The numba loop (CPU default) and the torch one (other devices) are one update."""
    X = lda_data[0][:40]
    _, params = params_for(4, X.shape[1], alpha=0.25, eta=0.1, seed=3)
    batch = one_batch(X, dtype)
    out = {}
    for compiled in (True, False):
        model = LDAModel(dtype, local_max_iter=25, local_tol=tol, use_numba=compiled)
        res = model.local_step(params, batch, None)
        out[compiled] = res.local.gamma, res.stats["topic_word"], res.bound
    for a, b in zip(out[True], out[False]):
        torch.testing.assert_close(a.to(F64), b.to(F64), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("long_nnz", [0, 18, 10**9])
def test_compiled_kernel_long_document_layout_is_the_same_update(lda_data, long_nnz):
    """Documents with at least ``long_nnz`` distinct words work on a transposed copy of
    their rows: the same update as the row-by-row loop and the torch one (float64)."""
    import scipy.sparse as sps
    from elbokit.models.lda import initial_gamma, local_update, local_update_numba

    X = sps.vstack([lda_data[0][:30], sps.csr_matrix(np.tile(lda_data[0][:30].sum(0), (2, 1)))])
    nnz = np.diff(sps.csr_matrix(X).indptr)
    assert nnz.min() < 18 <= nnz.max() and nnz.max() > 30  # both layouts at long_nnz=18
    _, params = params_for(4, X.shape[1], alpha=0.25, eta=0.1, seed=3)
    batch = one_batch(X, F64)
    lengths = torch.zeros(batch.n_docs, dtype=F64).index_add_(0, batch.doc, batch.count)
    start = initial_gamma(batch.n_docs, lengths, params.alpha, F64)
    for max_iter, tol in ((0, 0.0), (7, 0.0), (50, 1e-3)):
        got = local_update_numba(batch.doc, batch.word, batch.count, batch.n_docs,
                                 params.exp_elog_beta_t(F64), params.alpha, start,
                                 max_iter=max_iter, tol=tol, long_nnz=long_nnz)
        B = params.exp_elog_beta_t(F64)[batch.word]
        ref = local_update(batch.doc, batch.count, batch.n_docs, B, params.alpha,
                           start.clone(), max_iter=max_iter, tol=tol)
        for a, b in zip(got[:3], ref[:3]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        assert int(got[3].max()) == (ref[3] if max_iter else 0)


@pytest.mark.parametrize("long_nnz", [0, 10**9])
def test_compiled_update_freezes_unused_topics_and_brings_them_back(long_nnz):
    """A document's unused topics (expected count below FROZEN_BELOW * tol) are frozen.
    Started with topic 1 frozen although the document needs it (its words belong to no
    other topic), the check over every topic brings it back; topic 2 stays unused. Both
    layouts end at the dense update's fixed point, within the stopping rule."""
    from elbokit.models.lda import FROZEN_BELOW, initial_gamma, local_update, local_update_numba

    beta = np.full((3, 6), 1e-3)
    for k in range(3):
        beta[k, 2 * k:2 * k + 2] = 1.0
    alpha = torch.full((3,), 0.1, dtype=F64)
    params = LDAParams(torch.tensor(beta * 100), alpha, torch.full((6,), 0.01, dtype=F64))
    X = sp.csr_matrix(np.array([[30, 10, 5, 15, 0, 0], [0, 0, 0, 0, 3, 4]]))
    batch = one_batch(X, F64)
    tol = 1e-3
    low = 0.1 + FROZEN_BELOW * tol / 2  # frozen at the start
    starts = [torch.tensor([[60.1, low, low], [low, low, 7.1]], dtype=F64),
              initial_gamma(2, torch.tensor([60.0, 7.0], dtype=F64), alpha, F64)]
    B = params.exp_elog_beta_t(F64)
    for start in starts:
        got = local_update_numba(batch.doc, batch.word, batch.count, 2, B, alpha, start,
                                 max_iter=1000, tol=tol, long_nnz=long_nnz)
        ref = local_update(batch.doc, batch.count, 2, B[batch.word], alpha, start.clone(),
                           max_iter=1000, tol=1e-12)
        torch.testing.assert_close(got[0], ref[0], rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(got[2], ref[2], rtol=1e-3, atol=0)
        assert got[0][0, 1] > 19 and got[0][0, 2] < 0.1 + 1e-4  # back; still unused


@pytest.mark.parametrize("compiled", [True, False])
def test_guarded_solve_never_ends_below_its_start(lda_data, compiled):
    """``solve(guard=True)`` (batch VI's warm starts): every document's returned bound is
    its returned state's (:meth:`LDAModel.doc_bounds`) and at least its start's, float32,
    from random starts and from the last solve's state under new topics."""
    X = lda_data[0][:60]
    _, params = params_for(4, X.shape[1], alpha=0.05, eta=0.1, seed=3)
    _, moved = params_for(4, X.shape[1], alpha=0.05, eta=0.1, seed=4)
    batch = one_batch(X, torch.float32)
    model = LDAModel(torch.float32, use_numba=compiled)
    start = torch.distributions.Gamma(2.0, 0.2).sample((batch.n_docs, 4)).to(torch.float32)
    for p in (params, moved):
        sol = model.infer(p, batch, start, guard=True)
        first = model.infer(p, batch, start, max_iter=0)
        assert bool((sol.bound >= first.bound).all())
        torch.testing.assert_close(sol.bound, model.doc_bounds(p, batch, sol.gamma, sol.norm),
                                   rtol=1e-9, atol=1e-9)
        start = sol.gamma


@pytest.mark.parametrize("compiled", [True, False])
def test_a_fresh_re_solve_frees_a_document_held_by_its_warm_start(compiled):
    """Two topics, a document using both: started on one topic (gamma ~ (20, 0)),
    its warm-started updates stay there; the fresh re-solve due for it finds the
    mixture (a higher bound) and is kept, and the document stays due; a document
    not due keeps its warm start and counts down."""
    from elbokit.models.lda import DocState

    X = sp.csr_matrix(np.array([[10, 10], [10, 10]]))
    beta = np.array([[9.0, 1.0], [1.0, 9.0]]) * 1000
    params = LDAParams(torch.tensor(beta), torch.full((2,), 0.01, dtype=F64),
                       torch.full((2,), 0.1, dtype=F64))
    model = LDAModel(F64, use_numba=compiled)
    held = torch.tensor([[20.0, 0.01], [20.0, 0.01]], dtype=F64)
    state = DocState(held, interval=torch.tensor([1, 4]), wait=torch.tensor([0, 3]))
    batch = one_batch(X)
    sol, new = model.batch_local(params, batch, state)
    gamma = sol.gamma
    assert gamma[1, 1] < 0.1  # warm start only: still on topic 0
    torch.testing.assert_close(gamma[0], torch.tensor([10.01, 10.01], dtype=F64), rtol=1e-3,
                               atol=0)
    bounds = model.doc_bounds(params, batch, gamma, sol.norm)
    torch.testing.assert_close(bounds, sol.bound, rtol=1e-12, atol=0)
    assert float(bounds[0]) > float(bounds[1]) + 5  # the mixture explains the words better
    assert new.interval.tolist() == [1, 4] and new.wait.tolist() == [0, 2]
    # a re-solve that does not beat the warm start doubles the document's interval
    _, again = model.batch_local(params, batch, DocState(gamma, new.interval, new.wait))
    assert again.interval.tolist() == [2, 4] and again.wait.tolist() == [1, 1]


def test_alpha_update_solves_the_empirical_bayes_problem():
    rng = np.random.default_rng(0)
    theta = rng.dirichlet([0.3, 1.0, 2.0], 500)
    m = np.log(theta).mean(0)

    def neg(a):
        return -(gammaln(a.sum()) - gammaln(a).sum() + ((a - 1) * m).sum())

    ref = minimize(neg, np.ones(3), bounds=[(1e-6, None)] * 3, method="L-BFGS-B",
                   options={"ftol": 1e-15, "gtol": 1e-12}).x
    ours = update_alpha(torch.ones(3, dtype=F64), torch.tensor(m)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4)


def test_empty_documents_keep_the_prior_and_no_nan():
    X = sp.csr_matrix(np.array([[0, 0, 0], [2, 0, 1], [0, 0, 0]]))
    _, params = params_for(2, 3, alpha=0.5, eta=0.1)
    model = LDAModel(torch.float32)
    res = model.local_step(params, one_batch(X, torch.float32), None)
    np.testing.assert_allclose(res.local.gamma[[0, 2]].numpy(), 0.5)
    assert torch.isfinite(res.bound) and torch.isfinite(res.stats["topic_word"]).all()
    bounds = model.doc_bounds(params, one_batch(X, torch.float32), res.local.gamma,
                              torch.ones(2))
    assert float(bounds[0]) == 0.0 and float(bounds[2]) == 0.0


def test_collapsed_step_samples_its_exact_conditional():
    """4000 identical two-token documents, fixed beta: (z1, z2) follows
    p(z1, z2 | w, beta) proportional to alpha_z1 (alpha_z2 + [z1 = z2]) beta_z1,w1 beta_z2,w2."""
    n, K = 4000, 2
    X = sp.csr_matrix(np.tile([[1, 1]], (n, 1)))
    beta = torch.tensor([[0.7, 0.3], [0.2, 0.8]], dtype=F64)
    alpha = torch.tensor([0.5, 1.5], dtype=F64)
    draw = LDADraw(beta, alpha, torch.full((2,), 0.1, dtype=F64))
    model = LDAModel(F64)
    gen = torch.Generator().manual_seed(0)
    batch = one_batch(X)
    local = None
    for sweep in range(15):  # the chain on 4 states mixes in a few sweeps
        draw = LDADraw(beta, alpha, draw.eta, sweep)  # the sweep's stream of random numbers
        stats, ll, units, local = model.sample_local(draw, batch, local, gen)
    # tokens of doc d are 2d and 2d+1, in a random order: sort each pair by word
    z, w = local.z.view(n, 2).long(), local.word.view(n, 2).long()
    first = torch.where(w[:, 0] == 0, z[:, 0], z[:, 1])
    second = torch.where(w[:, 0] == 0, z[:, 1], z[:, 0])
    emp = np.zeros((K, K))
    np.add.at(emp, (first.numpy(), second.numpy()), 1.0 / n)
    a, b = alpha.numpy(), beta.numpy()
    exact = np.array([[a[i] * (a[j] + (i == j)) * b[i, 0] * b[j, 1] for j in range(K)]
                      for i in range(K)])
    exact /= exact.sum()
    se = np.sqrt(exact * (1 - exact) / n)
    assert np.all(np.abs(emp - exact) < 4 * se), (emp, exact)
    assert float(stats["topic_word"].sum()) == 2 * n == float(units)


def test_split_counts_partitions_every_word():
    X = sp.csr_matrix(np.random.default_rng(0).poisson(3.0, (20, 10)))
    c = as_counts(X)
    first, second = split_counts(c, 0.5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(first.data + second.data, c.data)
    assert (first.data >= 0).all() and (second.data >= 0).all()
    assert 0.4 < first.n_words / c.n_words < 0.6


def test_topic_coherence_by_hand():
    # words 0,1 always together; word 2 alone; word 3 with 0 half the time
    X = sp.csr_matrix(np.array([[1, 1, 0, 1], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]]))
    top = np.array([[0, 1], [0, 2], [0, 3]])
    npmi = topic_coherence(top, X, "npmi")
    eps = 1e-12  # gensim's smoothing
    pmi_02 = np.log(eps / ((2 / 4) * (2 / 4))) / -np.log(eps)  # never together: about -1
    pmi_03 = np.log((1 / 4 + eps) / ((2 / 4) * (1 / 4))) / -np.log(1 / 4 + eps)
    np.testing.assert_allclose(npmi, [1.0, pmi_02, pmi_03], rtol=1e-9)
    umass = topic_coherence(top, X, "umass")
    np.testing.assert_allclose(umass, [np.log(3 / 2), np.log(1 / 2), np.log(2 / 2)])


def test_every_fit_engine_recovers_known_topics(lda_data):
    """Batch VI from the model's own updates, matched by the Hungarian algorithm."""
    X, beta, _ = lda_data
    K, V = beta.shape
    _, params = params_for(K, V, alpha=0.25, eta=0.05, seed=3)
    run = run_batch_vi(LDAModel(F64), params, CountBatches(as_counts(X, dtype=F64)),
                       tol=1e-6, max_iter=100, warn=False)
    lam = run.params.concentration.numpy()
    est = lam / lam.sum(1, keepdims=True)
    cost = np.abs(est[:, None, :] - beta[None]).sum(2)
    r, c = linear_sum_assignment(cost)
    assert cost[r, c].max() < 0.15


def test_gamma_table_warm_starts_seen_documents_only(lda_data):
    from elbokit.models.lda import GammaTable

    X = lda_data[0][:40]
    _, params = params_for(3, X.shape[1], alpha=0.3, eta=0.1)
    model = LDAModel(F64, local_tol=1e-8, local_max_iter=500)
    table = GammaTable(40, 3, F64, torch.device("cpu"))
    counts = as_counts(X, dtype=F64)
    first = next(iter(CountBatches(counts.take(torch.arange(20)))))
    first.rows = torch.arange(20)
    res = model.local_step(params, first, table)
    assert res.local is table and table.seen[:20].all() and not table.seen[20:].any()
    torch.testing.assert_close(table.gamma[:20], model.local_step(params, first, None).local.gamma)
    fresh = torch.full((20, 3), -1.0, dtype=F64)
    torch.testing.assert_close(table.start(torch.arange(10, 30), fresh)[:10], table.gamma[10:20])
    assert (table.start(torch.arange(10, 30), fresh)[10:] == -1).all()


TEXTS = [
    "human machine interface for lab abc computer applications",
    "a survey of user opinion of computer system response time",
    "the eps user interface management system",
    "system and human engineering testing of eps system",
    "relation of user perceived response time to error measurement",
    "the generation of random binary unordered trees",
    "the intersection graph of paths in trees",
    "graph minors iv widths of trees and well quasi ordering",
    "graph minors a survey of computer science trees and eps",
    "survey of graph theory response trees and human interface",
]
TOPICS = [["human", "computer", "interface", "system", "eps"],
          ["graph", "trees", "minors", "survey", "response"],
          ["user", "time", "response", "system", "survey"]]


@pytest.mark.parametrize("measure, window", [("c_v", 110), ("c_v", 4), ("npmi", 10),
                                             ("npmi", 3)])
def test_coherence_equals_gensim(measure, window):
    """c_v and NPMI against gensim's CoherenceModel on the same topics and texts.

    (No word repeats within a window here: gensim's sliding window forgets a word when
    one of its occurrences leaves the window although another is still inside; elbokit
    counts the windows that hold the word.)"""
    gensim = pytest.importorskip("gensim")
    from gensim.corpora import Dictionary
    from gensim.models.coherencemodel import CoherenceModel

    texts = [t.split() for t in TEXTS]
    dictionary = Dictionary(texts)
    ref = CoherenceModel(topics=TOPICS, texts=texts, dictionary=dictionary,
                         coherence="c_npmi" if measure == "npmi" else "c_v",
                         window_size=window, processes=1).get_coherence_per_topic()
    vocab = sorted(dictionary.token2id)
    where = {w: i for i, w in enumerate(vocab)}
    seqs = [np.array([where[w] for w in t]) for t in texts]
    top = np.array([[where[w] for w in t] for t in TOPICS])
    ours = topic_coherence(top, measure=measure, sequences=seqs, window_size=window)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)
    assert gensim.__version__


def test_coherence_on_counts_equals_whole_document_windows():
    """Counts (no word order) make each document one window: the same as gensim's with a
    window longer than every document."""
    texts = [t.split() for t in TEXTS]
    vocab = sorted({w for t in texts for w in t})
    where = {w: i for i, w in enumerate(vocab)}
    seqs = [np.array([where[w] for w in t]) for t in texts]
    X = sp.csr_matrix((np.ones(sum(map(len, seqs))), np.concatenate(seqs),
                       np.cumsum([0] + [len(q) for q in seqs])), shape=(len(seqs), len(vocab)))
    top = np.array([[where[w] for w in t] for t in TOPICS])
    for measure in ("npmi", "c_v"):
        np.testing.assert_allclose(topic_coherence(top, X, measure),
                                   topic_coherence(top, measure=measure, sequences=seqs,
                                                   window_size=1000), rtol=1e-12)
