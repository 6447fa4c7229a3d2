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


class DegenerateComponentWarning(UserWarning):
    """A component lost all its samples and was re-seeded."""


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


@dataclass(frozen=True)
class Moments:
    """Weighted moments of the data per component, free of any anchor (float64).

    Attributes
    ----------
    nk : Tensor, shape (K,)
        Summed responsibilities (effective counts).
    means : Tensor, shape (K, D)
        Responsibility-weighted means.
    covariances : Tensor
        Weighted covariances about those means, without ``reg_covar``:
        (K, D, D) full, (D, D) tied (pooled over components), (K, D) diag
        and spherical (per feature; spherical averages them last).
    """

    nk: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor


@dataclass(frozen=True)
class _Prepared:
    """Per-iteration constants of the E-step, in the compute dtype.

    ``centre`` c = sum_k pi_k mu_k (float64): data and means are shifted by it
    before the cast to the compute dtype, so float32 never sees large offsets.
    ``log_norm`` = log pi_k + log det U_k - D/2 log 2 pi, shape (K,).
    ``a`` and ``b`` are the type-specific maps of the Mahalanobis term:

    * full: a = [U_1 | ... | U_K], shape (D, K*D), and b = the concatenated
      -(mu_k - c)^T U_k, shape (K*D,), so that one GEMM (x - c)^T a + b gives
      every whitened residual y_k = U_k^T (x - mu_k) at once, laid out
      (n, K, D) (the bias is added by the GEMM, whose inner dimension stays
      D: a D+1 column would cost BLAS its aligned kernel, ~1.7x the time);
    * tied: a = U (D, D); b = (mu - c) U, shape (K, D);
    * diag: a = U^2, the precisions (K, D); b = (mu - c) U^2 (K, D);
    * spherical: a = U^2 (K,); b = mu - c (K, D).
    """

    centre: torch.Tensor
    log_norm: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor


def _normalise_log(log_joint: torch.Tensor):
    """Posterior and log-normaliser by log-sum-exp, with one exp pass.

    Returns
    -------
    resp : Tensor, shape (n, K)
        softmax of each row.
    log_px : Tensor, shape (n,)
        logsumexp of each row.
    """
    top = log_joint.amax(1, keepdim=True)
    # terms below exp(floor) are < 1e-34 of the largest: clamping them keeps
    # exp off denormal numbers, which are ~5x slower on CPUs
    floor = -80.0 if log_joint.dtype == torch.float32 else -700.0
    resp = (log_joint - top).clamp_min_(floor).exp_()
    total = resp.sum(1, keepdim=True)
    resp /= total
    return resp, (top + total.log()).squeeze(1)


class GaussianMixtureModel:
    """E-step, M-step and density of a Gaussian mixture.

    The E-step is built from large matrix products over all components at
    once: for ``full`` one GEMM of the chunk with the K precision factors side
    by side gives every whitened residual y_nk = U_k^T (x_n - mu_k); for the
    other types the Mahalanobis term expands into GEMMs with K columns.  The
    full-covariance scatter is accumulated in the whitened coordinates (unit
    scale, well conditioned in float32) and mapped back in float64.

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
        self._cache: tuple | None = None
        self._buffer: torch.Tensor | None = None
        self.n_reseeded = 0

    def work_per_row(self, n_components: int, n_features: int) -> int:
        """Elements of E-step work memory per data row: K*D for full (the
        whitened residuals), K + D otherwise."""
        if self.covariance_type == "full":
            return n_components * n_features
        return n_components + n_features

    # ----------------------------------------------------------------- density
    def prepare(self, params: GaussianMixtureParams, dtype: torch.dtype) -> _Prepared:
        """E-step constants for ``params`` (memoised for the last params seen)."""
        if self._cache is not None and self._cache[0] is params and self._cache[1] == dtype:
            return self._cache[2]
        f64 = torch.float64
        means, U = params.means.to(f64), params.precisions_cholesky.to(f64)
        K, D = means.shape
        centre = params.weights.to(f64) @ means
        mc = means - centre
        ct = self.covariance_type
        if ct == "full":
            a = U.permute(1, 0, 2).reshape(D, K * D)
            b = -(mc.unsqueeze(1) @ U).reshape(K * D)
            log_det = U.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        elif ct == "tied":
            a, b = U, mc @ U
            log_det = U.diagonal().log().sum().expand(K)
        elif ct == "diag":
            a, b = U.square(), mc * U.square()
            log_det = U.log().sum(-1)
        else:
            a, b = U.square(), mc
            log_det = D * U.log()
        log_norm = params.weights.to(f64).log() + log_det - 0.5 * D * math.log(2 * math.pi)
        prep = _Prepared(centre, log_norm.to(dtype), a.to(dtype).contiguous(), b.to(dtype).contiguous())
        self._cache = (params, dtype, prep)
        return prep

    def _mahalanobis(self, prep: _Prepared, Xc: torch.Tensor):
        """Squared Mahalanobis distances, shape (n, K), and for ``full`` the
        whitened residuals y_nk, shape (n, K, D); None otherwise."""
        ct = self.covariance_type
        if ct == "full":
            n, D = Xc.shape
            KD = prep.a.shape[1]
            out = self._workspace(n * KD, Xc).view(n, KD)
            Y = torch.addmm(prep.b, Xc, prep.a, out=out).view(n, KD // D, D)
            # one fused pass, no squared copy of Y
            return torch.linalg.vector_norm(Y, dim=2).square_(), Y
        if ct == "tied":
            Y = Xc @ prep.a
            maha = Y.square().sum(1, keepdim=True) - 2 * Y @ prep.b.mT + prep.b.square().sum(1)
        elif ct == "diag":
            b_const = (prep.b.square() / prep.a).sum(1)
            maha = Xc.square() @ prep.a.mT - 2 * Xc @ prep.b.mT + b_const
        else:
            dist = Xc.square().sum(1, keepdim=True) - 2 * Xc @ prep.b.mT + prep.b.square().sum(1)
            maha = dist * prep.a
        return maha.clamp_min_(0.0), None

    def _workspace(self, size: int, like: torch.Tensor) -> torch.Tensor:
        """A reused flat buffer of at least ``size`` elements for the chunk's residuals.

        A fresh multi-megabyte tensor per chunk comes from the system (mmap)
        and pays a page fault on every first touch: as much as the GEMM
        that fills it. The buffer lives until the next chunk; the residuals
        are never kept beyond their own chunk.
        """
        buf = self._buffer
        if buf is None or buf.numel() < size or buf.dtype != like.dtype or buf.device != like.device:
            buf = torch.empty(size, dtype=like.dtype, device=like.device)
            self._buffer = buf
        return buf[:size]

    def _centred(self, prep: _Prepared, X: torch.Tensor) -> torch.Tensor:
        """x - c in the data's own precision, then cast to the compute dtype."""
        return (X - prep.centre.to(X.dtype)).to(self.dtype)

    def log_joint(self, params: GaussianMixtureParams, X: torch.Tensor) -> torch.Tensor:
        """log p(x, z=k) for every sample and component.

        Parameters
        ----------
        X : Tensor, shape (n, D)

        Returns
        -------
        Tensor, shape (n, K)
        """
        prep = self.prepare(params, self.dtype)
        maha, _ = self._mahalanobis(prep, self._centred(prep, X))
        return prep.log_norm - 0.5 * maha

    # ----------------------------------------------------------------- E-step
    def statistics_from_responsibilities(
        self, params: GaussianMixtureParams, X, resp, weight, *, prep=None, Xc=None, Y=None
    ) -> dict[str, torch.Tensor]:
        """Expected sufficient statistics of a batch given responsibilities.

        Taken relative to the anchor ``params``: its centre c for tied, diag and
        spherical; its whitened residuals y_nk = U_k^T (x_n - mu_k) for full.

        Parameters
        ----------
        X : Tensor, shape (n, D)
        resp : Tensor, shape (n, K)
            q(z = k | x_n), rows summing to 1.
        weight : Tensor of shape (n,) or None
        prep, Xc, Y : optional
            The E-step's own intermediate results, when already computed.

        Returns
        -------
        dict of float64 tensors
            ``nk`` (K,) and ``s1`` (K, D): sum_n r_nk y_nk (full) or
            sum_n r_nk (x_n - c); ``s2``: (K, D, D) sum r y y^T (full),
            (D, D) sum_n w_n (x_n - c)(x_n - c)^T (tied), (K, D)
            sum r (x - c)^2 elementwise (diag, spherical).
        """
        f64 = torch.float64
        if prep is None:
            prep = self.prepare(params, self.dtype)
        if Xc is None:
            Xc = self._centred(prep, X)
        resp = resp.to(Xc.dtype)
        rw = resp if weight is None else resp * weight[:, None].to(resp.dtype)
        stats = {"nk": rw.sum(0, dtype=f64)}
        ct = self.covariance_type
        if ct == "full":
            if Y is None:
                Y = self._mahalanobis(prep, Xc)[1]
            Yk, rwk = self._active_rows(Y, rw)  # (K, n', D), (K, n')
            weighted = Yk * rwk.unsqueeze(2)
            stats["s1"] = weighted.sum(1).to(f64)
            stats["s2"] = torch.bmm(weighted.mT, Yk).to(f64)
            return stats
        stats["s1"] = (rw.mT @ Xc).to(f64)
        if ct == "tied":
            xw = Xc if weight is None else Xc * weight[:, None].to(Xc.dtype)
            stats["s2"] = (xw.mT @ Xc).to(f64)
        else:
            stats["s2"] = (rw.mT @ Xc.square()).to(f64)
        return stats

    def _active_rows(self, Y: torch.Tensor, rw: torch.Tensor):
        """Per component, only the rows whose responsibility is not negligible.

        In float32, a row with r_nk < 1e-10 changes component k's sums by less
        than float32 rounding, yet costs a full D x D rank-one update.  When
        clusters are well separated most rows matter to one component, so the
        scatter GEMM runs over (K, c, D) with c = the largest number of active
        rows of any component (padded with zero weights), instead of (K, n, D).
        float64 keeps every row.

        Parameters
        ----------
        Y : Tensor, shape (n, K, D)
            Whitened residuals.
        rw : Tensor, shape (n, K)
            Weighted responsibilities.

        Returns
        -------
        Yk : Tensor, shape (K, c, D)
        rwk : Tensor, shape (K, c)
        """
        n, K, D = Y.shape
        if self.dtype == torch.float32 and n >= 64:
            # the active (component, row) pairs, grouped by component, rows ascending
            k, i = torch.nonzero(rw.T > 1e-10).unbind(1)
            counts = torch.bincount(k, minlength=K)
            width = int(counts.max()) if k.numel() else 0
            if width <= n // 2:
                # pair j goes to slot j - start[k] of its component; unused slots
                # keep weight 0 and point at row 0
                slot = torch.arange(k.numel(), device=rw.device) - (torch.cumsum(counts, 0) - counts)[k]
                dest = k * width + slot
                flat = torch.zeros(K * width, dtype=torch.int64, device=rw.device)
                flat[dest] = i * K + k  # row (i, k) of Y viewed as (n * K, D)
                kept = torch.zeros(K * width, dtype=rw.dtype, device=rw.device)
                kept[dest] = rw[i, k]
                Yk = Y.reshape(n * K, D).index_select(0, flat).view(K, width, D)
                return Yk, kept.view(K, width)
        return Y.transpose(0, 1), rw.T

    def expected_statistics(self, params: GaussianMixtureParams, X, weight):
        """E-step on one batch: responsibilities by log-sum-exp, then statistics.

        Returns
        -------
        stats : dict
            See :meth:`statistics_from_responsibilities`.
        log_likelihood : float64 scalar tensor
            sum_n w_n log p(x_n).
        """
        prep = self.prepare(params, self.dtype)
        Xc = self._centred(prep, X)
        maha, Y = self._mahalanobis(prep, Xc)
        resp, log_px = _normalise_log(prep.log_norm - 0.5 * maha)
        stats = self.statistics_from_responsibilities(params, X, resp, weight, prep=prep, Xc=Xc, Y=Y)
        lp = log_px.to(torch.float64)
        log_lik = lp.sum() if weight is None else lp @ weight.to(torch.float64)
        return stats, log_lik

    # ----------------------------------------------------------------- M-step
    def moments(self, stats, params: GaussianMixtureParams) -> Moments:
        """Statistics taken against the anchor ``params``, in anchor-free form."""
        f64 = torch.float64
        nk = stats["nk"] + 10 * torch.finfo(f64).eps
        anchor_means = params.means.to(f64)
        D = anchor_means.shape[1]
        shift = stats["s1"] / nk[:, None]
        ct = self.covariance_type
        if ct == "full":
            # back from whitened coordinates: x - mu_k = C_k y with C_k = U_k^-T
            U = params.precisions_cholesky.to(f64)
            eye = torch.eye(D, dtype=f64, device=anchor_means.device)
            C = torch.linalg.solve(U.mT, eye.expand_as(U))
            means = anchor_means + (C @ shift.unsqueeze(-1)).squeeze(-1)
            white = stats["s2"] / nk[:, None, None] - shift.unsqueeze(2) * shift.unsqueeze(1)
            return Moments(nk, means, C @ white @ C.mT)
        means = params.weights.to(f64) @ anchor_means + shift
        if ct == "tied":
            return Moments(nk, means, (stats["s2"] - (shift.mT * nk) @ shift) / nk.sum())
        return Moments(nk, means, (stats["s2"] / nk[:, None] - shift.square()).clamp_min(0.0))

    def _reseed_empty(self, moments: Moments) -> Moments:
        """Re-seed components that hold (next to) no weight.

        Each empty component takes half of the component with the largest
        weighted spread n_k tr(Sigma_k), split along that component's
        principal axis: the two means sit at mu +- sqrt(lambda) v.  Counted in
        ``n_reseeded``, so that the estimator can report it.
        """
        nk = moments.nk
        empty = torch.nonzero(nk < 1e-9 * nk.sum()).flatten().tolist()
        if not empty or len(empty) == nk.shape[0]:
            return moments
        nk, means, cov = nk.clone(), moments.means.clone(), moments.covariances.clone()
        ct = self.covariance_type
        for e in empty:
            spread = {"full": lambda: cov.diagonal(dim1=1, dim2=2).sum(1),
                      "tied": lambda: torch.ones_like(nk),
                      "diag": lambda: cov.sum(1), "spherical": lambda: cov.sum(1)}[ct]()
            j = int(torch.argmax(nk * spread))
            if ct in ("full", "tied"):
                vals, vecs = torch.linalg.eigh(cov[j] if ct == "full" else cov)
                step = vals[-1].clamp_min(self.reg_covar).sqrt() * vecs[:, -1]
            else:
                d = int(torch.argmax(cov[j]))
                step = torch.zeros_like(means[j])
                step[d] = cov[j, d].clamp_min(self.reg_covar).sqrt()
            means[e], means[j] = means[j] + step, means[j] - step
            nk[e] = nk[j] = nk[j] / 2
            if ct != "tied":
                cov[e] = cov[j]
            self.n_reseeded += 1
        return Moments(nk, means, cov)

    def from_moments(self, moments: Moments) -> GaussianMixtureParams:
        """Parameters from moments: re-seed empty components, regularise the
        covariances, factor them."""
        moments = self._reseed_empty(moments)
        ct = self.covariance_type
        cov = moments.covariances
        if ct in ("full", "tied"):
            eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
            cov = 0.5 * (cov + cov.mT) + self.reg_covar * eye
        elif ct == "diag":
            cov = cov + self.reg_covar
        else:
            cov = cov.mean(1) + self.reg_covar
        weights = moments.nk / moments.nk.sum()
        return GaussianMixtureParams(weights, moments.means, cov,
                                     precisions_cholesky_from_covariances(cov, ct))

    def maximize(self, stats, params: GaussianMixtureParams) -> GaussianMixtureParams:
        """Closed-form maximiser of E_q[log p(x, z)] (the M-step), in float64.

        ``params`` is the anchor the statistics were taken against.
        """
        return self.from_moments(self.moments(stats, params))

    def moments_of(self, params: GaussianMixtureParams) -> Moments:
        """The moments that ``params`` were made from (covariances less reg_covar)."""
        f64 = torch.float64
        cov = params.covariances.to(f64)
        ct = self.covariance_type
        if ct in ("full", "tied"):
            cov = cov - self.reg_covar * torch.eye(cov.shape[-1], dtype=f64, device=cov.device)
        elif ct == "diag":
            cov = cov - self.reg_covar
        else:
            cov = (cov - self.reg_covar)[:, None].expand_as(params.means).to(f64)
        return Moments(params.weights.to(f64), params.means.to(f64), cov)

    def blend(self, old: Moments, new: Moments, rho: float) -> Moments:
        """(1 - rho) old + rho new, as moments of the pooled weighted data.

        Each side is first normalised to unit total weight; means and
        covariances combine with the between-group correction (Chan et al.'s
        parallel update), so no cancellation-prone raw moments are formed.
        """
        na = (1 - rho) * old.nk / old.nk.sum()
        nb = rho * new.nk / new.nk.sum()
        n = na + nb
        means = (na[:, None] * old.means + nb[:, None] * new.means) / n[:, None]
        da, db = old.means - means, new.means - means
        ct = self.covariance_type
        if ct == "full":
            def part(w, C, d):
                return w[:, None, None] * (C + d.unsqueeze(2) * d.unsqueeze(1))

            cov = (part(na, old.covariances, da) + part(nb, new.covariances, db)) / n[:, None, None]
        elif ct == "tied":
            cov = ((1 - rho) * old.covariances + rho * new.covariances
                   + (da.mT * na) @ da + (db.mT * nb) @ db)
        else:
            cov = (na[:, None] * (old.covariances + da.square())
                   + nb[:, None] * (new.covariances + db.square())) / n[:, None]
        return Moments(n, means, cov)

    def anchor(self, means: torch.Tensor) -> GaussianMixtureParams:
        """Parameters that serve only as an anchor for statistics from given
        responsibilities (initialisation): equal weights, unit precisions."""
        K, D = means.shape
        f64 = torch.float64
        eye = torch.eye(D, dtype=f64, device=means.device)
        U = {"full": eye.expand(K, D, D), "tied": eye,
             "diag": torch.ones(K, D, dtype=f64, device=means.device),
             "spherical": torch.ones(K, dtype=f64, device=means.device)}[self.covariance_type]
        weights = torch.full((K,), 1.0 / K, dtype=f64, device=means.device)
        return GaussianMixtureParams(weights, means.to(f64), U, U)

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

