"""Factor analysers: Gaussian components with a low-rank-plus-diagonal covariance.

Each component is a continuous-latent model: z ~ N(0, I_q),
x | z, k ~ N(W_k z + mu_k, Psi_k), so that x | k ~ N(mu_k, W_k W_k^T + Psi_k).
Psi diagonal is factor analysis; Psi = sigma^2 I is probabilistic PCA
(Tipping & Bishop, 1999).  A mixture of them is the mixture of factor
analysers (Ghahramani & Hinton, 1996) or of PPCA (Tipping & Bishop, 1999),
for clustering in high dimension with O(D q) parameters per component.

E-step (per row and component): with M = I + W^T Psi^-1 W,

    E[z | x, k]      = M^-1 W^T Psi^-1 (x - mu),   Cov[z | x, k] = M^-1,

and log p(x | k) through the Woodbury identity and the determinant lemma
(log det C = log det Psi + log det M), in O(D q) per row, never forming the
D x D covariance.  The statistics are sums of E[x], E[z], E[x z^T],
E[z z^T] and the diagonal of E[x x^T] (relative to the E-step's means); the
M-step is the regression of x on the augmented latent [z; 1]:
[W mu] = (sum E[x z~^T]) (sum E[z~ z~^T])^-1, Psi = diag(sum E[x x^T] -
[W mu] sum E[z~ x^T]) / n_k (sigma^2: their mean).

Missing entries: Psi is diagonal, so the observed coordinates form a factor
model with the observed rows of W and Psi; M becomes row-specific,
M_n = I + W^T diag(o_n / psi) W, and for a missing coordinate j,
E[x_j] = mu_j + W_j E[z], E[x_j z^T] = mu_j E[z]^T + W_j E[z z^T] and
E[x_j^2] adds W_j Cov[z] W_j^T + psi_j.
"""

from __future__ import annotations

import torch

from elbokit.families.base import F64, LOG_2PI, Family, observed


class FactorAnalyzer(Family):
    """Components that are factor analysers (``noise="diag"``) or PPCA (``"spherical"``).

    Parameters
    ----------
    n_factors : int
        Latent dimension q.
    noise : {"diag", "spherical"}, default="diag"
        Psi diagonal (factor analysis) or sigma^2 I (probabilistic PCA).
    reg_covar : float, default=1e-6
        Floor added to the noise variances.

    Parameters of the components: ``loc`` (K, D), ``components`` W (K, D, q),
    ``noise_variance`` (K, D) or (K,).
    """

    name = "factor_analyzer"

    def __init__(self, n_factors=2, noise="diag", reg_covar=1e-6):
        if noise not in ("diag", "spherical"):
            raise ValueError(f"noise={noise!r}: use 'diag' (factor analysis) or 'spherical' (PPCA).")
        if not isinstance(n_factors, int) or n_factors < 1:
            raise ValueError(f"n_factors must be an integer >= 1; got {n_factors!r}.")
        self.n_factors = n_factors
        self.noise = noise
        self.reg_covar = reg_covar
        self._cache = None

    def get_config(self):
        return {"n_factors": self.n_factors, "noise": self.noise, "reg_covar": float(self.reg_covar)}

    def work_per_row(self, n_components, n_features, missing=False):
        q = self.n_factors
        return n_components * (n_features + q * (q + 2) + (q * q if missing else 0))

    def _psi(self, params):
        psi = params["noise_variance"]
        K, D = params["loc"].shape
        return psi[:, None].expand(K, D) if psi.ndim == 1 else psi

    # ------------------------------------------------------------ E-step terms
    def posterior(self, params, X):
        """Per row and component: (log p(x_o | k), E[z], Cov[z] or per-row Cov, mask).

        Returns
        -------
        log_prob : (n, K); mean_z : (n, K, q); cov_z : (K, q, q) or (n, K, q, q)
        mask : (n, D) observed mask, or None for complete rows.
        """
        c = self._cache
        if c is not None and c[0] is params and c[1] is X:
            return c[2]
        loc, W = params["loc"].to(F64), params["components"].to(F64)
        psi = self._psi(params).to(F64)
        K, D, q = W.shape
        X0, mask = observed(X)
        Xd = X0.to(F64)
        d = Xd[:, None, :] - loc[None]  # (n, K, D)
        inv = psi.reciprocal()
        eye = torch.eye(q, dtype=F64, device=X.device)
        if mask is None:
            Wp = W * inv[:, :, None]  # Psi^-1 W, (K, D, q)
            M = eye + W.mT @ Wp  # (K, q, q)
            L = torch.linalg.cholesky(M)
            b = torch.einsum("nkd,kdq->nkq", d, Wp)
            y = torch.linalg.solve_triangular(L, b.permute(1, 2, 0), upper=False)  # (K, q, n)
            maha = (d.square() * inv[None]).sum(-1) - y.square().sum(1).mT
            log_det = psi.log().sum(1) + 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
            mean_z = torch.cholesky_solve(b.permute(1, 2, 0), L).permute(2, 0, 1)  # (n, K, q)
            cov_z = torch.cholesky_inverse(L)
            n_obs = torch.full((X.shape[0],), float(D), dtype=F64, device=X.device)
            log_prob = -0.5 * (maha + log_det[None] + n_obs[:, None] * LOG_2PI)
        else:
            o = mask.to(F64)
            d = d * o[:, None, :]
            oinv = o[:, None, :] * inv[None]  # (n, K, D)
            M = eye + torch.einsum("kdq,nkd,kdr->nkqr", W, oinv, W)
            L = torch.linalg.cholesky(M)
            b = torch.einsum("nkd,kdq->nkq", d * inv[None], W)
            y = torch.linalg.solve_triangular(L, b.unsqueeze(-1), upper=False).squeeze(-1)
            maha = (d.square() * inv[None]).sum(-1) - y.square().sum(-1)
            log_det = (o[:, None, :] * psi.log()[None]).sum(-1) + 2 * L.diagonal(
                dim1=-2, dim2=-1).log().sum(-1)
            mean_z = torch.cholesky_solve(b.unsqueeze(-1), L).squeeze(-1)
            cov_z = torch.cholesky_inverse(L)
            log_prob = -0.5 * (maha + log_det + o.sum(1)[:, None] * LOG_2PI)
        out = (log_prob, mean_z, cov_z, mask)
        self._cache = (params, X, out)
        return out

    def log_prob(self, params, X):
        return self.posterior(params, X)[0].to(X.dtype)

    def statistics(self, params, X, resp):
        r = resp.to(F64)
        nk = r.sum(0)
        if params is None:
            return self._initial_statistics(X, r)
        _, mean_z, cov_z, mask = self.posterior(params, X)
        loc, W = params["loc"].to(F64), params["components"].to(F64)
        X0, _ = observed(X)
        d = X0.to(F64)[:, None, :] - loc[None]  # x - mu_k (n, K, D)
        rz = r[:, :, None] * mean_z
        s_z = rz.sum(0)
        if mask is None:
            s_x = torch.einsum("nk,nkd->kd", r, d)
            s_xz = torch.einsum("nkd,nkq->kdq", d, rz)
            s_zz = torch.einsum("nkq,nkr->kqr", rz, mean_z) + nk[:, None, None] * cov_z
            s_xx = torch.einsum("nk,nkd->kd", r, d.square())
        else:
            o = mask.to(F64)
            m = 1 - o
            Szz = mean_z[..., :, None] * mean_z[..., None, :] + cov_z  # (n, K, q, q)
            x_fill = d * o[:, None, :] + m[:, None, :] * torch.einsum("kdq,nkq->nkd", W, mean_z)
            s_x = torch.einsum("nk,nkd->kd", r, x_fill)
            s_zz = torch.einsum("nk,nkqr->kqr", r, Szz)
            T = torch.einsum("nk,nd,nkqr->kdqr", r, m, Szz)  # missing-weighted E[zz^T]
            obs_part = torch.einsum("nkd,nkq->kdq", d * o[:, None, :], rz)
            s_xz = obs_part + torch.einsum("kdq,kdqr->kdr", W, T)
            psi = self._psi(params).to(F64)
            miss_w = r.mT @ m  # (K, D)
            s_xx = (torch.einsum("nk,nkd->kd", r, (d * o[:, None, :]).square())
                    + torch.einsum("kdq,kdqr,kdr->kd", W, T, W) + miss_w * psi)
        return {"nk": nk, "s_x": s_x, "s_z": s_z, "s_xz": s_xz, "s_zz": s_zz, "s_xx": s_xx}

    def _initial_statistics(self, X, r):
        """Additive moments (float64) for the initial parameters: each component's
        weighted sums of x and x x^T (missing entries at the column means)."""
        from elbokit.families.base import fill_nan_with_column_means

        Xd = fill_nan_with_column_means(X).to(F64)
        return {"nk": r.sum(0), "init_sx": r.mT @ Xd,
                "init_sxx": torch.einsum("nk,nd,ne->kde", r, Xd, Xd)}

    def _from_scatter(self, mean, scatter):
        """PPCA's closed form (Tipping & Bishop) from each component's covariance: the
        starting point of FA too."""
        K, D, _ = scatter.shape
        q = min(self.n_factors, D)
        vals, vecs = torch.linalg.eigh(scatter)
        vals, vecs = vals.flip(-1), vecs.flip(-1)
        rest = vals[:, q:].mean(-1) if q < D else torch.full((K,), 1e-3, dtype=F64, device=vals.device)
        sigma2 = rest.clamp_min(self.reg_covar) + self.reg_covar
        W = vecs[:, :, :q] * (vals[:, :q] - sigma2[:, None]).clamp_min(0).sqrt()[:, None, :]
        if q < self.n_factors:
            W = torch.cat([W, torch.zeros(K, D, self.n_factors - q, dtype=F64, device=W.device)], 2)
        if self.noise == "diag":
            psi = (scatter.diagonal(dim1=1, dim2=2) - W.square().sum(-1)).clamp_min(0) + self.reg_covar
            psi = torch.maximum(psi, sigma2[:, None] * 1e-3)
        else:
            psi = sigma2
        return {"loc": mean, "components": W, "noise_variance": psi}

    # ------------------------------------------------------------ M-step
    def maximize(self, stats, params, fixed=None):
        fixed = fixed or {}
        if "init_sxx" in stats:  # initialisation: PPCA's closed form per component
            nk = stats["nk"].clamp_min(1e-300)
            mean = stats["init_sx"] / nk[:, None]
            scatter = stats["init_sxx"] / nk[:, None, None] - mean[:, :, None] * mean[:, None, :]
            return self._from_scatter(mean, scatter)
        nk, s_x, s_z, s_xz, s_zz, s_xx = (stats[k] for k in ("nk", "s_x", "s_z", "s_xz", "s_zz", "s_xx"))
        K, D, q = s_xz.shape
        anchor = params["loc"].to(F64)
        safe = nk.clamp_min(1e-300)
        if "components" in fixed:  # W given: the mean and the noise maximised around it
            W = fixed["components"].to(F64)
            if "loc" in fixed:
                m = fixed["loc"].to(F64) - anchor
            else:
                m = (s_x - torch.einsum("kdq,kq->kd", W, s_z)) / safe[:, None]
            Wz = torch.einsum("kdq,kq->kd", W, s_z)
            psi = (s_xx - 2 * m * s_x - 2 * (W * s_xz).sum(-1) + nk[:, None] * m.square()
                   + 2 * m * Wz + torch.einsum("kdq,kqr,kdr->kd", W, s_zz, W)) / safe[:, None]
            loc = anchor + m
        elif "loc" in fixed:
            e = fixed["loc"].to(F64) - anchor  # regress around the fixed means, no intercept
            B = s_xz - e[:, :, None] * s_z[:, None, :]
            W = torch.linalg.solve(s_zz, B.mT).mT
            sxx = s_xx - 2 * e * s_x + nk[:, None] * e.square()
            psi = (sxx - (W * B).sum(-1)) / safe[:, None]
            loc = fixed["loc"].to(F64)
        else:
            A = torch.zeros(K, q + 1, q + 1, dtype=F64, device=nk.device)
            A[:, :q, :q], A[:, :q, q], A[:, q, :q], A[:, q, q] = s_zz, s_z, s_z, nk
            B = torch.cat([s_xz, s_x[:, :, None]], 2)  # (K, D, q + 1)
            Wt = torch.linalg.solve(A, B.mT).mT
            W, shift = Wt[:, :, :q], Wt[:, :, q]
            psi = (s_xx - (Wt * B).sum(-1)) / safe[:, None]
            loc = anchor + shift
        empty = nk <= 0
        if bool(empty.any()):
            W = torch.where(empty[:, None, None], params["components"].to(F64), W)
            psi = torch.where(empty[:, None], self._psi(params).to(F64), psi)
            loc = torch.where(empty[:, None], anchor, loc)
        psi = psi.clamp_min(0) + self.reg_covar
        if self.noise == "spherical":
            psi = psi.mean(1)
        return {"loc": loc, "components": W, "noise_variance": fixed.get("noise_variance", psi)}

    def statistics_of(self, params, weights):
        """Statistics of each component's own distribution (weights w_k), anchored at its mean."""
        w = weights.to(F64)
        W = params["components"].to(F64)
        psi = self._psi(params).to(F64) - self.reg_covar
        K, D, q = W.shape
        eye = torch.eye(q, dtype=F64, device=W.device)
        M = eye + W.mT @ (W / (psi + self.reg_covar)[:, :, None])
        Minv = torch.linalg.inv(M)
        beta = Minv @ (W / (psi + self.reg_covar)[:, :, None]).mT  # (K, q, D)
        C = W @ W.mT + torch.diag_embed(psi + self.reg_covar)
        Ezz = beta @ C @ beta.mT + Minv
        s_xz = C @ beta.mT
        s_xx = C.diagonal(dim1=1, dim2=2) - self.reg_covar
        return {"nk": w.clone(), "s_x": torch.zeros(K, D, dtype=F64, device=W.device),
                "s_z": torch.zeros(K, q, dtype=F64, device=W.device),
                "s_xz": w[:, None, None] * s_xz, "s_zz": w[:, None, None] * Ezz,
                "s_xx": w[:, None] * s_xx}

    # ------------------------------------------------------------ the rest
    def covariance(self, params):
        W = params["components"].to(F64)
        return W @ W.mT + torch.diag_embed(self._psi(params).to(F64))

    def sample(self, params, z, generator):
        W = params["components"][z]
        n, D, q = W.shape
        lat = torch.randn(n, q, dtype=F64, device=W.device, generator=generator)
        eps = torch.randn(n, D, dtype=F64, device=W.device, generator=generator)
        return params["loc"][z] + (W @ lat.unsqueeze(-1)).squeeze(-1) + eps * self._psi(params)[z].sqrt()

    def mean(self, params):
        return params["loc"]

    def conditional_mean(self, params, X):
        _, mean_z, _, mask = self.posterior(params, X)
        filled = params["loc"][None] + torch.einsum("kdq,nkq->nkd", params["components"].to(F64), mean_z)
        if mask is None:
            return X[:, None, :].expand_as(filled)
        return torch.where(mask[:, None, :] > 0, X.nan_to_num(0.0)[:, None, :].to(F64), filled).to(X.dtype)

    def n_parameters(self, params):
        K, D, q = params["components"].shape
        noise = K * D if self.noise == "diag" else K
        return int(K * D + K * (D * q - q * (q - 1) // 2) + noise)

    def param_shapes(self, n_components, n_features):
        K, D, q = n_components, n_features, self.n_factors
        return {"loc": (K, D), "components": (K, D, q),
                "noise_variance": (K, D) if self.noise == "diag" else (K,)}
