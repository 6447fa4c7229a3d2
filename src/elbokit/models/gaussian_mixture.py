"""The Gaussian mixture: math only.

The joint is p(x, z=k) = pi_k N(x | mu_k, Sigma_k), with mixing weights pi
(``weights``), component means mu (``means``) and covariances Sigma
(``covariances``).  Everything is computed through the Cholesky factor of the
precision, U with Sigma^-1 = U U^T (``precisions_cholesky``, scikit-learn's
convention), so that the Mahalanobis term is ||U^T (x - mu)||^2 and
log det Sigma^-1 = 2 sum log diag U.

Shapes by ``covariance_type`` (K components, D features):

=========== ================= =====================
type        covariances       precisions_cholesky
=========== ================= =====================
full        (K, D, D)         (K, D, D), upper
tied        (D, D)            (D, D), upper
diag        (K, D)            (K, D)
spherical   (K,)              (K,)
=========== ================= =====================

Expected sufficient statistics are taken relative to an *anchor*: the means
the E-step used (and, for ``tied``, their weighted centre).  Sums of
centred quantities avoid the cancellation of E[xx^T] - mu mu^T in float32;
they accumulate in float64 across batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


@dataclass(frozen=True)
class GaussianMixtureParams:
    """Parameters of a Gaussian mixture (float64, on the compute device).

    Attributes
    ----------
    weights : Tensor, shape (K,)
    means : Tensor, shape (K, D)
    covariances : Tensor
        Shape by covariance type (see module docstring).
    precisions_cholesky : Tensor
        Shape by covariance type.
    """

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    precisions_cholesky: torch.Tensor

    def to(self, dtype=None, device=None) -> "GaussianMixtureParams":
        """The same parameters cast to ``dtype`` / moved to ``device``."""
        return GaussianMixtureParams(
            *(t.to(device=device, dtype=dtype) for t in
              (self.weights, self.means, self.covariances, self.precisions_cholesky))
        )


class DegenerateCovarianceError(ValueError):
    """A covariance matrix is not positive definite even after regularisation."""


def _cholesky_error(covariance_type: str) -> DegenerateCovarianceError:
    return DegenerateCovarianceError(
        f"Fitting the mixture model failed because some components have an "
        f"ill-defined empirical covariance (covariance_type={covariance_type!r}), "
        "for instance caused by singleton or collapsed samples. "
        "Decrease n_components, or increase reg_covar."
    )


def precisions_cholesky_from_covariances(cov: torch.Tensor, covariance_type: str) -> torch.Tensor:
    """U with U U^T = Sigma^-1, from the covariances.

    Parameters
    ----------
    cov : Tensor
        Covariances, shape by ``covariance_type``.

    Raises
    ------
    DegenerateCovarianceError
        If a covariance is not positive definite.
    """
    if covariance_type in ("full", "tied"):
        chol, info = torch.linalg.cholesky_ex(cov)
        if bool((info != 0).any()):
            raise _cholesky_error(covariance_type)
        eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device).expand_as(cov)
        return torch.linalg.solve_triangular(chol, eye, upper=False).mT
    if bool((cov <= 0).any()):
        raise _cholesky_error(covariance_type)
    return cov.rsqrt()


def precisions_from_cholesky(prec_chol: torch.Tensor, covariance_type: str) -> torch.Tensor:
    """Sigma^-1 = U U^T (or U^2 for diagonal types)."""
    if covariance_type in ("full", "tied"):
        return prec_chol @ prec_chol.mT
    return prec_chol.square()


def n_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    """Number of free parameters, for BIC/AIC."""
    K, D = n_components, n_features
    cov = {
        "full": K * D * (D + 1) / 2,
        "tied": D * (D + 1) / 2,
        "diag": K * D,
        "spherical": K,
    }[covariance_type]
    return int(cov + K * D + K - 1)


class GaussianMixtureModel:
    """E-step, M-step and density of a Gaussian mixture.

    Parameters
    ----------
    covariance_type : {"full", "tied", "diag", "spherical"}
    reg_covar : float
        Added to the diagonal of every covariance in the M-step.
    dtype : torch.dtype
        Compute dtype of the E-step (statistics are always float64).
    """

    def __init__(self, covariance_type: str, reg_covar: float, dtype: torch.dtype):
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.dtype = dtype

    # ----------------------------------------------------------------- density
    def _whitened_residuals(self, params: GaussianMixtureParams, X: torch.Tensor):
        """Residuals x - mu_k and their whitened form U_k^T (x - mu_k).

        Returns
        -------
        diff : Tensor, shape (K, n, D)
        white : Tensor, shape (K, n, D) for full/tied/diag, or None for spherical
        """
        means = params.means.to(X.dtype)
        prec_chol = params.precisions_cholesky.to(X.dtype)
        diff = X.unsqueeze(0) - means.unsqueeze(1)
        ct = self.covariance_type
        if ct in ("full", "tied"):
            white = torch.matmul(diff, prec_chol)
        elif ct == "diag":
            white = diff * prec_chol.unsqueeze(1)
        else:
            white = None
        return diff, white

    def _log_det_precision_chol(self, params: GaussianMixtureParams, n_features: int):
        """log det U per component, shape (K,) (or scalar for tied)."""
        U = params.precisions_cholesky
        ct = self.covariance_type
        if ct in ("full", "tied"):
            return U.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        if ct == "diag":
            return U.log().sum(-1)
        return n_features * U.log()

    def _log_joint_from_residuals(self, params, diff, white, n_features: int) -> torch.Tensor:
        """log pi_k + log N(x | mu_k, Sigma_k), shape (n, K)."""
        if white is None:  # spherical
            maha = diff.square().sum(-1) * params.precisions_cholesky.to(diff.dtype).square()[:, None]
        else:
            maha = white.square().sum(-1)
        log_det = self._log_det_precision_chol(params, n_features).to(diff.dtype)
        log_weights = params.weights.to(diff.dtype).log()
        const = n_features * math.log(2 * math.pi)
        log_gauss = -0.5 * (const + maha) + log_det.reshape(-1, 1)
        return (log_gauss + log_weights[:, None]).mT

    def log_joint(self, params: GaussianMixtureParams, X: torch.Tensor) -> torch.Tensor:
        """log p(x, z=k) for every sample and component.

        Parameters
        ----------
        X : Tensor, shape (n, D)

        Returns
        -------
        Tensor, shape (n, K)
        """
        diff, white = self._whitened_residuals(params, X)
        return self._log_joint_from_residuals(params, diff, white, X.shape[1])

    # ----------------------------------------------------------------- E-step
    def statistics_from_responsibilities(
        self, params: GaussianMixtureParams, X, resp, weight, diff=None
    ) -> dict[str, torch.Tensor]:
        """Expected sufficient statistics of a batch given responsibilities.

        Taken relative to the anchor ``params.means`` (and, for tied, the
        weighted centre c = sum_k pi_k mu_k).

        Parameters
        ----------
        X : Tensor, shape (n, D)
        resp : Tensor, shape (n, K)
            q(z = k | x_n), rows summing to 1.
        weight : Tensor of shape (n,) or None
        diff : Tensor of shape (K, n, D), optional
            x - mu_k when already computed.

        Returns
        -------
        dict
            ``nk`` (K,), ``s1`` (K, D) = sum r (x - mu_k); and ``s2``: (K, D, D)
            for full, (K, D) for diag/spherical, (D, D) = sum w (x - c)(x - c)^T
            for tied.  All float64.
        """
        rw = resp if weight is None else resp * weight[:, None].to(resp.dtype)
        f64 = torch.float64
        stats = {"nk": rw.sum(0, dtype=f64)}
        if diff is None:
            diff = X.unsqueeze(0) - params.means.to(X.dtype).unsqueeze(1)
        weighted = diff * rw.mT.unsqueeze(-1)  # (K, n, D)
        stats["s1"] = weighted.sum(1, dtype=f64)
        ct = self.covariance_type
        if ct == "tied":
            centre = params.weights.to(X.dtype) @ params.means.to(X.dtype)
            xc = X - centre
            xw = xc if weight is None else xc * weight[:, None].to(X.dtype)
            stats["s2"] = (xw.mT @ xc).to(f64)
        elif ct == "full":
            stats["s2"] = torch.bmm(weighted.mT, diff).to(f64)
        else:
            stats["s2"] = (weighted * diff).sum(1, dtype=f64)
        return stats

    def expected_statistics(self, params: GaussianMixtureParams, X, weight):
        """E-step on one batch: responsibilities by log-sum-exp, then statistics.

        Returns
        -------
        stats : dict
            See :meth:`statistics_from_responsibilities`.
        log_likelihood : float64 scalar tensor
            sum_n w_n log p(x_n).
        """
        diff, white = self._whitened_residuals(params, X)
        log_joint = self._log_joint_from_residuals(params, diff, white, X.shape[1])
        log_px = torch.logsumexp(log_joint, dim=1)
        resp = (log_joint - log_px[:, None]).exp()
        stats = self.statistics_from_responsibilities(params, X, resp, weight, diff=diff)
        lp = log_px.to(torch.float64)
        log_lik = lp.sum() if weight is None else (lp * weight.to(torch.float64)).sum()
        return stats, log_lik

    # ----------------------------------------------------------------- M-step
    def maximize(self, stats, params: GaussianMixtureParams) -> GaussianMixtureParams:
        """Closed-form maximiser of E_q[log p(x, z)] (the M-step), in float64.

        ``params`` is the anchor the statistics were taken against.
        """
        f64 = torch.float64
        nk = stats["nk"] + 10 * torch.finfo(f64).eps
        anchor = params.means.to(f64)
        shift = stats["s1"] / nk[:, None]  # new mean - anchor
        means = anchor + shift
        D = means.shape[1]
        eye = torch.eye(D, dtype=f64, device=means.device)
        ct = self.covariance_type
        if ct == "full":
            cov = stats["s2"] / nk[:, None, None] - shift[:, :, None] * shift[:, None, :]
            cov = 0.5 * (cov + cov.mT) + self.reg_covar * eye
        elif ct == "tied":
            centre = params.weights.to(f64) @ anchor
            between = (means - centre)
            cov = (stats["s2"] - (between.mT * nk) @ between) / nk.sum()
            cov = 0.5 * (cov + cov.mT) + self.reg_covar * eye
        else:
            var = (stats["s2"] / nk[:, None] - shift.square()).clamp_min(0.0)
            cov = var + self.reg_covar if ct == "diag" else var.mean(1) + self.reg_covar
        weights = nk / nk.sum()
        prec_chol = precisions_cholesky_from_covariances(cov, ct)
        return GaussianMixtureParams(weights, means, cov, prec_chol)

    # ----------------------------------------------------------------- sampling
    def sample(self, params: GaussianMixtureParams, n: int, generator: torch.Generator):
        """Draw ``n`` samples and their components.

        Returns
        -------
        X : Tensor, shape (n, D), float64
        z : Tensor, shape (n,), int64
        """
        K, D = params.means.shape
        device = params.means.device
        z = torch.multinomial(params.weights, n, replacement=True, generator=generator)
        z = z.sort().values
        eps = torch.randn(n, D, dtype=torch.float64, device=device, generator=generator)
        ct = self.covariance_type
        cov = params.covariances
        if ct == "full":
            chol = torch.linalg.cholesky(cov)[z]
            noise = (chol @ eps.unsqueeze(-1)).squeeze(-1)
        elif ct == "tied":
            noise = eps @ torch.linalg.cholesky(cov).mT
        elif ct == "diag":
            noise = eps * cov.sqrt()[z]
        else:
            noise = eps * cov.sqrt()[z, None]
        return params.means[z] + noise, z

