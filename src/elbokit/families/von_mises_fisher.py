"""von Mises-Fisher components: unit vectors (directions, normalised embeddings).

p(x | z=k) = C_D(kappa_k) exp(kappa_k mu_k^T x) on the unit sphere S^{D-1},
with C_D(kappa) = kappa^{D/2-1} / ((2 pi)^{D/2} I_{D/2-1}(kappa)), ``loc`` mu
(K, D) unit vectors and ``concentration`` kappa (K,).  Statistics: n_k and
the resultant s_k = sum r x; the maximiser is mu = s / ||s|| and kappa
solving A_D(kappa) = I_{D/2}(kappa) / I_{D/2-1}(kappa) = rbar = ||s|| / n_k,
which has no closed form.  We use the approximation of Banerjee et al.
(2005), kappa0 = rbar (D - rbar^2) / (1 - rbar^2), refined by two Newton
steps on A_D(kappa) - rbar (Sra, 2012), in float64.

log I_v(kappa) comes from SciPy's exponentially scaled ``ive`` where that is
representable and otherwise from the uniform (Debye) asymptotic expansion
for large orders (Abramowitz & Stegun 9.7.7), so that D in the hundreds
(text embeddings) is handled.  Sampling: Wood's (1994) rejection sampler.

The marginal of a vMF over some coordinates is not a vMF (the unit-norm
constraint ties them): rows with missing entries are refused.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from elbokit.families.base import F64, Family
from elbokit.families.student_t import _gamma

KAPPA_MAX = 1e5


def log_bessel_iv(v: float, kappa: np.ndarray) -> np.ndarray:
    """log I_v(kappa), float64, for v >= 0 and kappa > 0."""
    from scipy.special import ive

    kappa = np.asarray(kappa, dtype=np.float64)
    with np.errstate(divide="ignore", under="ignore"):
        scaled = ive(v, kappa)
    out = np.log(np.where(scaled > 1e-280, scaled, 1.0)) + kappa
    bad = ~(scaled > 1e-280) | ~np.isfinite(scaled)
    if bad.any():
        out = np.where(bad, _debye(max(v, 1e-8), kappa), out)
    return out


def _debye(v: float, kappa: np.ndarray) -> np.ndarray:
    """Uniform asymptotic expansion of log I_v(v z), four terms."""
    z = kappa / v
    root = np.sqrt(1 + z * z)
    eta = root + np.log(z / (1 + root))
    t = 1 / root
    u1 = t * (3 - 5 * t**2) / 24
    u2 = t**2 * (81 - 462 * t**2 + 385 * t**4) / 1152
    u3 = t**3 * (30375 - 369603 * t**2 + 765765 * t**4 - 425425 * t**6) / 414720
    series = 1 + u1 / v + u2 / v**2 + u3 / v**3
    return v * eta - 0.5 * np.log(2 * math.pi * v) - 0.5 * np.log(root) + np.log(series)


def log_normaliser(kappa: torch.Tensor, D: int) -> torch.Tensor:
    """log C_D(kappa), shape of kappa (float64)."""
    k = kappa.detach().cpu().numpy().astype(np.float64)
    v = D / 2 - 1
    small = k < 1e-10
    ks = np.where(small, 1.0, k)
    out = v * np.log(ks) - (D / 2) * math.log(2 * math.pi) - log_bessel_iv(v, ks)
    # kappa -> 0: the uniform density on the sphere, 1 / area
    uniform = math.lgamma(D / 2) - math.log(2) - (D / 2) * math.log(math.pi)
    out = np.where(small, uniform, out)
    return torch.as_tensor(out, dtype=F64, device=kappa.device)


def mean_resultant(kappa: np.ndarray, D: int) -> np.ndarray:
    """A_D(kappa) = I_{D/2}(kappa) / I_{D/2-1}(kappa)."""
    return np.exp(log_bessel_iv(D / 2, kappa) - log_bessel_iv(D / 2 - 1, kappa))


def estimate_concentration(rbar: torch.Tensor, D: int, newton_steps: int = 2) -> torch.Tensor:
    """kappa with A_D(kappa) = rbar: Banerjee et al.'s approximation plus Newton steps."""
    r = rbar.detach().cpu().numpy().astype(np.float64).clip(1e-12, 1 - 1e-12)
    kappa = r * (D - r * r) / (1 - r * r)
    for _ in range(newton_steps):
        a = mean_resultant(kappa, D)
        step = (a - r) / np.maximum(1 - a * a - (D - 1) / kappa * a, 1e-300)
        kappa = np.where(np.isfinite(step), np.maximum(kappa - step, kappa / 10), kappa)
    return torch.as_tensor(np.clip(kappa, 1e-10, KAPPA_MAX), dtype=F64, device=rbar.device)


class VonMisesFisher(Family):
    """von Mises-Fisher components on the unit sphere (rows must have norm 1).

    Parameters
    ----------
    newton_steps : int, default=2
        Newton refinements of Banerjee et al.'s concentration estimate.
    """

    name = "von_mises_fisher"
    supports_missing = False

    def __init__(self, newton_steps=2):
        self.newton_steps = newton_steps

    def get_config(self):
        return {"newton_steps": int(self.newton_steps)}

    def check(self, X, name="X"):
        super().check(X, name)
        if X.shape[1] < 2:
            raise ValueError("the 'von_mises_fisher' family needs at least 2 columns.")
        norms = X.to(F64).norm(dim=1)
        if X.shape[0] and not bool(((norms - 1).abs() < 1e-3).all()):
            raise ValueError(
                f"the rows of {name} must be unit vectors for the 'von_mises_fisher' family: "
                "normalise them first (X / np.linalg.norm(X, axis=1, keepdims=True))."
            )
        return X

    def log_prob(self, params, X):
        D = X.shape[1]
        kappa = params["concentration"]
        lin = X @ (params["loc"] * kappa[:, None]).mT.to(X.dtype)
        return lin + log_normaliser(kappa, D).to(X.dtype)

    def statistics(self, params, X, resp):
        r = resp.to(X.dtype)
        return {"nk": r.sum(0, dtype=F64), "s": (r.mT @ X).to(F64)}

    def maximize(self, stats, params, fixed=None):
        fixed = fixed or {}
        nk, s = stats["nk"], stats["s"]
        D = s.shape[1]
        norm = s.norm(dim=1)
        default = torch.zeros_like(s)
        default[:, 0] = 1.0
        loc = torch.where(norm[:, None] > 0, s / norm.clamp_min(1e-300)[:, None], default)
        if "loc" in fixed:
            loc = fixed["loc"]
            norm = (s * loc).sum(1).clamp_min(0.0)  # the resultant along the fixed direction
        rbar = torch.where(nk > 0, norm / nk.clamp_min(1e-300), torch.zeros_like(nk))
        kappa = estimate_concentration(rbar, D, self.newton_steps)
        return {"loc": loc, "concentration": fixed.get("concentration", kappa)}

    def statistics_of(self, params, weights):
        kappa = params["concentration"]
        D = params["loc"].shape[1]
        rbar = torch.as_tensor(mean_resultant(kappa.cpu().numpy(), D), dtype=F64,
                               device=kappa.device)
        w = weights.to(F64)
        return {"nk": w.clone(), "s": (w * rbar)[:, None] * params["loc"]}

    def sample(self, params, z, generator):
        """Wood's (1994) algorithm: the component along mu by rejection, the rest uniform."""
        mu, kappa = params["loc"][z], params["concentration"][z]
        n, D = mu.shape
        b = (D - 1) / (2 * kappa + torch.sqrt(4 * kappa**2 + (D - 1) ** 2))
        x0 = (1 - b) / (1 + b)
        c = kappa * x0 + (D - 1) * torch.log(1 - x0**2)
        w = torch.empty(n, dtype=F64, device=mu.device)
        todo = torch.ones(n, dtype=torch.bool, device=mu.device)
        while bool(todo.any()):
            idx = torch.nonzero(todo).flatten()
            u = torch.rand(idx.shape[0], dtype=F64, device=mu.device, generator=generator)
            # Beta((D-1)/2, (D-1)/2) by two gammas from the generator
            a_ = torch.full((idx.shape[0],), (D - 1) / 2, dtype=F64, device=mu.device)
            g1, g2 = _gamma(a_, generator), _gamma(a_, generator)
            e = g1 / (g1 + g2)
            bi, x0i, ci, ki = b[idx], x0[idx], c[idx], kappa[idx]
            wi = (1 - (1 + bi) * e) / (1 - (1 - bi) * e)
            ok = ki * wi + (D - 1) * torch.log(1 - x0i * wi) - ci >= torch.log(u)
            w[idx[ok]] = wi[ok]
            todo[idx[ok]] = False
        v = torch.randn(n, D, dtype=F64, device=mu.device, generator=generator)
        v = v - (v * mu).sum(1, keepdim=True) * mu
        v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)
        return w[:, None] * mu + torch.sqrt((1 - w**2).clamp_min(0))[:, None] * v

    def embed(self, X):
        return X

    def mean(self, params):
        D = params["loc"].shape[1]
        rbar = torch.as_tensor(mean_resultant(params["concentration"].cpu().numpy(), D),
                               dtype=F64, device=params["loc"].device)
        return rbar[:, None] * params["loc"]

    def n_parameters(self, params):
        K, D = params["loc"].shape
        return int(K * (D - 1) + K)

    def param_shapes(self, n_components, n_features):
        return {"loc": (n_components, n_features), "concentration": (n_components,)}
