"""k-means, used to initialise mixtures: k-means++ seeding and batched Lloyd steps.

k-means++ (Arthur & Vassilvitskii, 2007) picks each new centre with
probability proportional to the squared distance to the nearest centre chosen
so far ("D^2 sampling"); like scikit-learn it tries 2 + log(K) candidates per
step and keeps the one that lowers the inertia most.  Lloyd's algorithm then
alternates nearest-centre assignment and centre = mean of its points, here
streamed over batches with float64 sums.
"""

from __future__ import annotations

import math

import torch


def squared_distances(X: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """||x_n - c_k||^2, shape (n, K), by one GEMM: ||x||^2 - 2 x.c + ||c||^2.

    Good enough to seed and assign; clamped at 0 against rounding.
    """
    d = X.square().sum(1, keepdim=True) - 2 * X @ centres.mT + centres.square().sum(1)
    return d.clamp_min_(0.0)


def kmeans_plusplus(
    X: torch.Tensor, n_clusters: int, generator: torch.Generator, weight=None
) -> torch.Tensor:
    """k-means++ seeding.

    Parameters
    ----------
    X : Tensor, shape (n, D)
    n_clusters : int
    generator : torch.Generator
    weight : Tensor of shape (n,), optional
        Sample weights; a point's chance is weight * D^2.

    Returns
    -------
    Tensor, shape (n_clusters, D)
        Centres, rows of X.
    """
    n = X.shape[0]
    w = torch.ones(n, dtype=X.dtype, device=X.device) if weight is None else weight.to(X.dtype)
    n_trials = 2 + int(math.log(n_clusters))
    first = torch.multinomial(w, 1, generator=generator)
    centres = [X[first[0]]]
    closest = squared_distances(X, X[first]).squeeze(1)
    for _ in range(1, n_clusters):
        p = (w * closest).to(torch.float64)
        if float(p.sum()) <= 0:  # every point already a centre: pick by weight
            p = w.to(torch.float64)
        candidates = torch.multinomial(p, n_trials, replacement=True, generator=generator)
        cand_d = torch.minimum(closest.unsqueeze(0), squared_distances(X[candidates], X))
        inertia = (cand_d * w).sum(1, dtype=torch.float64)
        best = int(inertia.argmin())
        closest = cand_d[best]
        centres.append(X[candidates[best]])
    return torch.stack(centres)


def lloyd(source, centres: torch.Tensor, max_iter: int = 100, tol: float = 1e-4) -> torch.Tensor:
    """Lloyd iterations over a batch source, until centres move less than ``tol``.

    ``tol`` is relative to the mean per-feature variance of the centres, as in
    scikit-learn.  Empty clusters keep their centre.

    Returns
    -------
    Tensor, shape (K, D)
    """
    scale = float(centres.to(torch.float64).var(0).mean()) if centres.shape[0] > 1 else 1.0
    threshold = tol * (scale if scale > 0 else 1.0)
    for _ in range(max_iter):
        sums = torch.zeros(centres.shape, dtype=torch.float64, device=centres.device)
        counts = torch.zeros(centres.shape[0], dtype=torch.float64, device=centres.device)
        for X, w in source:
            labels = squared_distances(X, centres.to(X.dtype)).argmin(1)
            wt = torch.ones(X.shape[0], dtype=torch.float64, device=X.device) if w is None else w.double()
            sums.index_add_(0, labels, X.double() * wt[:, None])
            counts.index_add_(0, labels, wt)
        filled = counts > 0
        new = centres.to(torch.float64).clone()
        new[filled] = sums[filled] / counts[filled, None]
        shift = float((new - centres.to(torch.float64)).square().sum())
        centres = new.to(centres.dtype)
        if shift <= threshold:
            break
    return centres
