"""Gaussian components, four covariance structures, with missing values inside EM.

log p(x | z=k) = log N(x | mu_k, Sigma_k), ``loc`` mu (K, D) and ``covariance``
Sigma shaped by ``covariance_type`` as in scikit-learn: (K, D, D) full,
(D, D) tied, (K, D) diag, (K,) spherical.  (``GaussianMixture`` is the fast,
specialised estimator for complete Gaussian data; this family serves
``Mixture``, products over column groups, missing values and HMM emissions.)

Statistics are taken relative to the E-step's means (the anchor), so that
sums of squares never cancel: n_k, s1_k = sum r (x - mu_k) and s2_k = sum r
(x - mu_k)(x - mu_k)^T (full/tied), or elementwise squares per column
(diag/spherical, with per-column observed weights).

Missing entries (NaN, missing at random; Ghahramani & Jordan, 1994).  For
diag and spherical the columns are independent given k: a missing entry
drops out.  For full and tied, with o the observed coordinates of a row,

    p(x_o | k)         = N(x_o | mu_o, Sigma_oo)
    E[x_m | x_o, k]    = mu_m + Sigma_mo Sigma_oo^-1 (x_o - mu_o)
    Cov[x_m | x_o, k]  = Sigma_mm - Sigma_mo Sigma_oo^-1 Sigma_om,

and the E-step adds E[x] and E[x x^T] = E[x] E[x]^T + Cov to the statistics.
All rows are handled at full size D through the padded matrix
Sigma~ = Sigma o o^T + diag(1 - o) (the missing coordinates become
independent unit ones): its Cholesky factor gives log det Sigma_oo, and with
P = Sigma~^-1 (o o^T), E[x] - mu = Sigma P (x - mu)_o and
Cov = Sigma - Sigma P Sigma.

Complete diag and spherical data take a fast path (:meth:`Gaussian._fast`):
the rows centred at c (per column, the precision-weighted mean of the
components' means) laid out F = [x - c | (x - c)^2], shape (n, 2D), so that the log-densities are
one GEMM F W + b and both statistics one GEMM resp^T F (over row blocks
whose sums add up in float64); the statistics against the anchor mu_k
follow in float64 from e_k = mu_k - c (s1 = S1 - n e, s2 = S2 - 2 e S1 +
n e^2).  This is ``GaussianMixture``'s float32 E-step and is done in the
compute dtype where its rounding is small: the components whose estimated
float32 error (:func:`elbokit.models.gaussian_mixture.float32_error`)
exceeds ``FLOAT32_TOLERANCE`` nats per row send the batch to float64.
Everything else (missing entries, full and tied) computes in float64
whatever the compute dtype (its quadratic forms are taken on uncentred rows).
"""

from __future__ import annotations

import torch

from elbokit.families.base import F64, LOG_2PI, Family, has_missing, observed

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
_BLOCK = 16384  # rows per GEMM of the fast statistics in float32 (each block's sum added in float64)


def _full_covariances(cov: torch.Tensor, covariance_type: str, K: int, D: int) -> torch.Tensor:
    """Any covariance shape as (K, D, D)."""
    if covariance_type == "full":
        return cov
    if covariance_type == "tied":
        return cov.expand(K, D, D)
    if covariance_type == "diag":
        return torch.diag_embed(cov)
    return cov[:, None, None] * torch.eye(D, dtype=cov.dtype, device=cov.device)


def _cholesky(cov: torch.Tensor, what: str) -> torch.Tensor:
    L, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        raise ValueError(
            f"a {what} covariance is not positive definite: increase reg_covar, decrease "
            "n_components, or use dtype='float64'."
        )
    return L


def masked_gaussian(loc: torch.Tensor, cov: torch.Tensor, X: torch.Tensor, need_moments: bool):
    """Gaussian terms of rows with missing entries, per row and component (float64).

    Parameters
    ----------
    loc : (K, D); cov : (K, D, D)
    X : (n, D) with NaN for missing entries
    need_moments : bool
        Also return the conditional shift and the matrices for the statistics.

    Returns
    -------
    maha : (n, K)
        (x_o - mu_o)^T Sigma_oo^-1 (x_o - mu_o).
    log_det : (n, K)
        log det Sigma_oo.
    n_obs : (n,)
        Number of observed coordinates.
    shift : (n, K, D) or None
        E[x | x_o, k] - mu_k.
    A : (n, K, D, D) or None
        Sigma P, so that Cov[x | x_o, k] = Sigma - A Sigma.
    """
    X = X.to(F64)
    o = (~torch.isnan(X)).to(F64)  # (n, D)
    d = (X.nan_to_num(0.0)[:, None, :] - loc[None]) * o[:, None, :]  # (n, K, D)
    oo = o[:, :, None] * o[:, None, :]  # (n, D, D)
    eye = torch.eye(X.shape[1], dtype=F64, device=X.device)
    padded = cov[None] * oo[:, None] + torch.diag_embed(1 - o)[:, None]  # (n, K, D, D)
    L = _cholesky(padded, "component")
    log_det = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    y = torch.linalg.solve_triangular(L, d.unsqueeze(-1), upper=False).squeeze(-1)
    maha = y.square().sum(-1)
    n_obs = o.sum(1)
    if not need_moments:
        return maha, log_det, n_obs, None, None
    P = torch.cholesky_solve(eye.expand_as(padded), L) * oo[:, None]  # Sigma~^-1 on o x o
    A = cov[None] @ P
    shift = (A @ d.unsqueeze(-1)).squeeze(-1)
    return maha, log_det, n_obs, shift, A


class Gaussian(Family):
    """Gaussian components.

    Parameters
    ----------
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    reg_covar : float, default=1e-6
        Added to the diagonal of every covariance in the M-step.
    """

    name = "gaussian"

    def __init__(self, covariance_type="full", reg_covar=1e-6):
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type={covariance_type!r} is not supported: use one of "
                f"{', '.join(map(repr, COVARIANCE_TYPES))}."
            )
        self._cache = None
        self._fast_cache = None

    def get_config(self):
        return {"covariance_type": self.covariance_type, "reg_covar": float(self.reg_covar)}

    @property
    def factorised(self) -> bool:
        return self.covariance_type in ("diag", "spherical")

    def work_per_row(self, n_components, n_features, missing=False):
        if missing and not self.factorised:
            return n_components * n_features * (n_features + 2)
        return n_components * n_features

    # ------------------------------------------------------------ density
    def _dense(self, params):
        K, D = params["loc"].shape
        return _full_covariances(params["covariance"], self.covariance_type, K, D)

    def _terms(self, params, X, need_moments=False):
        """(maha, log_det, n_obs, shift, A) for X, memoised for the last (params, X)."""
        c = self._cache
        if c is not None and c[0] is params and c[1] is X and (c[2] or not need_moments):
            return c[3]
        key = X
        X = X.to(F64)  # quadratic forms of uncentred data lose too much in float32
        loc = params["loc"]
        K, D = loc.shape
        if self.factorised:
            var = params["covariance"]
            var = var[:, None].expand(K, D) if self.covariance_type == "spherical" else var
            X0, mask = observed(X)
            prec = var.reciprocal()
            m = loc
            o = torch.ones_like(X0) if mask is None else mask
            # sum_j o_j (x_j - mu_kj)^2 / var_kj as GEMMs
            maha = (X0.square() @ prec.mT - 2 * X0 @ (m * prec).mT + o @ (m.square() * prec).mT)
            log_det = o @ var.log().mT
            out = (maha.clamp_min(0.0), log_det, o.sum(1), None, None)
        elif has_missing(X):
            need_moments = True  # the statistics of this batch follow its log-density
            out = masked_gaussian(loc, self._dense(params), X, need_moments)
        else:
            L = _cholesky(self._dense(params), self.covariance_type)
            diff = (X[None] - loc[:, None, :]).mT  # (K, D, n)
            y = torch.linalg.solve_triangular(L, diff, upper=False)
            maha = y.square().sum(1).mT  # (n, K)
            log_det = (2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1))[None].expand_as(maha)
            out = (maha, log_det, torch.full((X.shape[0],), float(D), dtype=X.dtype,
                                             device=X.device), None, None)
        self._cache = (params, key, need_moments, out)
        return out

    def _variances(self, params):
        """The (K, D) per-column variances of a factorised family."""
        var = params["covariance"]
        K, D = params["loc"].shape
        return var[:, None].expand(K, D) if self.covariance_type == "spherical" else var

    def _fast(self, params, X):
        """(dtype, e = loc - c (K, D) float64, F = [x - c | (x - c)^2] (n, 2D)) for the
        fast path of complete diag/spherical rows, or None (missing entries, other types);
        memoised for the last (params, X).

        The dtype is X's unless some component's estimated float32 error is above
        ``FLOAT32_TOLERANCE`` nats per row (a component narrow next to its distance
        from c): then float64."""
        if not self.factorised or params is None or X.dtype not in (torch.float32, F64):
            return None
        c = self._fast_cache
        if c is not None and c[0] is params and c[1] is X:
            return c[2]
        if has_missing(X):
            self._fast_cache = (params, X, None)
            return None
        loc, var = params["loc"].to(F64), self._variances(params).to(F64)
        # the centre: per column, the precision-weighted mean of the means, so that the narrow
        # components (whose sums cancel the most) sit nearest it; rounded to X's dtype, so that
        # x - c is exact but for its own rounding
        prec = var.reciprocal()
        centre = (prec * loc).sum(0) / prec.sum(0)
        centre = torch.where(torch.isfinite(centre), centre, loc.mean(0)).to(X.dtype)
        dtype = X.dtype
        if dtype != F64:
            from types import SimpleNamespace

            from elbokit.models.gaussian_mixture import FLOAT32_TOLERANCE, float32_error

            # (the estimate centres the means at weights @ means: here they come centred)
            like = SimpleNamespace(means=loc - centre.to(F64), covariances=var,
                                   precisions_cholesky=prec.sqrt(),
                                   weights=torch.zeros(loc.shape[0], dtype=F64, device=loc.device))
            if not bool((float32_error(like, "diag") <= FLOAT32_TOLERANCE).all()):
                dtype = F64
        n, D = X.shape
        F = None if c is None or c[2] is None else c[2][2]  # the last batch's buffer, reused
        if F is None or F.shape != (n, 2 * D) or F.dtype != dtype or F.device != X.device:
            F = torch.empty(n, 2 * D, dtype=dtype, device=X.device)
        self._fast_cache = None
        torch.sub(X if dtype == X.dtype else X.to(dtype), centre.to(dtype), out=F[:, :D])
        torch.mul(F[:, :D], F[:, :D], out=F[:, D:])
        centre = centre.to(F64)
        out = (dtype, loc - centre, F)
        self._fast_cache = (params, X, out)
        return out

    def log_prob(self, params, X):
        fast = self._fast(params, X)
        if fast is not None:
            # -1/2 sum_d prec (x - mu)^2 = F [e prec ; -prec / 2] - 1/2 sum_d prec e^2
            dtype, e, F = fast
            var = self._variances(params).to(F64)
            prec = var.reciprocal()
            W = torch.cat([e * prec, -0.5 * prec], 1).mT  # (2D, K)
            b = -0.5 * ((prec * e.square()).sum(1) + var.log().sum(1) + e.shape[1] * LOG_2PI)
            return torch.addmm(b.to(dtype), F, W.to(dtype)).to(X.dtype)
        maha, log_det, n_obs, _, _ = self._terms(params, X)
        return -0.5 * (maha + log_det + n_obs[:, None] * LOG_2PI).to(X.dtype)

    # ------------------------------------------------------------ E-step
    def statistics(self, params, X, resp):
        K = resp.shape[1]
        D = X.shape[1]
        loc = params["loc"] if params is not None else torch.zeros(K, D, dtype=F64, device=X.device)
        fast = self._fast(params, X) if self.factorised else None
        if fast is not None:
            return self._fast_statistics(fast, resp)
        if self.factorised:
            X0, mask = observed(X)
            Xd, r = X0.to(F64), resp.to(F64)
            o = torch.ones_like(Xd) if mask is None else mask.to(F64)
            n = r.mT @ o
            s1 = r.mT @ Xd - n * loc
            s2 = r.mT @ Xd.square() - 2 * loc * (r.mT @ Xd) + n * loc.square()
            return {"n": n, "s1": s1, "s2": s2}
        r = resp.to(F64)
        nk = r.sum(0)
        if params is not None and has_missing(X):
            _, _, _, shift, A = self._terms(params, X, need_moments=True)
            cov = self._dense(params)
            s1 = torch.einsum("nk,nkd->kd", r, shift)
            s2 = torch.einsum("nk,nkd,nke->kde", r, shift, shift)
            s2 = s2 + nk[:, None, None] * cov - torch.einsum("nk,nkde->kde", r, A) @ cov
        else:
            if has_missing(X):  # initialisation: observed entries at the means
                from elbokit.families.base import fill_nan_with_column_means
                X = fill_nan_with_column_means(X)
            Xc = X.to(F64)[None] - loc[:, None, :]  # (K, n, D)
            weighted = Xc * r.mT[:, :, None]
            s1 = weighted.sum(1)
            s2 = weighted.mT @ Xc
        return {"nk": nk, "s1": s1, "s2": s2}

    @staticmethod
    def _fast_statistics(fast, resp):
        """The factorised statistics from the fast path's F: S = resp^T F (float32 GEMMs over
        row blocks, each block's sums added in float64; one float64 GEMM in float64), then
        against the anchor: s1 = S1 - n e, s2 = S2 - 2 e S1 + n e^2."""
        dtype, e, F = fast
        if resp.dtype == F64:
            dtype = F64
        n = resp.sum(0, dtype=F64)
        D = e.shape[1]
        r, Fd = resp.to(dtype), F.to(dtype)
        if dtype == F64:
            S = r.mT @ Fd
        else:  # one batched GEMM over the whole blocks, one for the rest
            n_rows, K = r.shape
            full = n_rows - n_rows % _BLOCK
            r, Fd = r.contiguous(), Fd.contiguous()
            S = (r[full:].mT @ Fd[full:]).to(F64)
            if full:
                blocks = r[:full].view(-1, _BLOCK, K).mT @ Fd[:full].view(-1, _BLOCK, 2 * D)
                S += blocks.sum(0, dtype=F64)
        S1, S2 = S[:, :D], S[:, D:]
        nd = n[:, None].expand_as(e)
        s1 = S1 - nd * e
        s2 = S2 - 2 * e * S1 + nd * e.square()
        return {"n": nd.clone(), "s1": s1, "s2": s2}

    # ------------------------------------------------------------ M-step
    def maximize(self, stats, params, fixed=None):
        fixed = fixed or {}
        ct = self.covariance_type
        if self.factorised:
            n, s1, s2 = stats["n"], stats["s1"], stats["s2"]
            K, D = n.shape
            anchor = params["loc"] if params is not None else torch.zeros_like(s1)
            safe = n.clamp_min(1e-300)
            loc = torch.where(n > 0, anchor + s1 / safe, anchor)
            if "loc" in fixed:
                loc = fixed["loc"].to(F64)
            e = loc - anchor
            sq = (s2 - 2 * e * s1 + n * e.square()).clamp_min(0.0)  # sum r o (x - loc)^2
            if ct == "diag":
                var = torch.where(n > 0, sq / safe, torch.ones_like(sq)) + self.reg_covar
            else:
                var = sq.sum(1) / n.sum(1).clamp_min(1e-300) + self.reg_covar
            return {"loc": loc, "covariance": fixed.get("covariance", var)}
        nk, s1, s2 = stats["nk"], stats["s1"], stats["s2"]
        K, D = s1.shape
        anchor = params["loc"] if params is not None else torch.zeros_like(s1)
        safe = nk.clamp_min(1e-300)[:, None]
        loc = torch.where(nk[:, None] > 0, anchor + s1 / safe, anchor)
        if "loc" in fixed:
            loc = fixed["loc"].to(F64)
        e = loc - anchor
        scatter = (s2 - s1[:, :, None] * e[:, None, :] - e[:, :, None] * s1[:, None, :]
                   + nk[:, None, None] * e[:, :, None] * e[:, None, :])
        eye = torch.eye(D, dtype=F64, device=s1.device)
        if ct == "full":
            cov = torch.where(nk[:, None, None] > 0, scatter / safe[:, :, None], eye)
        else:
            cov = scatter.sum(0) / nk.sum().clamp_min(1e-300)
        cov = 0.5 * (cov + cov.mT) + self.reg_covar * eye
        return {"loc": loc, "covariance": fixed.get("covariance", cov)}

    def statistics_of(self, params, weights):
        w = weights.to(F64)
        loc, cov = params["loc"], params["covariance"]
        K, D = loc.shape
        if self.factorised:
            var = cov[:, None].expand(K, D) if self.covariance_type == "spherical" else cov
            n = w[:, None].expand(K, D).clone()
            return {"n": n, "s1": torch.zeros_like(loc), "s2": n * (var - self.reg_covar)}
        eye = torch.eye(D, dtype=F64, device=loc.device)
        base = cov - self.reg_covar * eye
        s2 = w[:, None, None] * base  # tied: the pooled scatter is sum_k s2_k = base * sum w
        return {"nk": w.clone(), "s1": torch.zeros_like(loc), "s2": s2}

    # ------------------------------------------------------------ the rest
    def sample(self, params, z, generator):
        loc = params["loc"]
        K, D = loc.shape
        L = torch.linalg.cholesky(self._dense(params))
        eps = torch.randn(z.shape[0], D, dtype=F64, device=loc.device, generator=generator)
        return loc[z] + (L[z] @ eps.unsqueeze(-1)).squeeze(-1)

    def mean(self, params):
        return params["loc"]

    def conditional_mean(self, params, X):
        if self.factorised or not has_missing(X):
            return super().conditional_mean(params, X)
        _, _, _, shift, _ = masked_gaussian(params["loc"], self._dense(params), X, True)
        return (params["loc"][None] + shift).to(X.dtype)

    def n_parameters(self, params):
        K, D = params["loc"].shape
        cov = {"full": K * D * (D + 1) / 2, "tied": D * (D + 1) / 2, "diag": K * D,
               "spherical": K}[self.covariance_type]
        return int(K * D + cov)

    def param_shapes(self, n_components, n_features):
        K, D = n_components, n_features
        cov = {"full": (K, D, D), "tied": (D, D), "diag": (K, D), "spherical": (K,)}
        return {"loc": (K, D), "covariance": cov[self.covariance_type]}
