"""Shared test data: small, real (scikit-learn's bundled sets) or generated."""

import numpy as np
import pytest
from sklearn.datasets import load_iris, load_wine
from sklearn.preprocessing import StandardScaler

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="session")
def wine():
    """Wine data (178 x 13), standardised, and its 3 cultivar labels."""
    data = load_wine()
    return StandardScaler().fit_transform(data.data), data.target


@pytest.fixture(scope="session")
def iris():
    data = load_iris()
    return data.data.astype(np.float64), data.target


def make_blobs_data(n=600, d=3, k=3, seed=0, spread=6.0):
    """Well-separated, well-conditioned Gaussian clusters with random covariances."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(k, d))
    parts = []
    for j in range(k):
        A = rng.normal(size=(d, d)) * 0.5 + np.eye(d)
        parts.append(rng.normal(size=(n // k, d)) @ A.T + centres[j])
    X = np.concatenate(parts)
    return X[rng.permutation(len(X))]


@pytest.fixture(scope="session")
def blobs():
    return make_blobs_data()


def make_lda_corpus(n_docs=200, n_words=40, n_topics=4, doc_len=60, alpha=0.3, seed=0):
    """Documents drawn from a known LDA whose topics live on disjoint word blocks.

    Returns
    -------
    X : scipy.sparse.csr_matrix, shape (n_docs, n_words), int64 counts
    beta : array (n_topics, n_words), the true topics (rows sum to 1)
    theta : array (n_docs, n_topics), the true mixtures
    """
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    beta = np.full((n_topics, n_words), 0.02 / n_words)
    block = n_words // n_topics
    for k in range(n_topics):
        beta[k, k * block:(k + 1) * block] += rng.dirichlet(np.ones(block))
    beta /= beta.sum(1, keepdims=True)
    theta = rng.dirichlet(np.full(n_topics, alpha), n_docs)
    X = np.stack([rng.multinomial(doc_len, theta[d] @ beta) for d in range(n_docs)])
    return sp.csr_matrix(X.astype(np.int64)), beta, theta


@pytest.fixture(scope="session")
def lda_data():
    return make_lda_corpus()


@pytest.fixture(scope="session")
def tour(tmp_path_factory):
    """The main job (`elbokit tour`, shortened) run once: its output directory and console text."""
    from click.testing import CliRunner

    from elbokit.cli import cli

    out = tmp_path_factory.mktemp("tour") / "tour"
    result = CliRunner().invoke(cli, ["tour", "--n-init", "2", "--lda-sweeps", "30",
                                      "--vae-epochs", "2", "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, result.output
