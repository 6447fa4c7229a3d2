"""Poisson components: count features, independent given the component.

log p(x | z=k) = sum_j x_j log lambda_kj - lambda_kj - log x_j!, with
``rate`` lambda of shape (K, D).  Statistics per (k, j): the observed weight
n_kj = sum_n r_nk o_nj and s_kj = sum_n r_nk o_nj x_nj; the maximiser is
lambda = s / n.  Missing entries drop out of both.
"""

from __future__ import annotations

import torch

from elbokit.families.base import F64, Family, column_counts, observed, safe_div
from elbokit.families.bernoulli import floored_log


def check_counts(X, name, family):
    obs = X[~torch.isnan(X)]
    if obs.numel() and not bool(((obs >= 0) & (obs == obs.round())).all()):
        raise ValueError(
            f"{name} must hold non-negative integer counts for the {family!r} family; "
            "round or transform the data first."
        )
    return X


class Poisson(Family):
    """Independent Poisson counts per component (``rate``: E[x_j | z = k])."""

    name = "poisson"

    def check(self, X, name="X"):
        super().check(X, name)
        return check_counts(X, name, self.name)

    def log_prob(self, params, X):
        rate = params["rate"]
        X0, mask = observed(X)
        log_fact = torch.lgamma(X0.to(F64) + 1).sum(1).to(X.dtype)
        lin = X0 @ floored_log(rate).mT.to(X.dtype)
        if mask is None:
            return lin - rate.sum(1).to(X.dtype) - log_fact[:, None]
        return lin - mask @ rate.mT.to(X.dtype) - log_fact[:, None]

    def statistics(self, params, X, resp):
        X0, mask = observed(X)
        resp = resp.to(X.dtype)
        return {"n": column_counts(resp, mask, X.shape[1]), "sum": (resp.mT @ X0).to(F64)}

    def maximize(self, stats, params, fixed=None):
        mean_all = stats["sum"].sum(0) / stats["n"].sum(0).clamp_min(1e-300)
        rate = safe_div(stats["sum"], stats["n"], 0.0)
        rate = torch.where(stats["n"] > 0, rate, mean_all.expand_as(rate))
        return {"rate": rate if not fixed or "rate" not in fixed else fixed["rate"]}

    def statistics_of(self, params, weights):
        n = weights.to(F64)[:, None].expand_as(params["rate"]).clone()
        return {"n": n, "sum": n * params["rate"]}

    def sample(self, params, z, generator):
        return torch.poisson(params["rate"][z], generator=generator)

    def mean(self, params):
        return params["rate"]

    def n_parameters(self, params):
        return int(params["rate"].numel())

    def param_shapes(self, n_components, n_features):
        return {"rate": (n_components, n_features)}
