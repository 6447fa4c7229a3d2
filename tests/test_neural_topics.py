"""ProdLDA: planted topics recovered, LDA's inputs and evaluation, persistence."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment

import elbokit
from elbokit import Corpus, ProdLDA
from elbokit.models.prodlda import build_prodlda, laplace_prior

K, WIDTH = 5, 12


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Train these tiny networks on one thread: with two OpenMP threads on busy cores their
    many small operations spin-wait (52 s instead of 2 s for the planted-topics fit)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def planted():
    """Counts from LDA's generative process with K topics on disjoint blocks of 12 words."""
    rng = np.random.default_rng(0)
    V, D = K * WIDTH, 1000
    topics = np.zeros((K, V))
    for k in range(K):
        topics[k, k * WIDTH:(k + 1) * WIDTH] = rng.dirichlet(np.ones(WIDTH))
    topics = 0.95 * topics + 0.05 / V
    theta = rng.dirichlet(np.full(K, 0.3), D)
    X = np.stack([rng.multinomial(n, t @ topics) for n, t in zip(rng.poisson(60, D) + 5, theta)])
    return sp.csr_matrix(X)


@pytest.fixture(scope="module")
def fitted(planted):
    return ProdLDA(K, epochs=20, lr=5e-3, batch_size=64, random_state=0).fit(planted)


def test_recovers_planted_topics(fitted):
    block = np.asarray(fitted.top_words(10)) // WIDTH  # the planted topic of each top word
    overlap = np.stack([(block == k).sum(1) for k in range(K)], 1)
    rows, cols = linear_sum_assignment(-overlap)
    assert sorted(cols) == list(range(K))  # one fitted topic per planted topic
    assert overlap[rows, cols].min() >= 8  # >= 8 of its top 10 words from its planted topic
    assert (block[:, :5] == cols[np.argsort(rows)][:, None]).all()  # the top 5 all are
    assert fitted.lower_bounds_[-1] > fitted.lower_bounds_[0]
    assert fitted.history_["active_units"][-1] == K


def test_the_laplace_prior_of_a_dirichlet():
    loc, scale = laplace_prior(torch.tensor([1.0, 1.0, 1.0, 1.0]))
    torch.testing.assert_close(loc, torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(scale ** 2, torch.full((4,), 0.75, dtype=torch.float64))  # 1 - 1/K
    loc, scale = laplace_prior(torch.tensor([2.0, 0.5]))
    torch.testing.assert_close(loc, torch.tensor([0.5, -0.5], dtype=torch.float64).mul(np.log(4.0)))
    # (1/a)(1 - 2/K) + (1/K^2) sum 1/a: 0 + 2.5/4 for both when K = 2
    torch.testing.assert_close(scale ** 2, torch.full((2,), 0.625, dtype=torch.float64))


def test_batch_norm_makes_inference_independent_of_the_batch(fitted, planted):
    theta = fitted.transform(planted[:40])
    alone = np.concatenate([fitted.transform(planted[i:i + 1]) for i in range(5)])
    np.testing.assert_allclose(alone, theta[:5], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(theta.sum(1), 1.0, rtol=1e-6)


def test_evaluated_like_lda(fitted, planted):
    """Scored by LDA's document completion (the same split) and NPMI: on data from LDA's
    generative process the two perplexities are close."""
    lda = elbokit.LDA(K, random_state=0, max_iter=30).fit(planted)
    ppl = fitted.perplexity(planted[:300])
    assert 1.0 < ppl < planted.shape[1]  # better than uniform over the words
    assert abs(np.log(ppl) - np.log(lda.perplexity(planted[:300]))) < 0.5
    # from the bound, exp(-ELBO per word): an upper bound of the perplexity
    assert fitted.perplexity(planted[:300], estimate="bound") > 1.0
    npmi = fitted.coherence(planted)
    assert npmi.shape == (K,) and (npmi > 0).all()
    score = fitted.score_samples(planted[:10], n_samples=20)
    assert score.shape == (10,) and np.isfinite(score).all()


def test_a_corpus_save_and_load(tmp_path):
    texts = ["the cat sat on the mat with another cat", "dogs and cats and mats",
             "stocks fell as markets and bonds slid", "bonds and stocks rallied in markets"] * 30
    corpus = Corpus(texts, stop_words="english")
    model = ProdLDA(2, epochs=3, batch_size=16, random_state=0).fit(corpus)
    assert len(model.top_words(3)) == 2 and isinstance(model.top_words(3)[0][0], str)
    assert model.transform(["cats on mats"]).shape == (1, 2)
    model.save(tmp_path / "m")
    back = elbokit.load(tmp_path / "m")
    np.testing.assert_allclose(back.transform(corpus.counts[:8]), model.transform(corpus.counts[:8]),
                               rtol=1e-6)
    assert back.perplexity(corpus.counts) == pytest.approx(model.perplexity(corpus.counts), rel=1e-6)
    assert back.top_words(3) == model.top_words(3)


@pytest.mark.parametrize("kw, match", [
    (dict(n_topics=1), "n_topics"), (dict(hidden_sizes=(0,)), "hidden_sizes"),
    (dict(dropout=1.0), "dropout"), (dict(batch_size=1), "batch_size"),
])
def test_bad_settings_are_clear_errors(kw, match, planted):
    with pytest.raises(ValueError, match=match):
        ProdLDA(**{"n_topics": 3, "epochs": 1, **kw}).fit(planted)


def test_module_shapes():
    module = build_prodlda(30, 4)
    counts = torch.poisson(torch.full((6, 30), 2.0))
    rec, kl, (loc, scale) = module.elbo_terms(counts)
    assert rec.shape == kl.shape == (6,) and loc.shape == scale.shape == (6, 4)
    assert bool((kl >= 0).all())
