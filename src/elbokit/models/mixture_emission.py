"""A family whose every component is itself a finite mixture (e.g. a Gaussian mixture
per HMM state: hmmlearn's GMMHMM).

p(x | z = k) = sum_m weights[k, m] p_c(x | params_c[k, m]), with p_c any component
family (``component``).  The K x M inner components are one batch of K * M
components of that family (index k * M + m), so everything the inner family
does (missing values, streaming statistics, stepwise EM) carries over.

The statistics of this family given posterior weights resp (n, K) are the
inner family's statistics under the inner responsibilities
r[n, k, m] = resp[n, k] p(m | x_n, k) (computed by log-sum-exp), plus their
sums per (k, m); the maximiser normalises those sums per state into the
weights and calls the inner family's maximiser.  ``tied_within=True`` with a
full-covariance Gaussian gives each state one covariance shared by its M
components (hmmlearn's ``covariance_type="tied"`` for GMMHMM).

Parameter names: ``weights`` (K, M) and the inner family's names prefixed
``c.`` with leading dimension K * M.
"""

from __future__ import annotations

import torch

from elbokit.families import family_spec, get_family, register
from elbokit.families.base import F64, Family
from elbokit.models.kmeans import kmeans_plusplus, lloyd

PREFIX = "c."


class MixtureOf(Family):
    """Each component a mixture of ``n_mix`` components of the ``component`` family.

    Parameters
    ----------
    component : str, dict or Family, default="gaussian"
    n_mix : int, default=1
    tied_within : bool, default=False
        One covariance per state shared by its ``n_mix`` components (needs a
        full-covariance Gaussian ``component``).
    """

    name = "mixture_of"

    def __init__(self, component="gaussian", n_mix=1, tied_within=False):
        self.component = get_family(component)
        self.n_mix = int(n_mix)
        self.tied_within = bool(tied_within)
        if self.n_mix < 1:
            raise ValueError(f"n_mix={n_mix!r} must be an integer >= 1.")
        if self.tied_within and getattr(self.component, "covariance_type", None) != "full":
            raise ValueError("tied_within=True needs a Gaussian component with covariance_type='full'.")
        self.supports_missing = self.component.supports_missing
        self._split_cache = None

    def get_config(self):
        return {"component": family_spec(self.component), "n_mix": self.n_mix,
                "tied_within": self.tied_within}

    # ------------------------------------------------------------ parameters
    def inner(self, params):
        """(mixture weights (K, M), the inner family's parameters), memoised per params dict."""
        c = self._split_cache
        if c is not None and c[0] is params:
            return c[1], c[2]
        sub = {k[len(PREFIX):]: v for k, v in params.items() if k.startswith(PREFIX)}
        self._split_cache = (params, params["weights"], sub)
        return params["weights"], sub

    @staticmethod
    def _join(weights, sub):
        return {"weights": weights, **{PREFIX + k: v for k, v in sub.items()}}

    def param_shapes(self, n_components, n_features):
        inner = self.component.param_shapes(n_components * self.n_mix, n_features)
        return {"weights": (n_components, self.n_mix), **{PREFIX + k: v for k, v in inner.items()}}

    def n_parameters(self, params):
        weights, sub = self.inner(params)
        K, M = weights.shape
        n = K * (M - 1) + self.component.n_parameters(sub)
        if self.tied_within:
            D = sub["loc"].shape[1]
            n -= K * (M - 1) * D * (D + 1) // 2
        return int(n)

    # ------------------------------------------------------------ density
    def _joint(self, params, X):
        """log weights[k, m] + log p_c(x | k, m), shape (n, K, M)."""
        weights, sub = self.inner(params)
        K, M = weights.shape
        lp = self.component.log_prob(sub, X).view(X.shape[0], K, M)
        return lp + weights.to(F64).log().to(lp.dtype)

    def log_prob(self, params, X):
        return torch.logsumexp(self._joint(params, X), 2)

    def statistics(self, params, X, resp):
        if params is None:
            raise ValueError("a mixture_of family starts from initialize(X, resp, generator).")
        joint = self._joint(params, X)
        inner = torch.softmax(joint, 2) * resp.to(joint.dtype)[:, :, None]  # (n, K, M)
        return self._stats(self.inner(params)[1], X, inner)

    def _stats(self, sub, X, inner):
        n, K, M = inner.shape
        stats = self.component.statistics(sub, X, inner.reshape(n, K * M))
        out = {PREFIX + k: v for k, v in stats.items()}
        out["nkm"] = inner.sum(0, dtype=F64)
        return out

    def maximize(self, stats, params, fixed=None):
        fixed = fixed or {}
        nkm = stats["nkm"]
        K, M = nkm.shape
        total = nkm.sum(1, keepdim=True)
        old = params["weights"] if params is not None else torch.full_like(nkm, 1.0 / M)
        weights = torch.where(total > 0, nkm / total.clamp_min(1e-300), old)
        if "weights" in fixed:
            weights = fixed["weights"].to(F64)
        c_stats = {k[len(PREFIX):]: v for k, v in stats.items() if k.startswith(PREFIX)}
        c_fixed = {k[len(PREFIX):]: v for k, v in fixed.items() if k.startswith(PREFIX)}
        sub = None if params is None else self.inner(params)[1]
        new = self.component.maximize(c_stats, sub, c_fixed or None)
        if self.tied_within and "covariance" not in c_fixed:
            new["covariance"] = self._tie(new["covariance"], nkm)
        return self._join(weights, new)

    def _tie(self, cov, nkm):
        """One covariance per state: the inner covariances pooled by their weights."""
        K, M = nkm.shape
        D = cov.shape[-1]
        eye = torch.eye(D, dtype=F64, device=cov.device)
        reg = self.component.reg_covar * eye
        w = nkm / nkm.sum(1, keepdim=True).clamp_min(1e-300)
        pooled = ((cov.view(K, M, D, D) - reg) * w[:, :, None, None]).sum(1) + reg
        uniform = (cov.view(K, M, D, D)).mean(1)
        pooled = torch.where((nkm.sum(1) > 0)[:, None, None], pooled, uniform)
        return pooled[:, None].expand(K, M, D, D).reshape(K * M, D, D).clone()

    def statistics_of(self, params, weights):
        mix, sub = self.inner(params)
        w = weights.to(F64)[:, None] * mix.to(F64)  # (K, M)
        out = {PREFIX + k: v for k, v in self.component.statistics_of(sub, w.reshape(-1)).items()}
        out["nkm"] = w.clone()
        return out

    # ------------------------------------------------------------ initialisation
    def initialize(self, X, resp, generator):
        """Per state, k-means++ and Lloyd (on the inner family's embedding) over the rows
        the state owns most; the inner components start from one M-step of those
        hard assignments, weighted by ``resp``."""
        n, K = resp.shape
        M = self.n_mix
        E = self.component.embed(X).to(F64)
        centre = E.mean(0)
        E = E - centre
        owner = resp.argmax(1)
        inner = torch.zeros(n, K, M, dtype=resp.dtype, device=resp.device)
        for k in range(K):
            rows = torch.nonzero(owner == k).flatten()
            if rows.numel() == 0:
                continue
            if M == 1 or rows.numel() <= M:
                labels = torch.arange(rows.numel(), device=rows.device) % M
            else:
                centres = kmeans_plusplus(E[rows], M, generator)
                centres = lloyd(E[rows], centres, max_iter=20)[0]
                labels = ((E[rows][:, None, :] - centres[None]) ** 2).sum(2).argmin(1)
            inner[rows, k, labels] = 1.0
            empty = inner[rows, k].sum(0) == 0  # fewer rows than components: the state's mean
            if bool(empty.any()):
                inner[rows[:, None], k, torch.nonzero(empty).flatten()[None, :]] = 1.0 / rows.numel()
        inner = inner * resp[:, :, None]
        stats = self._stats(None, X, inner)
        return self.maximize(stats, None)

    # ------------------------------------------------------------ the rest
    def sample(self, params, z, generator):
        weights, sub = self.inner(params)
        M = weights.shape[1]
        m = torch.multinomial(weights.to(F64)[z], 1, generator=generator).squeeze(1)
        return self.component.sample(sub, z * M + m, generator)

    def mean(self, params):
        weights, sub = self.inner(params)
        K, M = weights.shape
        means = self.component.mean(sub).view(K, M, -1)
        return (weights.to(F64)[:, :, None] * means.to(F64)).sum(1)

    def check(self, X, name="X"):
        return self.component.check(X, name)

    def prepare(self, X, reducer=None):
        out = MixtureOf(self.component.prepare(X, reducer), self.n_mix, self.tied_within)
        return out

    def embed(self, X):
        return self.component.embed(X)

    def work_per_row(self, n_components, n_features, missing=False):
        return self.component.work_per_row(n_components * self.n_mix, n_features, missing) + \
            2 * n_components * self.n_mix


register(MixtureOf)
