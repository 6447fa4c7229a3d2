"""The sparse Gibbs sweep: exact conditionals on both paths, learned priors, convergence."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment

from elbokit import LDA, ConvergenceWarning
from elbokit.data.text import CountBatches, as_counts
from elbokit.inference.sampling import run_gibbs, settled
from elbokit.models import lda_gibbs
from elbokit.models.lda import LDADraw, LDAModel

F64 = torch.float64
PATHS = ["numba", "torch"]


def run_path(path, state, beta_t, alpha, u, gen, long_from=lda_gibbs.LONG_FROM):
    if path == "numba":
        return lda_gibbs.sweep_numba(state, beta_t.contiguous(), alpha, u)
    return lda_gibbs.sweep_torch(state, beta_t, alpha, u, gen, long_from=long_from)


def replicated_state(words, topics, M, K):
    """M copies of one document (token words and topics), as a TokenState."""
    n = len(words)
    z = torch.tensor(topics * M, dtype=torch.int32)
    word = torch.tensor(words * M, dtype=torch.int32)
    doc = torch.arange(M).repeat_interleave(n)
    doc_ptr = torch.arange(M + 1, dtype=torch.int64) * n
    ndk = lda_gibbs.doc_topic_counts(doc, z.long(), M, K)
    return lda_gibbs.TokenState(z, word, doc_ptr, doc, ndk)


# K=4 topics over 3 words, and an uneven alpha: the exact-conditional tests' model
SMALL_BETA = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3], [0.05, 0.9, 0.05]],
                          dtype=F64)
SMALL_ALPHA = torch.tensor([0.1, 0.5, 0.05, 1.3], dtype=F64)


def grid_frequencies(z, M, K, exact):
    """Topic frequencies of M grid-point draws, checked against ``exact`` (one grid point
    per boundary of slack)."""
    freq = torch.bincount(z.long(), minlength=K).to(F64) / M
    assert torch.all((freq - exact).abs() <= 1.0 / M + 1e-12), (freq, exact)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("topics", [[0, 0, 0, 0, 0], [3, 1, 1, 2, 3], [0, 1, 2, 3, 1]])
def test_sweep_draws_the_dense_conditional_exactly(path, topics):
    """The first token of a document, with a grid of M uniforms over M copies of that
    document: a sampler that inverts its conditional's distribution function lands on
    topic k for exactly p_k M of the grid points (up to one at each boundary), whatever
    order it visits the topics in (the sparse buckets' order differs from the dense one)."""
    K, M = 4, 4000
    words = [2, 0, 1, 2, 0]
    beta, alpha = SMALL_BETA, SMALL_ALPHA
    state = replicated_state(words, topics, M, K)
    n_minus = torch.bincount(torch.tensor(topics[1:]), minlength=K)  # counts without token 0
    exact = lda_gibbs.draw_reference(n_minus, alpha, beta[:, words[0]])
    u = torch.rand(state.n_tokens, generator=torch.Generator().manual_seed(0), dtype=F64)
    u[state.doc_ptr[:-1]] = (torch.arange(M, dtype=F64) + 0.5) / M  # the first tokens' grid
    run_path(path, state, beta.t().contiguous(), alpha, u, torch.Generator().manual_seed(1))
    grid_frequencies(state.z[state.doc_ptr[:-1]], M, K, exact)
    # the counts stay consistent with the assignments
    torch.testing.assert_close(state.ndk, lda_gibbs.doc_topic_counts(
        state.doc, state.z.long(), M, K))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("topics", [[3, 1, 1, 2, 3], [0, 0, 0, 0, 0], [2, 2, 1, 0, 2]])
def test_sweep_draws_a_repeated_words_conditional_exactly(path, topics):
    """The second copy of a word (the compiled sweep updates that word's document bucket
    from the first copy's draw instead of summing it again): token 0 drawn with one
    uniform in every copy of the document, token 1 (the same word) over a grid of
    uniforms, lands on topic k for p_k M of the grid points given token 0's draw."""
    K, M = 4, 4000
    words = [2, 2, 0, 1, 2]
    beta, alpha = SMALL_BETA, SMALL_ALPHA
    state = replicated_state(words, topics, M, K)
    u = torch.rand(state.n_tokens, generator=torch.Generator().manual_seed(0), dtype=F64)
    first = state.doc_ptr[:-1]
    u[first] = 0.37
    u[first + 1] = (torch.arange(M, dtype=F64) + 0.5) / M
    run_path(path, state, beta.t().contiguous(), alpha, u, torch.Generator().manual_seed(1))
    z0 = state.z[first].long()
    assert bool((z0 == z0[0]).all())  # the same state and uniform everywhere
    n_minus = torch.bincount(torch.tensor([int(z0[0])] + topics[2:]), minlength=K)
    exact = lda_gibbs.draw_reference(n_minus, alpha, beta[:, words[1]])
    grid_frequencies(state.z[first + 1], M, K, exact)
    torch.testing.assert_close(state.ndk, lda_gibbs.doc_topic_counts(
        state.doc, state.z.long(), M, K))


@pytest.mark.parametrize("path", PATHS)
def test_sweep_leaves_the_posterior_of_a_document_invariant(path):
    """Three tokens, two topics, beta fixed: after a few sweeps the assignments of 4000
    copies of the document follow p(z | w, beta), proportional to
    prod_i beta_{z_i w_i} * DirMult(n(z) | alpha). On the torch path tokens from
    position 1 on are drawn in the theta-block, which must leave it invariant too."""
    K, M = 2, 4000
    words = [0, 1, 1]
    beta = torch.tensor([[0.7, 0.3], [0.2, 0.8]], dtype=F64)
    alpha = torch.tensor([0.4, 1.1], dtype=F64)
    state = replicated_state(words, [0, 0, 0], M, K)
    gen = torch.Generator().manual_seed(0)
    for _ in range(12):
        u = torch.rand(state.n_tokens, generator=gen, dtype=F64)
        run_path(path, state, beta.t().contiguous(), alpha, u, gen, long_from=1)
    # tokens are in their given order here: token j of copy m is 3m + j
    z = state.z.view(M, 3).long()
    code = z[:, 0] * 4 + z[:, 1] * 2 + z[:, 2]
    emp = torch.bincount(code, minlength=8).to(F64) / M
    exact = torch.zeros(8, dtype=F64)
    a0 = float(alpha.sum())
    for c in range(8):
        zs = [(c >> 2) & 1, (c >> 1) & 1, c & 1]
        n = [zs.count(0), zs.count(1)]
        dm = float(torch.exp(torch.lgamma(alpha + torch.tensor(n, dtype=F64)).sum()
                             - torch.lgamma(alpha).sum() + torch.lgamma(torch.tensor(a0))
                             - torch.lgamma(torch.tensor(a0 + 3.0))))
        exact[c] = dm * float(np.prod([beta[k, w] for k, w in zip(zs, words)]))
    exact /= exact.sum()
    se = torch.sqrt(exact * (1 - exact) / M)
    assert torch.all((emp - exact).abs() < 4 * se + 1e-3), (emp, exact)


def test_minka_fixed_point_recovers_a_known_asymmetric_alpha():
    rng = np.random.default_rng(0)
    alpha = np.array([0.05, 0.2, 0.6, 1.5])
    lengths = rng.integers(20, 200, 3000)
    ndk = np.stack([rng.multinomial(n, rng.dirichlet(alpha)) for n in lengths])
    est = lda_gibbs.minka_alpha(torch.full((4,), 0.25, dtype=F64),
                                torch.tensor(ndk, dtype=torch.int32), n_iter=500)
    np.testing.assert_allclose(est.numpy(), alpha, rtol=0.1)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("copies", [1, 80])
def test_sweep_statistics_are_minkas_sums(path, copies):
    """The sweep's alpha statistics equal the sums recomputed from its final counts: small
    counts (the table of psi differences) and, with the document repeated, counts past it."""
    K = 4
    words, topics = [2, 0, 1, 2, 0, 1, 1] * copies, [0, 1, 1, 3, 0, 2, 2] * copies
    assert copies == 1 or len(words) > lda_gibbs.PSI_TABLE
    state = replicated_state(words, topics, 50, K)
    beta = torch.tensor(np.random.default_rng(0).dirichlet(np.ones(3), K))
    alpha = torch.tensor([0.1, 0.5, 0.05, 1.3], dtype=F64)
    u = torch.rand(state.n_tokens, generator=torch.Generator().manual_seed(0), dtype=F64)
    _, num, den = run_path(path, state, beta.t().contiguous(), alpha, u,
                           torch.Generator().manual_seed(1))
    ref_num, ref_den = lda_gibbs.alpha_statistics(state.ndk, state.lengths(), alpha)
    torch.testing.assert_close(num, ref_num, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(den, ref_den, rtol=1e-10, atol=1e-10)


def test_minka_fixed_point_recovers_a_known_eta():
    rng = np.random.default_rng(1)
    eta, V = 0.05, 300
    nkw = np.stack([rng.multinomial(3000, rng.dirichlet(np.full(V, eta))) for _ in range(20)])
    est = lda_gibbs.minka_eta(1.0, torch.tensor(nkw, dtype=F64), n_iter=500)
    assert est == pytest.approx(eta, rel=0.1)


def asymmetric_corpus(alpha, n_docs=800, n_words=40, doc_len=60, seed=0):
    rng = np.random.default_rng(seed)
    K = len(alpha)
    beta = np.full((K, n_words), 1e-4)
    block = n_words // K
    for k in range(K):
        beta[k, k * block:(k + 1) * block] += rng.dirichlet(np.ones(block))
    beta /= beta.sum(1, keepdims=True)
    theta = rng.dirichlet(alpha, n_docs)
    X = np.stack([rng.multinomial(doc_len, theta[d] @ beta) for d in range(n_docs)])
    return sp.csr_matrix(X), beta


@pytest.mark.parametrize("method", ["gibbs", "batch"])
def test_learned_alpha_recovers_a_known_asymmetric_alpha(method):
    alpha = np.array([0.1, 0.3, 0.8, 1.6])
    X, beta = asymmetric_corpus(alpha, doc_len=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lda = LDA(4, method=method, alpha="auto", eta=0.05, max_iter=300, random_state=0).fit(X)
    cost = np.abs(lda.topic_word_[:, None, :] - beta[None]).sum(2)
    r, c = linear_sum_assignment(cost)
    est = np.empty(4)
    est[c] = lda.alpha_[r]
    np.testing.assert_allclose(est, alpha, rtol=0.3)


def test_gibbs_converged_only_when_it_stopped_early(lda_data):
    X = lda_data[0][:120]
    short = LDA(4, method="gibbs", max_iter=8, random_state=0).fit(X)
    assert short.n_iter_ == 8 and not short.converged_
    long = LDA(4, method="gibbs", alpha=0.3, max_iter=2000, random_state=0).fit(X)
    assert long.converged_ and long.n_iter_ < 2000
    fixed = LDA(4, method="gibbs", max_iter=30, burn_in=10, random_state=0).fit(X)
    assert fixed.n_iter_ == 30 and not fixed.converged_  # a fixed schedule runs it all
    assert not LDA(4, method="gibbs", max_iter=40, tol=0.0, random_state=0).fit(X).converged_


def test_settled_compares_the_last_two_quarters():
    rng = np.random.default_rng(0)
    flat = list(1.0 + 0.01 * rng.standard_normal(60))
    assert settled(flat, 10, 1e-6)  # within noise
    rising = [0.1 * i for i in range(60)]
    assert not settled(rising, 10, 1e-6)
    slow = [-1.0 / (i + 1) + 0.001 * rng.standard_normal() for i in range(60)]
    assert not settled(slow, 10, 1e-4)  # adjacent windows would look alike
    two = [torch.tensor([f, r]) for f, r in zip(flat, rising)]
    assert not settled(two, 10, 1e-6)  # every monitored quantity must settle
    assert not settled(flat, 10, 0.0) and not settled(flat[:39], 10, 1.0)


def test_gibbs_engine_averages_after_an_adaptive_burn_in(lda_data):
    X = lda_data[0][:100]
    counts = as_counts(X)
    V = X.shape[1]
    draw = LDADraw(torch.full((3, V), 1.0 / V, dtype=F64), torch.full((3,), 0.3, dtype=F64),
                   torch.full((V,), 0.1, dtype=F64))
    gen = torch.Generator().manual_seed(0)
    run = run_gibbs(LDAModel(torch.float32), draw, CountBatches(counts, 30), n_sweeps=500,
                    burn_in=None, generator=gen, tol=1e-3)
    assert run.converged and 10 <= run.burn_in < run.n_iter < 500
    assert run.n_iter == run.burn_in + max(10, run.burn_in)
    assert float(run.mean_stats["topic_word"].sum()) == pytest.approx(float(X.sum()))


def test_gibbs_sweep_is_the_same_chain_for_any_number_of_threads(lda_data):
    X = lda_data[0]
    fits = []
    for threads in (1, 2):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            fits.append(LDA(4, method="gibbs", max_iter=20, burn_in=5, random_state=3).fit(X))
        finally:
            torch.set_num_threads(old)
    np.testing.assert_array_equal(fits[0].components_, fits[1].components_)


@pytest.mark.parametrize("use_numba", [True, False])
def test_both_paths_recover_known_topics_from_long_documents(use_numba):
    """Documents of 200 tokens: past the torch path's collapsed prefix (the rest is
    drawn in the theta-block); both paths recover the known topics."""
    from ..conftest import make_lda_corpus

    X, beta, _ = make_lda_corpus(n_docs=150, doc_len=200, seed=2)
    K, V = beta.shape
    counts = as_counts(X)
    draw = LDADraw(torch.full((K, V), 1.0 / V, dtype=F64), torch.full((K,), 0.3, dtype=F64),
                   torch.full((V,), 0.05, dtype=F64))
    model = LDAModel(torch.float32, use_numba=use_numba)
    run = run_gibbs(model, draw, CountBatches(counts), n_sweeps=80, burn_in=40,
                    generator=torch.Generator().manual_seed(0))
    est = (run.mean_stats["topic_word"] + 0.05).numpy()
    est /= est.sum(1, keepdims=True)
    cost = np.abs(est[:, None, :] - beta[None]).sum(2)
    r, c = linear_sum_assignment(cost)
    assert cost[r, c].max() < 0.15, cost[r, c]


def test_sweep_tallies_the_topic_word_counts_of_its_draws():
    """The compiled sweep's own word-topic tallies (one table per thread, summed) are
    the counts of the assignments it leaves, as a bincount after the sweep gives."""
    K, V = 5, 7
    gen = torch.Generator().manual_seed(0)
    docs = [torch.randint(0, V, (int(n),), generator=gen)
            for n in torch.randint(1, 60, (300,), generator=gen)]
    word = torch.cat(docs).to(torch.int32)
    doc = torch.cat([torch.full((len(d),), i) for i, d in enumerate(docs)])
    z = torch.randint(0, K, (word.shape[0],), generator=gen, dtype=torch.int32)
    doc_ptr = torch.zeros(len(docs) + 1, dtype=torch.int64)
    doc_ptr[1:] = torch.cumsum(torch.tensor([len(d) for d in docs]), 0)
    ndk = lda_gibbs.doc_topic_counts(doc, z.long(), len(docs), K)
    state = lda_gibbs.TokenState(z, word, doc_ptr, doc, ndk)
    beta = torch.distributions.Dirichlet(torch.ones(V, dtype=F64)).sample((K,))
    u = torch.rand(word.shape[0], generator=gen, dtype=F64)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # two threads, two tables
    try:
        *_, nkw = lda_gibbs.sweep_numba(state, beta.t().contiguous(),
                                        torch.full((K,), 0.3, dtype=F64), u, word_counts=True)
    finally:
        torch.set_num_threads(before)
    ref = torch.bincount(state.z.long() * V + state.word.long(), minlength=K * V).view(K, V)
    torch.testing.assert_close(nkw, ref.to(F64))


def test_uniforms_depend_on_the_seed_not_the_thread_count(monkeypatch):
    monkeypatch.setattr(lda_gibbs, "UNIFORM_BLOCK", 1000)
    draws, before = [], torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            draws.append(lda_gibbs.uniforms(4321, torch.Generator().manual_seed(3), "cpu"))
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)
    u = draws[0]
    assert u.dtype == F64 and u.shape == (4321,) and float(u.min()) >= 0 and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.02 and not torch.equal(u[:1000], u[1000:2000])
    other = lda_gibbs.uniforms(4321, torch.Generator().manual_seed(4), "cpu")
    assert not torch.equal(u, other)


def test_learned_alpha_waits_for_the_chain_to_leave_its_random_start():
    """Learned from the first sweep, alpha followed this seed's random initial assignments
    into a state the chain left slowly (-2.87 per token after 40 sweeps); from sweep
    PRIORS_FROM on it settles with the other seeds."""
    from ..conftest import make_lda_corpus

    X, _, _ = make_lda_corpus(n_docs=400, n_words=40, n_topics=4, doc_len=60, seed=0)
    lls = [LDA(4, method="gibbs", max_iter=40, random_state=seed, alpha="auto", eta=0.05).fit(X)
           .lower_bounds_[-10:].mean() for seed in (0, 2)]
    assert abs(lls[0] - lls[1]) < 0.01, lls


@pytest.mark.parametrize("single", [False, True])
def test_topic_draws_match_the_dirichlet_and_not_the_thread_count(single):
    """The CPU Dirichlet draw (gamma rows drawn and normalised in threads, float32 gamma
    variates with ``single``): rows on the simplex, never NaN even for tiny
    concentrations, the same draws on 1 and 2 threads, means and variances of
    Dirichlet(c)."""
    from elbokit.inference.sampling import dirichlet

    N = 40000
    c = torch.tensor([0.05, 0.5, 2.0, 30.0, 1e-4], dtype=F64).repeat(N, 1)
    before, draws = torch.get_num_threads(), []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            draws.append(dirichlet(c, torch.Generator().manual_seed(5), single=single))
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)
    x = draws[0]
    assert bool(torch.isfinite(x).all()) and float(x.min()) > 0
    torch.testing.assert_close(x.sum(1), torch.ones(N, dtype=F64), rtol=1e-12, atol=0)
    a0 = float(c[0].sum())
    mean = c[0] / a0
    var = mean * (1 - mean) / (a0 + 1)
    se = (var / N).sqrt()
    assert bool(((x.mean(0) - mean).abs() < 5 * se + 1e-12).all()), (x.mean(0), mean)
    # a sample variance's relative standard error is about sqrt((2 + kurtosis) / N), with
    # the excess kurtosis of the marginal Beta(c_k, a0 - c_k): 4 of them (the 1e-4
    # component's variance rests on rare large draws that N rows do not pin)
    a, b = c[0], a0 - c[0]
    kurtosis = 6 * ((a - b) ** 2 * (a0 + 1) - a * b * (a0 + 2)) / (a * b * (a0 + 2) * (a0 + 3))
    rse = ((2 + kurtosis[:4]) / N).sqrt()
    assert bool(((x.var(0)[:4] / var[:4] - 1).abs() < 4 * rse).all()), (x.var(0), var)


def test_token_state_wants_the_non_zeros_grouped_by_document():
    from elbokit.data.text import DocBatch

    batch = DocBatch(torch.tensor([1, 0]), torch.tensor([0, 1]), torch.tensor([2.0, 1.0]), 2, 0,
                     torch.arange(2))
    with pytest.raises(ValueError, match="grouped by document"):
        lda_gibbs.token_state(batch, 3, 0)


@pytest.mark.parametrize("shape", [0.05, 0.5, 0.999, 1.0, 2.0, 30.0])
def test_gamma_rows_match_the_gamma_density(shape):
    """The compiled gamma kernel (both of its branches: Ahrens-Dieter below 1,
    Marsaglia-Tsang from 1) against
    scipy's Gamma(a) CDF: a Kolmogorov-Smirnov test, and the first two moments."""
    from scipy import stats

    g = lda_gibbs.gamma_rows(torch.full((8, 5000), shape, dtype=F64), 11).numpy().ravel()
    assert stats.kstest(g, stats.gamma(shape).cdf).pvalue > 1e-3
    assert abs(g.mean() - shape) < 5 * np.sqrt(shape / g.size)


def test_counter_uniforms_are_uniform_and_drive_the_sweep():
    """SplitMix64's outputs on [0, 1): uniform (Kolmogorov-Smirnov), uncorrelated with
    the next token's, another stream for another seed; and a sweep given no uniforms
    draws exactly what it draws given :func:`token_uniforms` of its seed (the NumPy
    counters equal the compiled ones), token j of the document in row r from
    u(mix(seed, r), j)."""
    from scipy import stats

    u = lda_gibbs.counter_uniforms(12345, 200000)
    assert float(u.min()) >= 0 and float(u.max()) < 1
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5 / np.sqrt(u.size)
    assert not np.array_equal(u[:1000], lda_gibbs.counter_uniforms(12346, 1000))
    K = 4
    words, topics = [2, 0, 1, 2, 0, 1, 1], [0, 1, 1, 3, 0, 2, 2]
    a, b = (replicated_state(words, topics, 300, K) for _ in range(2))
    a.rows = b.rows = torch.arange(300) * 7 + 1000  # rows of a larger corpus
    beta_t = SMALL_BETA.t().contiguous()
    given = torch.from_numpy(lda_gibbs.token_uniforms(99, a))
    doc_seed = lda_gibbs.mix(99, 1000 + 7 * 5)
    np.testing.assert_array_equal(given[35:42].numpy(),
                                  lda_gibbs.unit(lda_gibbs.mix(doc_seed, np.arange(7))))
    out_a = lda_gibbs.sweep_numba(a, beta_t, SMALL_ALPHA, given)
    out_b = lda_gibbs.sweep_numba(b, beta_t, SMALL_ALPHA, None, seed=99)
    assert torch.equal(a.z, b.z) and torch.equal(out_a[0], out_b[0])
    with pytest.raises(ValueError, match="seed"):
        lda_gibbs.sweep_numba(b, beta_t, SMALL_ALPHA, None)