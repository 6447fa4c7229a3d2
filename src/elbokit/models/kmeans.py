"""k-means, used to initialise mixtures: k-means++ seeding and Lloyd steps.

k-means++ (Arthur & Vassilvitskii, 2007) picks each new centre with
probability proportional to the squared distance to the nearest centre chosen
so far ("D^2 sampling"); like scikit-learn it tries 2 + log(K) candidates per
step and keeps the one that lowers the inertia most.  Lloyd's algorithm then
alternates nearest-centre assignment and centre = mean of its points.

Everything runs on a sample of the data, centred at its mean and in float64:
squared distances ||x||^2 - 2 x.c + ||c||^2 cancel when the data sit far from
the origin (a true distance of 1e-5 at an offset of 1e8 comes out as
anything), and the sample is small enough that float64 costs little.
"""

from __future__ import annotations

import math
import warnings

import torch
from sklearn.exceptions import ConvergenceWarning


def squared_distances(X: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """||x_n - c_k||^2, shape (n, K), by one GEMM: ||x||^2 - 2 x.c + ||c||^2.

    Accurate when X and the centres are centred (near the origin) and in a
    precision that holds their spread; clamped at 0 against rounding.
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
        Centred data.
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


def lloyd(X: torch.Tensor, centres: torch.Tensor, weight=None, max_iter: int = 100,
          tol: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd iterations until the centres move less than ``tol``.

    ``tol`` is relative to the mean per-feature variance of X, as in
    scikit-learn.  Empty clusters keep their centre.

    Parameters
    ----------
    X : Tensor, shape (n, D)
        Centred data.
    centres : Tensor, shape (K, D)
    weight : Tensor of shape (n,), optional

    Returns
    -------
    centres : Tensor, shape (K, D)
    labels : LongTensor, shape (n,)
        Each row's nearest centre among the returned ones.
    """
    K = centres.shape[0]
    w = torch.ones(X.shape[0], dtype=X.dtype, device=X.device) if weight is None else weight.to(X.dtype)
    Xw = X * w[:, None]
    threshold = tol * float(X.var(0).mean()) if X.shape[0] > 1 else 0.0
    labels = squared_distances(X, centres).argmin(1)
    for _ in range(max_iter):
        counts = torch.zeros(K, dtype=X.dtype, device=X.device).index_add_(0, labels, w)
        sums = torch.zeros_like(centres).index_add_(0, labels, Xw)
        filled = counts > 0
        new = torch.where(filled[:, None], sums / counts.clamp_min(1e-300)[:, None], centres)
        shift = float((new - centres).square().sum())
        centres = new
        labels = squared_distances(X, centres).argmin(1)
        if shift <= threshold:
            break
    return centres, labels


def inertia(X: torch.Tensor, centres: torch.Tensor, weight=None) -> float:
    """Weighted sum of squared distances to the nearest centre (k-means' objective)."""
    d = squared_distances(X, centres).amin(1)
    return float(d.sum() if weight is None else d @ weight)


def kmeans(X: torch.Tensor, n_clusters: int, generator: torch.Generator, weight=None, *,
           lloyd_steps: int = 100, n_init: int = 1) -> torch.Tensor:
    """k-means centres of X: k-means++ seeding, then up to ``lloyd_steps`` Lloyd steps
    (none with ``lloyd_steps=0``), on X centred at its mean, in float64; the best
    (lowest inertia) of ``n_init`` runs.

    Warns, as scikit-learn's KMeans does, when fewer distinct clusters than
    ``n_clusters`` are found (duplicate points).

    Returns
    -------
    Tensor of shape (n_clusters, D), float64, in X's coordinates
    """
    X64 = X.to(torch.float64)
    w = None if weight is None else weight.to(torch.float64)
    mean = X64.mean(0) if w is None else (w @ X64) / w.sum()
    Xc = X64 - mean
    best = None
    for _ in range(n_init):
        centres = kmeans_plusplus(Xc, n_clusters, generator, w)
        if lloyd_steps > 0:
            centres, labels = lloyd(Xc, centres, w, max_iter=lloyd_steps)
        else:
            labels = squared_distances(Xc, centres).argmin(1)
        score = inertia(Xc, centres, w)
        if best is None or score < best[0]:
            best = (score, centres, labels)
    _, centres, labels = best
    distinct = int(torch.unique(labels if w is None else labels[w > 0]).numel())
    if distinct < n_clusters:
        warnings.warn(
            f"Number of distinct clusters ({distinct}) found smaller than n_clusters "
            f"({n_clusters}). Possibly due to duplicate points in X.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return centres + mean


def assignment_dtype(centres: torch.Tensor, X: torch.Tensor) -> torch.dtype:
    """The dtype in which :func:`nearest` can assign rows like X to ``centres``.

    float32 when its rounding of squared distances about the centres' mean,
    eps32 times the largest |x - mean|^2 among the rows X, stays below a
    thousandth of the smallest squared distance between two centres (then
    only rows nearly on a boundary can change sides); float64 otherwise
    (duplicate centres, or clusters tiny against the data's spread).
    """
    c = centres.to(torch.float64)
    if c.shape[0] < 2:
        return torch.float32
    mean = c.mean(0)
    reach = float((X.to(torch.float64) - mean).square().sum(1).max())
    apart = squared_distances(c - mean, c - mean)
    apart.fill_diagonal_(math.inf)
    eps = float(torch.finfo(torch.float32).eps)
    return torch.float32 if eps * reach < 1e-3 * float(apart.min()) else torch.float64


def nearest(X: torch.Tensor, centres: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Index of each row's nearest centre, shape (n,).

    Distances are computed about the centres' mean, the data centred in (at
    least) their own precision before the cast to ``dtype`` (see
    :func:`assignment_dtype`), so that no offset cancels them.
    """
    c = centres.to(torch.float64)
    mean = c.mean(0)
    if dtype == torch.float64 or X.dtype == torch.float64:
        Xc = (X.to(torch.float64) - mean).to(dtype)
    else:
        Xc = X - mean.to(X.dtype)
    return squared_distances(Xc, (c - mean).to(dtype)).argmin(1)
