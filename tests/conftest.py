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
