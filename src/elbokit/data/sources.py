"""Batch sources.

An engine never holds the data set; it asks a *source* for an iterator of
``(X_batch, weight_batch)`` pairs, once per pass.  The same loop therefore
serves an in-memory array cut into chunks (bounded memory) and, later, data
streamed from disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch


class BatchSource(Protocol):
    """What an engine needs from the data.

    Attributes
    ----------
    n_samples : int
        Number of rows over one pass.
    n_features : int
        Number of columns.
    """

    n_samples: int
    n_features: int

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Yield ``(X, weight)``: X of shape (b, n_features), weight (b,) or None."""
        ...


class InMemorySource:
    """A tensor (and optional weights) served in chunks of ``batch_size`` rows.

    Parameters
    ----------
    X : torch.Tensor, shape (n_samples, n_features)
    weight : torch.Tensor of shape (n_samples,), optional
    batch_size : int, optional
        Rows per chunk; None serves the whole tensor at once.
    """

    def __init__(self, X: torch.Tensor, weight: torch.Tensor | None = None, batch_size=None):
        self.X = X
        self.weight = weight
        self.n_samples, self.n_features = X.shape
        self.batch_size = batch_size or self.n_samples

    def __iter__(self):
        for start in range(0, self.n_samples, self.batch_size):
            stop = start + self.batch_size
            w = None if self.weight is None else self.weight[start:stop]
            yield self.X[start:stop], w
