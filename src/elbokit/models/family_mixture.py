"""A finite mixture of any component family: the math that the EM engine drives.

p(x, z=k) = weights[k] p_family(x | params_k).  The E-step is the posterior
over components by log-sum-exp; the family turns the responsibilities into
its sufficient statistics and back into parameters.  This module adds to the
family only what "which component" brings: the mixing weights, known labels
(semi-supervised EM) and frozen parameters.

Known labels: a row with label y >= 0 keeps its component, q(z) = 1[z = y],
and contributes log p(x, z=y) to the objective; rows with y = -1 contribute
log p(x).  The labels travel with the rows as one extra last column, so that
chunks, streams and processes need nothing special.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from elbokit.families.base import F64, Family, Params

FAMILY_PREFIX = "f."


@dataclass(frozen=True)
class MixtureParams:
    """Mixing weights (K,) and the family's parameters (dict of (K, ...) tensors)."""

    weights: torch.Tensor
    params: Params


def normalise_log(log_joint: torch.Tensor):
    """Responsibilities and log p(x) per row, by log-sum-exp.

    Log-responsibilities below -700 (float64) or -80 (float32) are clamped there
    before the exp: such terms are < 1e-304 (1e-34) of the row's total, but as
    denormal numbers they make every later product ~10x slower on CPUs.
    """
    log_px = torch.logsumexp(log_joint, 1)
    floor = -80.0 if log_joint.dtype == torch.float32 else -700.0
    resp = (log_joint - log_px[:, None]).clamp_min_(floor).exp_()
    return resp, log_px


class FamilyMixtureModel:
    """E-step, M-step and density of a mixture of ``family`` components.

    Parameters
    ----------
    family : Family
    dtype : torch.dtype
        Compute dtype of the E-step (statistics are float64).
    frozen : dict of str to Tensor, optional
        Parameters held at the given values by every M-step: ``"weights"`` and
        any of the family's parameter names.
    labelled : bool
        The last column of every batch holds known labels (-1: unknown).
    """

    def __init__(self, family: Family, dtype: torch.dtype, frozen: dict | None = None,
                 labelled: bool = False):
        self.family = family
        self.dtype = dtype
        self.frozen = dict(frozen or {})
        self.labelled = labelled

    # ------------------------------------------------------------ density
    def split(self, X: torch.Tensor):
        """(features, labels or None) of a batch."""
        if not self.labelled:
            return X, None
        return X[:, :-1], X[:, -1].to(torch.int64)

    def log_joint(self, p: MixtureParams, X: torch.Tensor) -> torch.Tensor:
        """log p(x, z=k), shape (n, K)."""
        lp = self.family.log_prob(p.params, X.to(self.dtype) if X.dtype != self.dtype else X)
        return lp.to(F64) + p.weights.to(F64).log()

    def posterior(self, p: MixtureParams, X: torch.Tensor, labels=None):
        """Responsibilities (n, K) and the per-row objective (n,), labels respected."""
        lj = self.log_joint(p, X)
        resp, log_px = normalise_log(lj)
        if labels is not None:
            known = labels >= 0
            if bool(known.any()):
                K = lj.shape[1]
                if bool((labels >= K).any()):
                    raise ValueError(f"y holds a label >= n_components={K}: labels are 0..K-1, -1 unknown.")
                onehot = torch.nn.functional.one_hot(labels.clamp_min(0), K).to(resp.dtype)
                resp = torch.where(known[:, None], onehot, resp)
                log_px = torch.where(known, lj.gather(1, labels.clamp_min(0)[:, None]).squeeze(1), log_px)
        return resp, log_px

    # ------------------------------------------------------------ E-step
    def expected_statistics(self, p: MixtureParams, X, weight):
        X, labels = self.split(X)
        Xc = X.to(self.dtype) if X.dtype != self.dtype else X
        resp, log_px = self.posterior(p, Xc, labels)
        rw = resp if weight is None else resp * weight[:, None].to(resp.dtype)
        stats = {FAMILY_PREFIX + k: v for k, v in self.family.statistics(p.params, Xc, rw).items()}
        stats["nk"] = rw.sum(0, dtype=F64)
        log_lik = log_px.sum() if weight is None else log_px @ weight.to(F64)
        return stats, log_lik

    def statistics_from_responsibilities(self, X, resp, weight, params=None):
        """Statistics of a batch for given responsibilities (initialisation)."""
        X, _ = self.split(X)
        Xc = X.to(self.dtype) if X.dtype != self.dtype else X
        rw = resp if weight is None else resp * weight[:, None].to(resp.dtype)
        stats = {FAMILY_PREFIX + k: v for k, v in self.family.statistics(params, Xc, rw).items()}
        stats["nk"] = rw.sum(0, dtype=F64)
        return stats

    # ------------------------------------------------------------ M-step
    def family_stats(self, stats):
        n = len(FAMILY_PREFIX)
        return {k[n:]: v for k, v in stats.items() if k.startswith(FAMILY_PREFIX)}

    def maximize(self, stats, p: MixtureParams | None) -> MixtureParams:
        nk = stats["nk"]
        weights = nk / nk.sum()
        if "weights" in self.frozen:
            weights = self.frozen["weights"]
        fixed = {k: v for k, v in self.frozen.items() if k != "weights"}
        params = self.family.maximize(self.family_stats(stats), None if p is None else p.params,
                                      fixed or None)
        for k, v in fixed.items():
            params[k] = v.to(device=params[k].device, dtype=params[k].dtype) if k in params else v
        return MixtureParams(weights, params)

    # ------------------------------------------------------------ stepwise EM
    def moments(self, stats, p: MixtureParams):
        """Statistics per unit total weight, with the anchor they were taken against."""
        total = stats["nk"].sum()
        return ({k: v / total for k, v in stats.items()}, p)

    def moments_of(self, p: MixtureParams):
        fam = self.family.statistics_of(p.params, p.weights.to(F64))
        stats = {FAMILY_PREFIX + k: v for k, v in fam.items()}
        stats["nk"] = p.weights.to(F64).clone()
        return (stats, p)

    def blend(self, old, new, rho: float):
        (a, anchor), (b, _) = old, new
        return ({k: (1 - rho) * a[k] + rho * b[k] for k in a}, anchor)

    def from_moments(self, moments) -> MixtureParams:
        stats, anchor = moments
        return self.maximize(stats, anchor)

    # ------------------------------------------------------------ sampling
    def sample(self, p: MixtureParams, n: int, generator: torch.Generator):
        z = torch.multinomial(p.weights.to(F64), n, replacement=True, generator=generator).sort().values
        return self.family.sample(p.params, z, generator), z
