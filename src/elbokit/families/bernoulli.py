"""Bernoulli components: binary features (0/1), independent given the component.

log p(x | z=k) = sum_j x_j log p_kj + (1 - x_j) log(1 - p_kj), with
``probs`` p of shape (K, D).  Sufficient statistics per (k, j): the observed
weight n_kj = sum_n r_nk o_nj and the weighted count of ones
s_kj = sum_n r_nk o_nj x_nj; the maximiser is p = s / n.  A missing entry
(o_nj = 0) drops out of both: p(x_obs | k) is the product over the observed
columns.
"""

from __future__ import annotations

import torch

from elbokit.families.base import F64, Family, column_counts, observed, safe_div

LOG_FLOOR = -690.0  # log(1e-300): a probability of exactly 0 or 1 stays finite in the GEMMs


def floored_log(p: torch.Tensor) -> torch.Tensor:
    """log p, with log 0 replaced by -690 (so that 0 * log 0 = 0 in matrix products)."""
    return p.to(F64).log().clamp_min(LOG_FLOOR)


class Bernoulli(Family):
    """Independent binary features per component (``probs``: p(x_j = 1 | z = k))."""

    name = "bernoulli"

    def check(self, X, name="X"):
        super().check(X, name)
        if X.numel() and not bool(((X == 0) | (X == 1) | torch.isnan(X)).all()):
            raise ValueError(
                f"{name} must hold 0/1 values for the 'bernoulli' family: binarise it first "
                "(e.g. X > threshold)."
            )
        return X

    def log_prob(self, params, X):
        p = params["probs"]
        log_p, log_q = floored_log(p), floored_log(1 - p)
        X0, mask = observed(X)
        if mask is None:
            return torch.addmm(log_q.sum(1).to(X.dtype), X, (log_p - log_q).mT.to(X.dtype))
        return X0 @ (log_p - log_q).mT.to(X.dtype) + mask @ log_q.mT.to(X.dtype)

    def statistics(self, params, X, resp):
        X0, mask = observed(X)
        resp = resp.to(X.dtype)
        return {"n": column_counts(resp, mask, X.shape[1]), "sum": (resp.mT @ X0).to(F64)}

    def maximize(self, stats, params, fixed=None):
        probs = safe_div(stats["sum"], stats["n"], 0.5).clamp(0.0, 1.0)
        return {"probs": probs if not fixed or "probs" not in fixed else fixed["probs"]}

    def statistics_of(self, params, weights):
        n = weights.to(F64)[:, None].expand_as(params["probs"]).clone()
        return {"n": n, "sum": n * params["probs"]}

    def sample(self, params, z, generator):
        p = params["probs"][z]
        return (torch.rand(p.shape, generator=generator, dtype=F64, device=p.device) < p).to(F64)

    def mean(self, params):
        return params["probs"]

    def n_parameters(self, params):
        return int(params["probs"].numel())

    def param_shapes(self, n_components, n_features):
        return {"probs": (n_components, n_features)}
