"""Conjugate priors for maximum a posteriori (MAP) EM: mclust's ``priorControl``.

With a prior p(theta), EM maximises log p(X | theta) + log p(theta): the E-step
is unchanged and the M-step is the posterior mode given the expected
statistics, so the objective never decreases, and a component can no longer
collapse onto a few (or duplicated) points: its covariance is bounded below by
the prior's scale.  Fraley & Raftery (2007, "Bayesian regularization for
normal mixture estimation and model-based clustering"), whose defaults
(mclust's ``defaultPrior``) this module takes:

* mean: mu_k | Sigma_k ~ N(mu_P, Sigma_k / kappa_P), with shrinkage
  kappa_P = 0.01 and mu_P the data mean;
* covariance: Sigma_k ~ inverse-Wishart(nu_P, Lambda_P) (full; one for tied),
  nu_P = D + 2, Lambda_P = cov(X) / K^(2/D); for diag and spherical an
  inverse-gamma(nu_P / 2, s_P / 2) per variance, s_P = mean of the column
  variances / K^(2/D);
* weights: Dirichlet(alpha), alpha = 1 (flat: mclust's maximum-likelihood
  weights); alpha > 1 keeps every weight away from 0.

The BIC of a MAP fit is computed as mclust does: the log-likelihood at the
MAP estimate, the parameter count unchanged.

Posterior modes (n_k, x_bar_k, W_k = n_k S_k the weighted scatter, d_k =
x_bar_k - mu_P, c_k = kappa n_k / (kappa + n_k)):

    mu_k = (n_k x_bar_k + kappa mu_P) / (n_k + kappa)
    full       Sigma_k = (Lambda + W_k + c_k d_k d_k^T) / (nu + n_k + D + 2)
    tied       Sigma   = (Lambda + sum_k W_k + c_k d_k d_k^T) / (nu + N + K + D + 1)
    diag       s_kj    = (s + W_kjj + c_k d_kj^2) / (nu + n_k + 3)
    spherical  s_k     = (s + tr W_k + c_k |d_k|^2) / (nu + (n_k + 1) D + 2)
    weights    w_k     = (n_k + alpha - 1) / (N + K (alpha - 1))
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Dirichlet, InverseGamma, MultivariateNormal, Normal, Wishart

from elbokit.inference import distributed
from elbokit.models.family_mixture import FamilyMixtureModel, MixtureParams
from elbokit.models.gaussian_mixture import (
    GaussianMixtureModel,
    GaussianMixtureParams,
    Moments,
    precisions_cholesky_from_covariances,
)

F64 = torch.float64
PRIOR_KEYS = ("shrinkage", "mean", "dof", "scale", "weight_concentration")


def check_prior(prior, algorithm: str = "em") -> dict | None:
    """The ``prior`` hyperparameter as a dict of settings (None: no prior).

    Accepts None, ``"default"`` (mclust's defaults) or a dict with any of
    ``shrinkage``, ``mean``, ``dof``, ``scale``, ``weight_concentration``.
    """
    if prior is None:
        return None
    if isinstance(prior, str):
        if prior != "default":
            raise ValueError(f"prior={prior!r}: use None, 'default' (mclust's conjugate prior) or "
                             f"a dict with keys {', '.join(PRIOR_KEYS)}.")
        settings = {}
    elif isinstance(prior, dict):
        unknown = set(prior) - set(PRIOR_KEYS)
        if unknown:
            raise ValueError(f"prior has unknown key(s) {sorted(unknown)}: use {', '.join(PRIOR_KEYS)}.")
        settings = dict(prior)
    else:
        raise ValueError(f"prior={prior!r}: use None, 'default' or a dict of settings.")
    for key in ("shrinkage", "dof", "weight_concentration"):
        value = settings.get(key)
        if value is not None and not (isinstance(value, numbers.Real) and np.isfinite(value)):
            raise ValueError(f"prior[{key!r}]={value!r} must be a finite number.")
    if settings.get("shrinkage") is not None and settings["shrinkage"] < 0:
        raise ValueError("prior['shrinkage'] must be >= 0.")
    if settings.get("weight_concentration") is not None and settings["weight_concentration"] < 1:
        raise ValueError("prior['weight_concentration'] must be >= 1 for a MAP estimate (a "
                         "Dirichlet below 1 has no interior mode); BayesianGaussianMixture "
                         "handles sparse weights.")
    if algorithm != "em":
        raise ValueError("prior= is applied by exact EM: use algorithm='em'.")
    return settings


def data_moments(source, reducer, n_features: int, device):
    """(total weight, mean, covariance with ddof=1) of a source's rows, float64, in two passes.

    Only the first ``n_features`` columns count (a labelled source carries its labels
    last). NaN entries are left out: means over the observed entries of each column,
    covariances over the rows where both columns are observed. Summed across ranks
    with ``reducer``; the second pass is centred on the first one's mean, so a large
    offset costs no accuracy.
    """
    D = n_features

    def pass_sums(centre):
        sums = {"n": torch.zeros((), dtype=F64, device=device),
                "c1": torch.zeros(D, dtype=F64, device=device),
                "s1": torch.zeros(D, dtype=F64, device=device),
                "c2": torch.zeros(D, D, dtype=F64, device=device),
                "s2": torch.zeros(D, D, dtype=F64, device=device)}
        for X, w in source:
            X = X[:, :D].to(F64)
            o = (~torch.isnan(X)).to(F64)
            wd = torch.ones(X.shape[0], dtype=F64, device=X.device) if w is None else w.to(F64)
            Xd = (X - (0 if centre is None else centre.to(X.device))).nan_to_num(0.0)
            wo = o * wd[:, None]
            sums["n"] += wd.sum().to(device)
            sums["c1"] += wo.sum(0).to(device)
            sums["s1"] += (wo * Xd).sum(0).to(device)
            if centre is not None:
                sums["c2"] += (wo.mT @ o).to(device)
                sums["s2"] += ((Xd * wo).mT @ Xd).to(device)
        return reducer(sums) if reducer is not None else sums

    first = distributed.checked(reducer, lambda: pass_sums(None))
    counts = first["c1"].clamp_min(torch.finfo(F64).tiny)
    mean = first["s1"] / counts
    second = distributed.checked(reducer, lambda: pass_sums(mean))
    shift = second["s1"] / counts  # the rounding left in the first pass's mean
    mean = mean + shift
    pairs = second["c2"]
    scatter = second["s2"] - pairs * shift[:, None] * shift[None, :]
    cov = torch.where(pairs > 1, scatter / (pairs - 1).clamp_min(1.0), torch.full_like(scatter, float("nan")))
    return float(first["n"]), mean, cov


SINGULAR_FLOOR = 1e-6


def nonsingular_covariance(cov: torch.Tensor) -> torch.Tensor:
    """A data covariance made fit to be a prior's scale.

    ``cov`` itself, or, where it is singular (constant or collinear columns,
    as images' blank pixels: smallest eigenvalue <= 1e-12 x the largest),
    ``cov + SINGULAR_FLOOR * mean(diag(cov)) * I``.  A full (D, D) matrix, or
    the (D,) variances of a diagonal one (floored the same way when one of
    them is ~0).  Where every column is constant it is returned as it is, for
    the caller's check to report.
    """
    if cov.ndim == 1:
        top, low = float(cov.max()), float(cov.min())
    else:
        eig = torch.linalg.eigvalsh(0.5 * (cov + cov.mT))
        top, low = float(eig.max()), float(eig.min())
    if top <= 0 or low > 1e-12 * top:
        return cov
    floor = SINGULAR_FLOOR * (cov if cov.ndim == 1 else cov.diagonal()).mean()
    if cov.ndim == 1:
        return cov + floor
    return cov + floor * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)


@dataclass(frozen=True)
class GaussianPrior:
    """A resolved conjugate prior of a Gaussian mixture (float64 tensors).

    Attributes
    ----------
    covariance_type : str
    shrinkage : float
        kappa_P.
    mean : Tensor, (D,)
        mu_P.
    dof : float
        nu_P.
    scale : Tensor
        Lambda_P (D, D) for full and tied; s_P, a scalar or (D,), for diag and
        spherical (a scalar).
    weight_concentration : float
        alpha (>= 1).
    """

    covariance_type: str
    shrinkage: float
    mean: torch.Tensor
    dof: float
    scale: torch.Tensor
    weight_concentration: float

    @classmethod
    def resolve(cls, settings: dict, n_components: int, covariance_type: str, data_mean, data_cov):
        """mclust's ``defaultPrior`` from the data's mean and covariance, overridden by
        ``settings``.

        Where the data's covariance is singular (constant or collinear columns, as
        the blank border pixels of images), the default full/tied scale is taken
        from :func:`nonsingular_covariance`, so that the prior stays proper
        (mclust's formula would give a singular Wishart scale there).
        """
        K, D = n_components, data_mean.shape[0]
        device = data_mean.device

        def tensor(value, shape, name):
            t = value if isinstance(value, torch.Tensor) else torch.as_tensor(
                np.asarray(value, dtype=np.float64))
            t = t.to(device=device, dtype=F64)
            if tuple(t.shape) not in shape:
                raise ValueError(f"prior[{name!r}] has shape {tuple(t.shape)}; expected one of {shape}.")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"prior[{name!r}] contains NaN or inf.")
            return t

        if not bool(torch.isfinite(data_cov).all()) and settings.get("scale") is None:
            raise ValueError("the default prior scale (the covariance of X) needs at least 2 rows: "
                             "pass more data or give prior['scale'].")
        fac = (1.0 / K) ** (2.0 / D)
        mean = data_mean if settings.get("mean") is None else tensor(settings["mean"], [(D,)], "mean")
        if covariance_type in ("full", "tied"):
            scale = fac * nonsingular_covariance(data_cov) if settings.get("scale") is None else \
                tensor(settings["scale"], [(D, D)], "scale")
            if bool((torch.linalg.eigvalsh(0.5 * (scale + scale.mT)) <= 0).any()):
                raise ValueError("prior['scale'] must be symmetric positive definite."
                                 if settings.get("scale") is not None else
                                 "the default prior scale needs X to vary: every column of X is "
                                 "constant; give prior['scale'].")
        else:
            shapes = [(), (D,)] if covariance_type == "diag" else [()]
            scale = fac * data_cov.diagonal().mean() if settings.get("scale") is None else \
                tensor(settings["scale"], shapes, "scale")
            if bool((scale <= 0).any()):
                raise ValueError("prior['scale'] must be positive." if settings.get("scale")
                                 is not None else "the default prior scale needs X to vary: "
                                 "every column of X is constant; give prior['scale'].")
        dof = float(D + 2) if settings.get("dof") is None else float(settings["dof"])
        if dof <= D - 1:
            raise ValueError(f"prior['dof']={dof} must exceed n_features - 1 = {D - 1}.")
        shrinkage = 0.01 if settings.get("shrinkage") is None else float(settings["shrinkage"])
        alpha = 1.0 if settings.get("weight_concentration") is None else \
            float(settings["weight_concentration"])
        return cls(covariance_type, shrinkage, mean.to(F64), dof, scale.to(F64), alpha)

    # ------------------------------------------------------------ the M-step
    def mode_weights(self, nk: torch.Tensor) -> torch.Tensor:
        """Posterior mode of the weights given the expected counts n_k."""
        a, K = self.weight_concentration, nk.shape[0]
        return (nk + (a - 1)) / (nk.sum() + K * (a - 1))

    def mode_components(self, counts, means, covariances):
        """Posterior mode (means, covariances) given weighted moments.

        ``counts`` n_k is (K,), or (K, D) per column for diag and spherical
        (columns with missing entries); ``means`` (K, D) the weighted means;
        ``covariances`` the weighted covariances about them in the type's
        moment shape ((K, D, D) full, (D, D) tied pooled, (K, D) otherwise).
        """
        ct, kappa, nu = self.covariance_type, self.shrinkage, self.dof
        K, D = means.shape
        n = counts if counts.ndim == 2 else counts[:, None]
        new_means = (n * means + kappa * self.mean) / (n + kappa)
        d = means - self.mean
        c = kappa * n / (kappa + n)  # (K, 1) or (K, D)
        if ct == "full":
            scatter = n[:, :, None] * covariances + c[:, :, None] * d.unsqueeze(2) * d.unsqueeze(1)
            cov = (self.scale + scatter) / (nu + counts + D + 2)[:, None, None]
            return new_means, 0.5 * (cov + cov.mT)
        if ct == "tied":
            N = counts.sum()
            cov = (self.scale + N * covariances + (d.mT * c[:, 0]) @ d) / (nu + N + K + D + 1)
            return new_means, 0.5 * (cov + cov.mT)
        spread = n * covariances + c * d.square()
        if ct == "diag":
            return new_means, (self.scale + spread) / (nu + n + 3)
        return new_means, (self.scale + spread.sum(1)) / (nu + n.expand(K, D).sum(1) + D + 2)

    def mode(self, m: Moments):
        """Posterior mode (weights, means, covariances) given moments (n_k, x_bar_k, S_k)."""
        means, cov = self.mode_components(m.nk, m.means, m.covariances)
        return self.mode_weights(m.nk), means, cov

    # ------------------------------------------------------------ the density
    def log_density(self, weights, means, covariances) -> torch.Tensor:
        """log p(weights, means, covariances), float64."""
        ct, kappa, nu = self.covariance_type, self.shrinkage, self.dof
        K, D = means.shape
        w = weights.to(F64)
        out = Dirichlet(torch.full((K,), self.weight_concentration, dtype=F64, device=w.device),
                        validate_args=False).log_prob(w) if K > 1 else w.new_zeros(())
        cov = covariances.to(F64)
        if ct in ("full", "tied"):
            cov_k = cov if ct == "full" else cov.expand(K, D, D)
            if kappa > 0:
                out = out + MultivariateNormal(self.mean, covariance_matrix=cov_k / kappa).log_prob(means).sum()
            ws = cov if ct == "full" else cov[None]
            precision = torch.cholesky_inverse(torch.linalg.cholesky(ws))
            inv_wishart = (Wishart(torch.tensor(nu, dtype=F64, device=w.device), precision_matrix=self.scale,
                                   validate_args=False).log_prob(precision)
                           - (D + 1) * torch.linalg.slogdet(ws)[1])
            return out + inv_wishart.sum()
        var = cov if ct == "diag" else cov[:, None].expand(K, D)
        if kappa > 0:
            out = out + Normal(self.mean, (var / kappa).sqrt()).log_prob(means).sum()
        scale = self.scale.expand(D) if ct == "diag" else self.scale
        variances = var if ct == "diag" else cov
        return out + InverseGamma(torch.as_tensor(nu / 2, dtype=F64, device=w.device), scale / 2,
                                  validate_args=False).log_prob(variances).sum()


class MAPGaussianMixtureModel(GaussianMixtureModel):
    """The Gaussian mixture with the posterior mode as M-step, and ``log_prior`` for the
    EM engine (which then climbs log p(X | theta) + log p(theta)).

    ``reg_covar`` is not added (the prior keeps covariances positive definite); it
    still sets the split of a re-seeded empty component.
    """

    def __init__(self, covariance_type: str, reg_covar: float, dtype: torch.dtype,
                 prior: GaussianPrior):
        super().__init__(covariance_type, reg_covar, dtype)
        self.prior = prior

    def from_moments(self, moments: Moments) -> GaussianMixtureParams:
        weights, means, cov = self.prior.mode(self._reseed_empty(moments))
        return GaussianMixtureParams(weights, means, cov,
                                     precisions_cholesky_from_covariances(cov, self.covariance_type))

    def log_prior(self, params: GaussianMixtureParams) -> torch.Tensor:
        return self.prior.log_density(params.weights, params.means, params.covariances)


def resolve_for(estimator, source, reducer, n_features, device) -> GaussianPrior | None:
    """The estimator's ``prior`` resolved on the data of ``source`` (None without one)."""
    settings = check_prior(getattr(estimator, "prior", None), estimator.algorithm)
    if settings is None:
        return None
    _, mean, cov = data_moments(source, reducer, n_features, device)
    ct = getattr(estimator, "covariance_type", None)
    if ct is None:  # a Mixture: the prior is for its Gaussian family
        family = estimator._make_family()
        if getattr(family, "name", None) != "gaussian":
            raise ValueError("prior= is mclust's Gaussian prior: it needs family='gaussian' "
                             f"(got {getattr(family, 'name', family)!r}).")
        ct = family.covariance_type
    n_components = estimator._n_components() if hasattr(estimator, "_n_components") else \
        estimator.n_components
    return GaussianPrior.resolve(settings, n_components, ct, mean, cov)


class MAPFamilyMixtureModel(FamilyMixtureModel):
    """A mixture of the Gaussian family with the posterior mode as M-step (and
    ``log_prior`` for the EM engine), for :class:`~elbokit.Mixture`.

    Reads the Gaussian family's statistics: ``nk``, ``s1`` = sum r (x - loc),
    ``s2`` = sum r (x - loc)(x - loc)^T (full, tied), or the per-column ``n``,
    ``s1``, ``s2`` (diag, spherical), taken against the E-step's ``loc``.
    """

    def __init__(self, family, dtype, frozen=None, labelled=False, *, prior: GaussianPrior):
        super().__init__(family, dtype, frozen, labelled)
        if self.frozen:
            raise ValueError("prior= and frozen= together are not supported: fix parameters or "
                             "give a prior.")
        self.prior = prior

    def maximize(self, stats, p):
        fam = self.family_stats(stats)
        anchor = p.params["loc"] if p is not None else torch.zeros_like(fam["s1"])
        ct = self.family.covariance_type
        eps = torch.finfo(F64).tiny
        if ct in ("diag", "spherical"):
            n = fam["n"]
            shift = fam["s1"] / n.clamp_min(eps)
            counts, cov = n, (fam["s2"] / n.clamp_min(eps) - shift.square()).clamp_min(0.0)
        else:
            counts = fam["nk"]
            shift = fam["s1"] / counts.clamp_min(eps)[:, None]
            cov = fam["s2"] / counts.clamp_min(eps)[:, None, None] - shift.unsqueeze(2) * shift.unsqueeze(1)
            if ct == "tied":
                cov = (counts[:, None, None] * cov).sum(0) / counts.sum()
        means, cov = self.prior.mode_components(counts, anchor + shift, cov)
        return MixtureParams(self.prior.mode_weights(stats["nk"]), {"loc": means, "covariance": cov})

    def log_prior(self, p) -> torch.Tensor:
        return self.prior.log_density(p.weights, p.params["loc"], p.params["covariance"])
