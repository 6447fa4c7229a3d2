"""The top-q eigensolver behind PPCA and the ECME steps of factor analysis."""

import numpy as np
import pytest
import torch

from elbokit._linalg import EXACT_MAX_FEATURES, top_eigh

D = EXACT_MAX_FEATURES + 44  # above the dense threshold: the subspace iteration runs


def psd(seed=0, decay=0.9):
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64)).Q
    vals = 100 * decay ** torch.arange(D, dtype=torch.float64) + 0.5
    return (U * vals) @ U.mT


def test_top_pairs_equal_the_dense_eigh():
    A = psd()
    vals, vecs, basis, products = top_eigh(A, 5)
    exact, exact_vecs = torch.linalg.eigh(A)
    np.testing.assert_allclose(vals, exact.flip(0)[:5], rtol=1e-11)
    np.testing.assert_allclose((vecs.mT @ exact_vecs.flip(1)[:, :5]).abs().diagonal(), 1, atol=1e-6)
    np.testing.assert_allclose(products, A @ vecs, rtol=1e-9, atol=1e-9)
    assert basis.shape == (D, 15)


def test_scaled_batched_and_warm_started():
    A = torch.stack([psd(1), psd(2, decay=0.7)])
    s = torch.linspace(0.5, 2.0, D, dtype=torch.float64).expand(2, D)
    scaled = A * s[..., :, None] * s[..., None, :]
    vals, _, basis, _ = top_eigh(A, 3, scale=s)
    np.testing.assert_allclose(vals, torch.linalg.eigvalsh(scaled).flip(-1)[:, :3], rtol=1e-10)
    again, _, _, _ = top_eigh(A, 3, scale=s, start=basis, max_sweeps=2)
    np.testing.assert_allclose(again, vals, rtol=1e-10)  # the warm start is converged already


@pytest.mark.parametrize("sweeps", [1, 2])
def test_included_directions_bound_the_result_from_below(sweeps):
    """With ``include``, every top-q Ritz value is at least the Ritz value of span(include):
    what makes an unconverged ECME step climb."""
    A = psd(3, decay=0.97)
    g = torch.Generator().manual_seed(4)
    good = torch.linalg.eigh(A)[1].flip(1)[:, :4] + 0.01 * torch.randn(D, 4, generator=g,
                                                                      dtype=torch.float64)
    Q = torch.linalg.qr(good).Q
    floor = torch.linalg.eigvalsh(Q.mT @ A @ Q).flip(0)
    vals, _, _, _ = top_eigh(A, 4, include=good, max_sweeps=sweeps)  # cold start, 1-2 sweeps
    assert bool((vals >= floor - 1e-10).all())
