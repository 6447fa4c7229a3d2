"""Multivariate Student-t components, fitted by EM through the latent scale.

x | z=k ~ t_nu(mu, Sigma) is the scale mixture x | u ~ N(mu, Sigma / u),
u ~ Gamma(nu / 2, nu / 2) (McLachlan & Peel, 2000, ch. 7; Peel & McLachlan,
2000): outliers get a small weight u, which makes clustering robust.  With
delta = (x - mu)^T Sigma^-1 (x - mu) and p the number of (observed)
coordinates, the posterior of u given x and k is
Gamma((nu + p) / 2, (nu + delta) / 2):

    E[u | x, k]     = (nu + p) / (nu + delta)
    E[log u | x, k] = psi((nu + p) / 2) - log((nu + delta) / 2).

M-step: mu = sum r u x / sum r u, Sigma = sum r u (x - mu)(x - mu)^T / sum r,
and nu solves  log(nu/2) - psi(nu/2) + 1 + sum r (E log u - E u) / sum r = 0
(a monotone equation, solved by bisection; nu is capped at 1e6, a Gaussian).

Parameters ``loc`` (K, D), ``covariance`` (the scale matrix Sigma: (K, D, D)
full or (K, D) diag) and ``df`` (K,).  Missing entries: the marginal of a
multivariate t over the observed coordinates is a t with the same nu on
Sigma_oo, and E[u x x^T | x_o] = E[u] E[x] E[x]^T + Cov (see the Gaussian
family for the conditional moments).
"""

from __future__ import annotations

import math

import torch

from elbokit.families.base import F64, Family, has_missing
from elbokit.families.gaussian import Gaussian

DF_MAX = 1e6


def solve_df(c: torch.Tensor) -> torch.Tensor:
    """nu with log(nu/2) - psi(nu/2) + 1 + c = 0 (c <= -1), by bisection on log nu."""
    target = -(1 + c)  # log x - psi(x) = target, decreasing in x = nu / 2
    lo = torch.full_like(c, math.log(1e-3))
    hi = torch.full_like(c, math.log(DF_MAX / 2))
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        x = mid.exp()
        above = (x.log() - torch.digamma(x)) > target  # x too small
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    return (2 * (0.5 * (lo + hi)).exp()).clamp(max=DF_MAX)


class StudentT(Family):
    """Multivariate Student-t components (robust clustering).

    Parameters
    ----------
    covariance_type : {"full", "diag"}, default="full"
        The scale matrix: full per component, or diagonal.
    df : float or None, default=None
        Degrees of freedom nu: estimated per component when None (started at
        ``df_init``), else fixed at this value.
    df_init : float, default=10.0
    reg_covar : float, default=1e-6
    """

    name = "student_t"

    def __init__(self, covariance_type="full", df=None, df_init=10.0, reg_covar=1e-6):
        if covariance_type not in ("full", "diag"):
            raise ValueError(f"covariance_type={covariance_type!r}: use 'full' or 'diag'.")
        self.covariance_type = covariance_type
        self.df = df
        self.df_init = df_init
        self.reg_covar = reg_covar
        self._gaussian = Gaussian(covariance_type, reg_covar)

    def get_config(self):
        return {"covariance_type": self.covariance_type, "df": self.df,
                "df_init": float(self.df_init), "reg_covar": float(self.reg_covar)}

    def work_per_row(self, n_components, n_features, missing=False):
        return self._gaussian.work_per_row(n_components, n_features, missing)

    def _scale_weights(self, params, X):
        """(delta, p_obs, E[u], E[log u], log_det), per row and component."""
        maha, log_det, n_obs, _, _ = self._gaussian._terms(params, X)
        nu = params["df"].to(maha.dtype)
        p = n_obs[:, None].to(maha.dtype)
        u = (nu + p) / (nu + maha)
        log_u = torch.digamma((nu + p) / 2) - torch.log((nu + maha) / 2)
        return maha, p, u, log_u, log_det

    def log_prob(self, params, X):
        maha, p, _, _, log_det = self._scale_weights(params, X)
        nu = params["df"].to(maha.dtype)
        out = (torch.lgamma((nu + p) / 2) - torch.lgamma(nu / 2) - 0.5 * p * torch.log(nu * math.pi)
               - 0.5 * log_det - 0.5 * (nu + p) * torch.log1p(maha / nu))
        return out.to(X.dtype)

    def statistics(self, params, X, resp):
        if params is None:  # initialisation: a Gaussian M-step, u = 1
            stats = self._gaussian.statistics(None, X, resp)
            return self._with_unit_scale(stats, resp)
        _, _, u, log_u, _ = self._scale_weights(params, X)
        r = resp.to(F64)
        ru = r * u.to(F64)
        stats = self._gaussian.statistics(params, X, ru)
        if not self._gaussian.factorised and has_missing(X):
            # the conditional covariance enters with weight r, not r u
            _, _, _, _, A = self._gaussian._terms(params, X, need_moments=True)
            cov = self._gaussian._dense(params)
            nu_ = ru.sum(0)
            nk = r.sum(0)
            correction = (nk - nu_)[:, None, None] * cov - (
                torch.einsum("nk,nkde->kde", r - ru, A) @ cov)
            stats["s2"] = stats["s2"] + correction
        if self._gaussian.factorised:
            o = (~torch.isnan(X)).to(F64)
            stats["n_r"] = r.mT @ o  # sum r o per column: Sigma's denominator
            stats["su"] = ru.sum(0)
        else:
            stats["su"] = stats.pop("nk")
        stats["nk"] = r.sum(0)
        stats["slog"] = (r * (log_u.to(F64) - u.to(F64))).sum(0)
        return stats

    def _with_unit_scale(self, stats, resp):
        nk = resp.to(F64).sum(0)
        stats = dict(stats)
        if self._gaussian.factorised:
            stats["n_r"] = stats["n"].clone()
            stats["su"] = nk.clone()
        else:
            stats["su"] = stats.pop("nk")
        stats["nk"] = nk
        stats["slog"] = -nk  # E[log u - u] with u = 1
        return stats

    def maximize(self, stats, params, fixed=None):
        fixed = dict(fixed or {})
        nk = stats["nk"]
        if self._gaussian.factorised:
            n_obs = stats["n"]  # the u-weighted observed weight per column
            g = self._gaussian.maximize({"n": n_obs, "s1": stats["s1"], "s2": stats["s2"]},
                                        params, fixed)
            # Sigma divides by sum r (per column: its observed share), not by sum r u
            ratio = torch.where(stats["n_r"] > 0, n_obs / stats["n_r"].clamp_min(1e-300),
                                torch.ones_like(n_obs))
            cov = (g["covariance"] - self.reg_covar) * ratio + self.reg_covar
        else:
            g = self._gaussian.maximize({"nk": stats["su"], "s1": stats["s1"], "s2": stats["s2"]},
                                        params, fixed)
            eye = torch.eye(g["loc"].shape[1], dtype=F64, device=nk.device)
            ratio = torch.where(nk > 0, stats["su"] / nk.clamp_min(1e-300), torch.ones_like(nk))
            cov = (g["covariance"] - self.reg_covar * eye) * ratio[:, None, None] + self.reg_covar * eye
        if "covariance" in fixed:
            cov = fixed["covariance"]
        if "df" in fixed:
            df = fixed["df"]
        elif self.df is not None:
            df = torch.full_like(nk, float(self.df))
        else:
            c = torch.where(nk > 0, stats["slog"] / nk.clamp_min(1e-300), torch.full_like(nk, -1.0))
            df = solve_df(c.clamp(max=-1.0))
        return {"loc": g["loc"], "covariance": cov, "df": df}

    def statistics_of(self, params, weights):
        w = weights.to(F64)
        g = self._gaussian.statistics_of({"loc": params["loc"], "covariance": params["covariance"]}, w)
        nu = params["df"]
        c = -(torch.log(nu / 2) - torch.digamma(nu / 2) + 1)
        out = {"s1": g["s1"], "s2": g["s2"], "su": w.clone(), "nk": w.clone(), "slog": w * c}
        if self._gaussian.factorised:
            out["n"], out["n_r"] = g["n"], g["n"].clone()
        return out

    def sample(self, params, z, generator):
        nu = params["df"][z]
        gauss = self._gaussian.sample({"loc": torch.zeros_like(params["loc"]),
                                       "covariance": params["covariance"]}, z, generator)
        u = _gamma(nu / 2, generator) * 2 / nu  # u ~ Gamma(nu / 2, rate nu / 2)
        return params["loc"][z] + gauss / u.sqrt()[:, None]

    def mean(self, params):
        return params["loc"]

    def conditional_mean(self, params, X):
        return self._gaussian.conditional_mean(params, X)

    def n_parameters(self, params):
        K, D = params["loc"].shape
        cov = K * D * (D + 1) // 2 if self.covariance_type == "full" else K * D
        return int(K * D + cov + (K if self.df is None else 0))

    def param_shapes(self, n_components, n_features):
        shapes = self._gaussian.param_shapes(n_components, n_features)
        shapes["df"] = (n_components,)
        return shapes

    def initialize(self, X, resp, generator):
        params = self._gaussian.maximize(self._gaussian.statistics(None, X, resp), None)
        K = resp.shape[1]
        df = float(self.df) if self.df is not None else float(self.df_init)
        params["df"] = torch.full((K,), df, dtype=F64, device=params["loc"].device)
        return params


def _gamma(shape: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gamma(shape, 1) draws with a generator (Marsaglia & Tsang, 2000)."""
    boost = shape < 1
    a = torch.where(boost, shape + 1, shape)
    d = a - 1.0 / 3
    c = 1.0 / torch.sqrt(9 * d)
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while bool(todo.any()):
        idx = torch.nonzero(todo).flatten()
        x = torch.randn(idx.shape, dtype=a.dtype, device=a.device, generator=generator)
        v = (1 + c[idx] * x) ** 3
        u = torch.rand(idx.shape, dtype=a.dtype, device=a.device, generator=generator)
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d[idx] - d[idx] * v
                        + d[idx] * torch.log(v.clamp_min(1e-300)))
        out[idx[ok]] = (d[idx] * v)[ok]
        todo[idx[ok]] = False
    if bool(boost.any()):
        u = torch.rand(a.shape, dtype=a.dtype, device=a.device, generator=generator)
        out = torch.where(boost, out * u ** (1 / shape), out)
    return out
