"""The variational Bayesian Gaussian mixture: math only.

The model (Bishop 2006, sec. 10.2; Blei & Jordan 2006 for the Dirichlet
process) over data x_n, assignments z_n and globals (pi, mu, Lambda):

* weights: pi ~ Dirichlet(alpha0, ..., alpha0) (``dirichlet_distribution``),
  or stick-breaking pi_k = v_k prod_{j<k} (1 - v_j), v_k ~ Beta(1, gamma0)
  (``dirichlet_process``, truncated at K sticks);
* components: Lambda_k ~ Wishart(W0, nu0), mu_k | Lambda_k ~ N(m0, (beta0 Lambda_k)^-1);
* z_n ~ Categorical(pi), x_n | z_n = k ~ N(mu_k, Lambda_k^-1).

Mean-field VI takes q(z) q(pi) prod_k q(mu_k, Lambda_k) with q(mu_k, Lambda_k) =
N(m_k, (beta_k Lambda_k)^-1) Wishart(W_k, nu_k).  ``covariance_type`` restricts
the Wishart factors (of q and of the prior): ``full`` none; ``diag`` W_k
diagonal; ``spherical`` W_k = w_k I; ``tied`` one (W, nu) shared by the K
factors (each component keeps its own Lambda_k in the model).  These are
scikit-learn's ``BayesianGaussianMixture`` updates, which are exact
coordinate ascent on the ELBO within the restricted family; its
``lower_bound_`` is the ELBO after the M-step less the constant of
:func:`sklearn_bound_offset`.

Symbols map to scikit-learn's names: alpha/(a, b) ``weight_concentration``,
beta ``mean_precision``, m ``means``, nu ``degrees_of_freedom``,
``covariances`` = W^-1 / nu = E_q[Lambda]^-1, ``precisions_cholesky`` U with
U U^T = covariances^-1; prior: ``covariance`` = W0^-1 (scikit-learn's
``covariance_prior_``).

The E-step is a Gaussian-mixture E-step (the fast one of
:class:`~elbokit.models.gaussian_mixture.GaussianMixtureModel`) with the
log-weights replaced by E[log pi_k] + 1/2 (E[log |Lambda_k|] - log |covariances_k^-1|)
- D / (2 beta_k); the statistics are the same, in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Beta, Dirichlet

from elbokit.inference.vi import LocalResult
from elbokit.kl import kl_divergence, wishart_kl
from elbokit.models.gaussian_mixture import (
    GaussianMixtureModel,
    GaussianMixtureParams,
    Moments,
    precisions_cholesky_from_covariances,
    precisions_from_cholesky,
)

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)
WEIGHT_PRIORS = ("dirichlet_process", "dirichlet_distribution")


@dataclass(frozen=True)
class BGMMPrior:
    """Hyperparameters of the prior (float64 tensors on the compute device).

    Attributes
    ----------
    covariance_type : str
    process : bool
        True: stick-breaking (Dirichlet process) weights; False: Dirichlet.
    weight_concentration : float
        gamma0 (process) or alpha0 (Dirichlet).
    mean_precision : float
        beta0.
    mean : Tensor, shape (D,)
        m0.
    degrees_of_freedom : float
        nu0 (> D - 1).
    covariance : Tensor
        W0^-1: (D, D) full and tied, (D,) diag, () spherical.
    """

    covariance_type: str
    process: bool
    weight_concentration: float
    mean_precision: float
    mean: torch.Tensor
    degrees_of_freedom: float
    covariance: torch.Tensor


@dataclass(frozen=True)
class BGMMParams:
    """The variational parameters of the globals (float64).

    Attributes
    ----------
    weight_concentration : Tensor, (K,) Dirichlet or (2, K) Beta sticks
    mean_precision : Tensor, (K,)
    means : Tensor, (K, D)
    degrees_of_freedom : Tensor, (K,) (all equal for ``tied``)
    covariances : Tensor, shaped as scikit-learn's by covariance type
    precisions_cholesky : Tensor, same shape
    """

    weight_concentration: torch.Tensor
    mean_precision: torch.Tensor
    means: torch.Tensor
    degrees_of_freedom: torch.Tensor
    covariances: torch.Tensor
    precisions_cholesky: torch.Tensor


# --------------------------------------------------------------------------- expectations
def multi_digamma(a: torch.Tensor, D: int) -> torch.Tensor:
    """psi_D(a) = sum_{i<D} digamma(a - i/2), the derivative of log Gamma_D."""
    i = torch.arange(D, dtype=F64, device=a.device)
    return torch.special.digamma(a[..., None] - 0.5 * i).sum(-1)


def log_det_cholesky(U: torch.Tensor, covariance_type: str, D: int) -> torch.Tensor:
    """log det U = 1/2 log |covariances^-1|: (K,), or a scalar for ``tied``."""
    if covariance_type == "full":
        return U.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    if covariance_type == "tied":
        return U.diagonal().log().sum()
    if covariance_type == "diag":
        return U.log().sum(-1)
    return D * U.log()


def expected_log_weights(params: BGMMParams, process: bool) -> torch.Tensor:
    """E_q[log pi_k], shape (K,)."""
    wc = params.weight_concentration
    if process:
        a, b = wc[0], wc[1]
        total = torch.special.digamma(a + b)
        log_v, log_rest = torch.special.digamma(a) - total, torch.special.digamma(b) - total
        return log_v + torch.cat([log_rest.new_zeros(1), torch.cumsum(log_rest, 0)[:-1]])
    return torch.special.digamma(wc) - torch.special.digamma(wc.sum())


def mean_weights(params: BGMMParams, process: bool) -> torch.Tensor:
    """E_q[pi_k] normalised over the K components (scikit-learn's ``weights_``)."""
    wc = params.weight_concentration
    if process:
        a, b = wc[0], wc[1]
        rest = b / (a + b)
        w = a / (a + b) * torch.cat([rest.new_ones(1), torch.cumprod(rest[:-1], 0)])
    else:
        w = wc
    return w / w.sum()


def expected_log_det_precision(params: BGMMParams, covariance_type: str) -> torch.Tensor:
    """E_q[log |Lambda_k|] = psi_D(nu/2) + D log 2 + log |W_k|, shape (K,)."""
    D = params.means.shape[1]
    nu = params.degrees_of_freedom
    log_det_w = 2 * log_det_cholesky(params.precisions_cholesky, covariance_type, D) - D * nu.log()
    return multi_digamma(0.5 * nu, D) + D * math.log(2.0) + log_det_w


def quadratic(U: torch.Tensor, covariance_type: str, d: torch.Tensor) -> torch.Tensor:
    """d_k^T covariances_k^-1 d_k for d of shape (K, D), shape (K,)."""
    if covariance_type == "full":
        return (d.unsqueeze(1) @ U).squeeze(1).square().sum(-1)
    if covariance_type == "tied":
        return (d @ U).square().sum(-1)
    if covariance_type == "diag":
        return (d * U).square().sum(-1)
    return d.square().sum(-1) * U.square()


def trace_with_precision(U: torch.Tensor, covariance_type: str, S: torch.Tensor) -> torch.Tensor:
    """tr(covariances_k^-1 S_k), shape (K,).

    ``S`` has the covariance type's moment shape: (K, D, D) full, (D, D) tied
    (one matrix), (K, D) diag and spherical (per feature); for ``spherical``
    U is (K,), for ``tied`` the result is the one trace.
    """
    if covariance_type == "full":
        return (precisions_from_cholesky(U, "full") * S).sum((-2, -1))
    if covariance_type == "tied":
        return (precisions_from_cholesky(U, "tied") * S).sum()
    if covariance_type == "diag":
        return (U.square() * S).sum(-1)
    return S.sum(-1) * U.square()


def log_det_prior_covariance(prior: BGMMPrior, D: int) -> torch.Tensor:
    """log |W0^-1| (the prior's ``covariance`` as a D x D matrix)."""
    cov = prior.covariance
    if prior.covariance_type in ("full", "tied"):
        return torch.linalg.slogdet(cov)[1]
    if prior.covariance_type == "diag":
        return cov.log().sum()
    return D * cov.log()


def trace_prior_precision(prior: BGMMPrior, params: BGMMParams) -> torch.Tensor:
    """tr(W0^-1 covariances_k^-1), shape (K,) (a scalar for ``tied``)."""
    ct, U, D = prior.covariance_type, params.precisions_cholesky, params.means.shape[1]
    cov = prior.covariance
    if ct in ("full", "tied"):
        return (precisions_from_cholesky(U, ct) * cov).sum((-2, -1))
    if ct == "diag":
        return (U.square() * cov).sum(-1)
    return D * cov * U.square()


# --------------------------------------------------------------------------- the model
class BayesianGaussianMixtureModel:
    """Local step, global update, blend and bound of the variational Gaussian mixture
    (the :class:`~elbokit.inference.vi.ConjugateVIModel` of the VI engine).

    Parameters
    ----------
    prior : BGMMPrior
    reg_covar : float
        Added to the diagonal of each component's sample covariance in the
        global update (scikit-learn's convention: n_k (S_k + reg_covar I)).
    dtype : torch.dtype
        Compute dtype of the E-step; statistics and globals are float64.
    """

    def __init__(self, prior: BGMMPrior, reg_covar: float, dtype: torch.dtype):
        self.prior = prior
        self.covariance_type = prior.covariance_type
        self.reg_covar = float(reg_covar)
        self.dtype = dtype
        self.gm = GaussianMixtureModel(prior.covariance_type, float(reg_covar), dtype)
        self._cache = None
        self._bounds: list = []

    # ------------------------------------------------------------ E-step
    def log_weight_terms(self, params: BGMMParams) -> torch.Tensor:
        """c_k = E[log pi_k] + 1/2 (E[log |Lambda_k|] - log |covariances_k^-1|) - D / (2 beta_k),
        so that E_q[log p(x, z=k)] = c_k + log N(x | means_k, covariances_k)."""
        D = params.means.shape[1]
        nu = params.degrees_of_freedom
        gap = D * math.log(2.0) + multi_digamma(0.5 * nu, D) - D * nu.log()
        return (expected_log_weights(params, self.prior.process) + 0.5 * gap
                - 0.5 * D / params.mean_precision)

    def gaussian(self, params: BGMMParams) -> tuple[GaussianMixtureParams, torch.Tensor]:
        """The Gaussian mixture whose E-step is this one's, and the log-normaliser
        of its weights: E_q[log p(x, z=k)] = its log p(x, z=k) + shift."""
        if self._cache is not None and self._cache[0] is params:
            return self._cache[1]
        c = self.log_weight_terms(params)
        shift = torch.logsumexp(c, 0)
        out = (GaussianMixtureParams((c - shift).exp(), params.means, params.covariances,
                                     params.precisions_cholesky), shift)
        self._cache = (params, out)
        return out

    def log_joint(self, params: BGMMParams, X: torch.Tensor) -> torch.Tensor:
        """E_q[log p(x_n, z_n = k)] (scikit-learn's weighted log-probabilities), (n, K), float64."""
        gp, shift = self.gaussian(params)
        return self.gm.log_joint(gp, X).to(F64) + shift

    def local_step(self, params: BGMMParams, batch, local=None) -> LocalResult:
        """q(z) of one batch ``(X, weight)``: its statistics and local bound.

        The local bound is sum_n w_n log sum_k exp E_q[log p(x_n, z_n = k)], which
        equals E_q[log p(x, z | pi, mu, Lambda)] + H[q(z)] at the optimal q(z).
        """
        X, weight = batch
        gp, shift = self.gaussian(params)
        stats, log_lik = self.gm.expected_statistics(gp, X, weight)
        n = (torch.tensor(float(X.shape[0]), dtype=F64, device=X.device) if weight is None
             else weight.sum(dtype=F64))
        return LocalResult(stats, log_lik + n * shift, int(X.shape[0]), n)

    def zero_statistics(self, params: BGMMParams) -> dict:
        """The statistics of no row (an empty shard or mini-batch part)."""
        empty = params.means.new_zeros((0, params.means.shape[1])).to(self.dtype)
        stats, _ = self.gm.expected_statistics(self.gaussian(params)[0], empty, None)
        return {k: torch.zeros_like(v, dtype=F64) for k, v in stats.items()}

    def moments(self, stats, params: BGMMParams) -> Moments:
        """Anchor-free weighted moments of the statistics taken under ``params``."""
        return self.gm.moments(stats, self.gaussian(params)[0])

    # ------------------------------------------------------------ global update
    def maximize(self, stats, params: BGMMParams, scale: float = 1.0) -> BGMMParams:
        """The optimal q(pi) q(mu, Lambda) given ``scale`` times the statistics."""
        m = self.moments(stats, params)
        if scale != 1.0:
            m = Moments(m.nk * scale, m.means, m.covariances)
        return self.update(m)

    def update(self, m: Moments) -> BGMMParams:
        """Coordinate update from moments (n_k, x_bar_k, S_k), scikit-learn's equations."""
        p, ct = self.prior, self.covariance_type
        nk, xk = m.nk, m.means
        K, D = xk.shape
        if p.process:
            rest = torch.flip(torch.cumsum(torch.flip(nk, (0,)), 0), (0,)) - nk  # sum_{j>k} n_j
            wc = torch.stack([1.0 + nk, p.weight_concentration + rest])
        else:
            wc = p.weight_concentration + nk
        beta = p.mean_precision + nk
        means = (p.mean_precision * p.mean + nk[:, None] * xk) / beta[:, None]
        diff = xk - p.mean
        shrink = p.mean_precision * nk / beta  # beta0 n_k / beta_k
        eye = torch.eye(D, dtype=F64, device=xk.device)
        reg = self.reg_covar
        if ct == "full":
            nu = p.degrees_of_freedom + nk
            scatter = (p.covariance + nk[:, None, None] * (m.covariances + reg * eye)
                       + shrink[:, None, None] * diff.unsqueeze(2) * diff.unsqueeze(1))
            cov = scatter / nu[:, None, None]
        elif ct == "tied":
            total = nk.sum()
            nu = (p.degrees_of_freedom + total / K).expand(K).clone()
            scatter = (p.covariance + (m.covariances + reg * eye) * total / K
                       + (diff.mT * shrink) @ diff / K)
            cov = scatter / nu[0]
        elif ct == "diag":
            nu = p.degrees_of_freedom + nk
            scatter = p.covariance + nk[:, None] * (m.covariances + reg) + shrink[:, None] * diff.square()
            cov = scatter / nu[:, None]
        else:
            nu = p.degrees_of_freedom + nk
            scatter = (p.covariance + nk * (m.covariances.mean(1) + reg)
                       + shrink * diff.square().mean(1))
            cov = scatter / nu
        if ct in ("full", "tied"):
            cov = 0.5 * (cov + cov.mT)
        return BGMMParams(wc, beta, means, nu, cov, precisions_cholesky_from_covariances(cov, ct))

    # ------------------------------------------------------------ stochastic VI
    def natural(self, params: BGMMParams) -> dict:
        """Natural parameters (centred at the prior mean), in which the target of a
        global update is linear in the statistics: the blend of stochastic VI."""
        beta, nu = params.mean_precision, params.degrees_of_freedom
        d = params.means - self.prior.mean
        return {"wc": params.weight_concentration, "beta": beta, "beta_d": beta[:, None] * d,
                "scatter": self._scaled(params.covariances, nu) + self._outer(beta, d), "nu": nu}

    def _scaled(self, cov, nu):
        """W^-1 = covariances * nu, in the covariance type's shape."""
        ct = self.covariance_type
        return {"full": lambda: cov * nu[:, None, None], "tied": lambda: cov * nu[0],
                "diag": lambda: cov * nu[:, None], "spherical": lambda: cov * nu}[ct]()

    def _outer(self, beta, d):
        """beta d d^T in the covariance type's shape (tied: averaged over components)."""
        ct = self.covariance_type
        if ct == "full":
            return beta[:, None, None] * d.unsqueeze(2) * d.unsqueeze(1)
        if ct == "tied":
            return (d.mT * beta) @ d / d.shape[0]
        if ct == "diag":
            return beta[:, None] * d.square()
        return beta * d.square().mean(1)

    def from_natural(self, nat: dict) -> BGMMParams:
        ct = self.covariance_type
        beta, nu = nat["beta"], nat["nu"]
        d = nat["beta_d"] / beta[:, None]
        winv = nat["scatter"] - self._outer(beta, d)
        cov = {"full": lambda: winv / nu[:, None, None], "tied": lambda: winv / nu[0],
               "diag": lambda: winv / nu[:, None], "spherical": lambda: winv / nu}[ct]()
        if ct in ("full", "tied"):
            cov = 0.5 * (cov + cov.mT)
        return BGMMParams(nat["wc"], beta, self.prior.mean + d, nu, cov,
                          precisions_cholesky_from_covariances(cov, ct))

    def blend(self, params: BGMMParams, target: BGMMParams, rho: float) -> BGMMParams:
        """(1 - rho) params + rho target in natural parameters (a natural-gradient step)."""
        a, b = self.natural(params), self.natural(target)
        return self.from_natural({k: (1 - rho) * a[k] + rho * b[k] for k in a})

    # ------------------------------------------------------------ the bound
    def kl_weights(self, params: BGMMParams) -> torch.Tensor:
        """KL(q(pi) || p(pi)) (sum over the sticks for the Dirichlet process)."""
        wc, g = params.weight_concentration, self.prior.weight_concentration
        if self.prior.process:
            q = Beta(wc[0], wc[1], validate_args=False)
            p = Beta(torch.ones_like(wc[0]), torch.full_like(wc[1], g), validate_args=False)
            return kl_divergence(q, p).sum()
        return kl_divergence(Dirichlet(wc, validate_args=False),
                             Dirichlet(torch.full_like(wc, g), validate_args=False))

    def kl_components(self, params: BGMMParams) -> torch.Tensor:
        """KL(q(mu_k, Lambda_k) || p(mu_k, Lambda_k)) per component, shape (K,).

        The Wishart part by :func:`elbokit.kl.wishart_kl`; the Gaussian part
        1/2 [D beta0/beta - D + D log(beta/beta0) + beta0 (m - m0)^T E[Lambda] (m - m0)].
        """
        p, ct = self.prior, self.covariance_type
        K, D = params.means.shape
        nu = params.degrees_of_freedom
        log_det_w = 2 * log_det_cholesky(params.precisions_cholesky, ct, D) - D * nu.log()
        wishart = wishart_kl(nu, log_det_w, torch.as_tensor(p.degrees_of_freedom, dtype=F64),
                             -log_det_prior_covariance(p, D),
                             trace_prior_precision(p, params) / nu, D)
        ratio = p.mean_precision / params.mean_precision
        maha = quadratic(params.precisions_cholesky, ct, params.means - p.mean)
        gauss = 0.5 * (D * ratio - D - D * ratio.log() + p.mean_precision * maha)
        return wishart.expand(K) + gauss

    def global_bound(self, params: BGMMParams) -> torch.Tensor:
        """-KL(q(globals) || p(globals)), float64 (memoised for the last two globals seen)."""
        for seen, value in self._bounds:
            if seen is params:
                return value
        value = -(self.kl_weights(params) + self.kl_components(params).sum())
        self._bounds = [(params, value)] + self._bounds[:1]
        return value

    def expected_log_joint(self, m: Moments, params: BGMMParams) -> torch.Tensor:
        """sum_n sum_k r_nk E_q[log p(x_n, z_n = k)] from the moments of r, float64.

        Linear in the statistics: sum_k n_k (E[log pi_k] + 1/2 E[log |Lambda_k|]
        - D/2 log 2 pi - D / (2 beta_k)) - 1/2 tr(covariances_k^-1 Q_k), with
        Q_k = n_k (S_k + (x_bar_k - m_k)(x_bar_k - m_k)^T).
        """
        ct, U = self.covariance_type, params.precisions_cholesky
        D = params.means.shape[1]
        const = (expected_log_weights(params, self.prior.process)
                 + 0.5 * expected_log_det_precision(params, ct)
                 - 0.5 * D * LOG_2PI - 0.5 * D / params.mean_precision)
        shift = quadratic(U, ct, m.means - params.means)
        if ct == "tied":
            spread = trace_with_precision(U, ct, m.covariances) * m.nk.sum()
        else:
            spread = (trace_with_precision(U, ct, m.covariances) * m.nk).sum()
        return (m.nk * (const - 0.5 * shift)).sum() - 0.5 * spread

    def bound_after_update(self, stats, old: BGMMParams, new: BGMMParams, bound: float) -> float:
        """The per-sample ELBO at (q(z) of the last pass, the updated globals).

        ``bound`` is the ELBO at (that q(z), ``old``); the difference is linear
        in the statistics plus the change of the global term.
        """
        m = self.moments(stats, old)
        units = float(stats["nk"].sum())
        change = (self.expected_log_joint(m, new) - self.expected_log_joint(m, old)
                  + self.global_bound(new) - self.global_bound(old))
        return bound + float(change) / units

    # ------------------------------------------------------------ predictive
    def predictive_log_prob(self, params: BGMMParams, X: torch.Tensor) -> torch.Tensor:
        """log weights_k + log St(x | m_k, L_k, nu_k + 1 - D), shape (n, K), float64.

        The posterior predictive of each component under q (Bishop 2006, eq. 10.81):
        a Student-t with nu' = nu_k + 1 - D degrees of freedom and precision
        L_k = nu' beta_k / ((1 + beta_k) nu_k) covariances_k^-1.
        """
        K, D = params.means.shape
        nu, beta = params.degrees_of_freedom, params.mean_precision
        dof = nu + 1 - D
        s = dof * beta / ((1 + beta) * nu)
        gp = GaussianMixtureParams(torch.full((K,), 1.0 / K, dtype=F64, device=nu.device),
                                   params.means, params.covariances, params.precisions_cholesky)
        maha = (2 * (self.gm.log_normalisers(gp) - self.gm.log_joint(gp, X).to(F64))).clamp_min(0.0)
        log_det_l = D * s.log() + 2 * log_det_cholesky(params.precisions_cholesky,
                                                       self.covariance_type, D)
        log_t = (torch.lgamma(0.5 * (dof + D)) - torch.lgamma(0.5 * dof) + 0.5 * log_det_l
                 - 0.5 * D * (dof.log() + math.log(math.pi))
                 - 0.5 * (dof + D) * torch.log1p(s * maha / dof))
        return log_t + mean_weights(params, self.prior.process).log()


def sklearn_bound_offset(prior: BGMMPrior, n_components: int, n_features: int,
                         total_weight: float) -> float:
    """ELBO - scikit-learn's ``lower_bound_`` at the same (q(z), globals).

    scikit-learn drops the terms that do not depend on q once the globals are
    at their optimum given q(z) (and with ``reg_covar=0``): the prior's
    normalisers and -N D/2 log 2 pi.  Per component: D/2 log beta0 +
    nu0/2 log |W0^-1| - nu0 D/2 log 2 - sum_i lgamma((nu0 - i)/2); for the
    weights lgamma(K alpha0) - K lgamma(alpha0) (Dirichlet) or K log gamma0
    (Dirichlet process).
    """
    K, D = n_components, n_features
    nu0 = prior.degrees_of_freedom
    g = prior.weight_concentration
    weights = K * math.log(g) if prior.process else math.lgamma(K * g) - K * math.lgamma(g)
    lg = sum(math.lgamma(0.5 * (nu0 - i)) for i in range(D))
    per_component = (0.5 * D * math.log(prior.mean_precision)
                     + 0.5 * nu0 * float(log_det_prior_covariance(prior, D))
                     - 0.5 * nu0 * D * math.log(2.0) - lg)
    return weights - 0.5 * total_weight * D * LOG_2PI + K * per_component
