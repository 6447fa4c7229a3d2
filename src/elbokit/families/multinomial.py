"""Multinomial components: each row a vector of counts over D categories.

A mixture of these is the mixture of unigrams (Nigam et al., 2000): each
document drawn from one topic.  log p(x | z=k) = log N! - sum_j log x_j!
+ sum_j x_j log p_kj, with ``probs`` p (K, D), rows summing to 1; the
statistics are the weighted counts per (k, j), the maximiser normalises them.

Missing cells (NaN): the likelihood is that of the observed cells given
their total N_o, a multinomial over the observed categories with
probabilities p_kj / P_k,obs.  The E-step fills each missing cell with its
expected count under the component, N_o p_kj / P_k,obs (the EM of a
multinomial whose unrecorded draws are latent), so the M-step stays closed.
"""

from __future__ import annotations

import torch

from elbokit.families.base import F64, Family, observed
from elbokit.families.bernoulli import floored_log
from elbokit.families.poisson import check_counts


class Multinomial(Family):
    """Count vectors, one multinomial per component (``probs``, rows sum to 1)."""

    name = "multinomial"

    def check(self, X, name="X"):
        super().check(X, name)
        return check_counts(X, name, self.name)

    def log_prob(self, params, X):
        p = params["probs"]
        X0, mask = observed(X)
        Xd = X0.to(F64)
        total = Xd.sum(1)
        const = (torch.lgamma(total + 1) - torch.lgamma(Xd + 1).sum(1)).to(X.dtype)
        lin = X0 @ floored_log(p).mT.to(X.dtype)
        if mask is None:
            return lin + const[:, None]
        p_obs = (mask.to(F64) @ p.mT).clamp_min(1e-300)  # (n, K)
        return lin + const[:, None] - (total[:, None] * p_obs.log()).to(X.dtype)

    def statistics(self, params, X, resp):
        X0, mask = observed(X)
        resp = resp.to(X.dtype)
        counts = (resp.mT @ X0).to(F64)
        if mask is not None and params is not None:
            p = params["probs"]
            p_obs = (mask.to(F64) @ p.mT).clamp_min(1e-300)
            scale = resp.to(F64) * X0.to(F64).sum(1, keepdim=True) / p_obs  # r N_o / P_obs
            counts = counts + p * (scale.mT @ (1 - mask.to(F64)))
        return {"counts": counts}

    def maximize(self, stats, params, fixed=None):
        counts = stats["counts"]
        total = counts.sum(1, keepdim=True)
        D = counts.shape[1]
        probs = torch.where(total > 0, counts / total.clamp_min(1e-300),
                            torch.full_like(counts, 1.0 / D))
        return {"probs": probs if not fixed or "probs" not in fixed else fixed["probs"]}

    def statistics_of(self, params, weights):
        # a component's counts only enter through their proportions
        return {"counts": weights.to(F64)[:, None] * params["probs"]}

    def sample(self, params, z, generator, total: int = 100):
        """Rows of ``total`` counts each (a multinomial needs its number of draws)."""
        p = params["probs"][z]
        draws = torch.multinomial(p, total, replacement=True, generator=generator)
        return torch.zeros_like(p).scatter_add_(1, draws, torch.ones_like(draws, dtype=F64))

    def mean(self, params):
        return params["probs"]

    def conditional_mean(self, params, X):
        X0, mask = observed(X)
        if mask is None:
            return X[:, None, :].expand(-1, params["probs"].shape[0], -1)
        p = params["probs"].to(F64)
        p_obs = (mask.to(F64) @ p.mT).clamp_min(1e-300)
        fill = X0.to(F64).sum(1)[:, None, None] * p[None] / p_obs[:, :, None]
        return torch.where(mask[:, None, :] > 0, X0[:, None, :].to(F64), fill).to(X.dtype)

    def n_parameters(self, params):
        K, D = params["probs"].shape
        return int(K * (D - 1))

    def param_shapes(self, n_components, n_features):
        return {"probs": (n_components, n_features)}
