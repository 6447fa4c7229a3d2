"""KL divergences between ``torch.distributions`` objects.

The Kullback-Leibler divergence of ``q`` from ``p`` is

    KL(p || q) = E_{z ~ p}[log p(z) - log q(z)],

which is >= 0 and is 0 only when p = q.  It is not symmetric.  In the ELBO,
``log p(x) = ELBO(q) + KL(q(z) || p(z | x))``, and the ELBO itself contains
the term ``-KL(q(z | x) || p(z))`` between the approximate posterior and the
prior.

Two ways to compute it
----------------------
Closed form
    Looked up in torch's registry (:func:`torch.distributions.kl.kl_divergence`),
    keyed by the pair of types ``(type(p), type(q))``, resolved once and
    memoised by torch.  This module adds the pairs the library needs that torch
    lacks (the diagonal Gaussian ``Independent(Normal(loc, scale), 1)`` against
    a full-covariance ``MultivariateNormal``, both directions; two Wisharts).  Users add their
    own pairs with :func:`register_kl` (re-exported from torch)::

        @elbokit.kl.register_kl(MyP, MyQ)
        def _kl_myp_myq(p, q):
            return ...  # tensor of shape broadcast(p.batch_shape, q.batch_shape)

Monte Carlo
    Where no closed form is registered, the expectation is estimated from
    ``n_samples`` draws ``z_s ~ p`` as ``mean_s(log p(z_s) - log q(z_s))``,
    an unbiased estimate whose standard error is reported by :func:`kl`.
    Draws use ``p.rsample`` when ``p.has_rsample`` (the reparameterisation
    trick: gradients flow to p's parameters), else ``p.sample`` (gradients
    flow to q's parameters only).  The mean is accumulated in float64 and
    cast back to the dtype of the log densities.

``method="auto"`` (the default) uses the closed form where one is registered
and Monte Carlo otherwise; :func:`kl` says which one was used.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, Wishart
from torch.distributions.kl import kl_divergence as _torch_kl_divergence
from torch.distributions.kl import register_kl

__all__ = ["KLResult", "has_analytic_kl", "kl", "kl_divergence", "register_kl", "wishart_kl"]

_METHODS = ("auto", "analytic", "monte_carlo")


@dataclass(frozen=True)
class KLResult:
    """A KL divergence together with how it was obtained.

    Attributes
    ----------
    value : torch.Tensor, shape broadcast(p.batch_shape, q.batch_shape)
        KL(p || q): exact for ``method == "analytic"``, an unbiased estimate
        for ``method == "monte_carlo"``.
    method : {"analytic", "monte_carlo"}
        Which of the two was used.
    stderr : torch.Tensor, same shape as ``value``
        Standard error of the Monte Carlo mean (sample standard deviation of
        the log-ratio over sqrt(n_samples)); zeros for ``"analytic"``.
        Detached from the autograd graph.
    """

    value: torch.Tensor
    method: str
    stderr: torch.Tensor


def kl(p: Distribution, q: Distribution, *, method: str = "auto",
       n_samples: int = 1024, seed: int | None = None) -> KLResult:
    """KL(p || q), analytic where registered, else a Monte Carlo estimate.

    Parameters
    ----------
    p, q : torch.distributions.Distribution
        Same ``event_shape``; broadcastable ``batch_shape``.
    method : {"auto", "analytic", "monte_carlo"}, default "auto"
        ``"auto"`` uses the closed form where one is registered and Monte
        Carlo otherwise; the other two force one way.
    n_samples : int, default 1024
        Number of draws from p for Monte Carlo (at least 2, so that the
        standard error is defined).  Unused by the closed form.
    seed : int or None, default None
        Seed for Monte Carlo draws.  With an int, the draws are made inside
        :func:`torch.random.fork_rng` after :func:`torch.manual_seed`, so the
        estimate is repeatable and the global random state is left as it
        was.  With None, the global random state is used (and advanced).

    Returns
    -------
    KLResult
        ``value`` and ``stderr`` of shape
        ``broadcast(p.batch_shape, q.batch_shape)``, and the ``method`` used.

    Raises
    ------
    ValueError
        Unknown ``method``, ``n_samples < 2``, a bad ``seed``, different event
        shapes or batch shapes that do not broadcast.
    NotImplementedError
        ``method="analytic"`` with no registered closed form, or Monte Carlo
        needed but p cannot draw samples or q has no ``log_prob``.
    """
    _check_method(method)
    _check_n_samples(n_samples)
    _check_seed(seed)
    _check_shapes(p, q)
    if method in ("auto", "analytic"):
        try:
            value = _torch_kl_divergence(p, q)
        except NotImplementedError as err:
            if method == "analytic":
                raise _no_closed_form_error(p, q, err) from err
        else:
            return KLResult(value, "analytic", torch.zeros_like(value).detach())
    value, stderr = _monte_carlo(p, q, n_samples, seed)
    return KLResult(value, "monte_carlo", stderr)


def kl_divergence(p: Distribution, q: Distribution, *, method: str = "auto",
                  n_samples: int = 1024, seed: int | None = None) -> torch.Tensor:
    """KL(p || q) as a tensor of shape broadcast(p.batch_shape, q.batch_shape).

    Same arguments and errors as :func:`kl`, which also reports the method
    used and the Monte Carlo standard error.
    """
    return kl(p, q, method=method, n_samples=n_samples, seed=seed).value


def has_analytic_kl(p: Distribution, q: Distribution) -> bool:
    """Whether a closed form KL(p || q) is registered and applies to p and q.

    A registered pair of types can still decline particular instances (for
    example ``Independent`` pairs whose base distributions have no closed
    form), so this evaluates the closed form once, without gradients.

    Raises
    ------
    ValueError
        Different event shapes, or batch shapes that do not broadcast.
    """
    _check_shapes(p, q)
    try:
        with torch.no_grad():
            _torch_kl_divergence(p, q)
    except NotImplementedError:
        return False
    return True


# ---------------------------------------------------------------------------
# Argument checks


def _check_method(method) -> None:
    if method not in _METHODS:
        raise ValueError(
            f"method={method!r} is not supported: use one of "
            + ", ".join(repr(m) for m in _METHODS) + "."
        )


def _check_n_samples(n_samples) -> None:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(
            f"n_samples={n_samples!r} must be an integer >= 2 (the Monte Carlo "
            "standard error needs at least two draws)."
        )


def _check_seed(seed) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed={seed!r} must be an int or None.")


def _check_shapes(p: Distribution, q: Distribution) -> torch.Size:
    """The broadcast batch shape of p and q; ValueError if they do not fit."""
    if p.event_shape != q.event_shape:
        raise ValueError(
            f"KL(p || q) needs equal event shapes, got p.event_shape="
            f"{tuple(p.event_shape)} ({_describe(p)}) and q.event_shape="
            f"{tuple(q.event_shape)} ({_describe(q)})."
        )
    try:
        return torch.Size(torch.broadcast_shapes(p.batch_shape, q.batch_shape))
    except RuntimeError as err:
        raise ValueError(
            f"p.batch_shape={tuple(p.batch_shape)} and q.batch_shape="
            f"{tuple(q.batch_shape)} do not broadcast."
        ) from err


def _describe(d: Distribution) -> str:
    """Type name, with the base for ``Independent`` (``Independent(Normal, 1)``)."""
    if isinstance(d, Independent):
        return f"Independent({_describe(d.base_dist)}, {d.reinterpreted_batch_ndims})"
    return type(d).__name__


def _no_closed_form_error(p, q, err: Exception) -> NotImplementedError:
    return NotImplementedError(
        f"No closed-form KL(p || q) for p={_describe(p)} and q={_describe(q)} "
        f"({err}). Use method='monte_carlo' (or 'auto'), or register one with "
        "@elbokit.kl.register_kl(type_p, type_q)."
    )


# ---------------------------------------------------------------------------
# Monte Carlo


@contextlib.contextmanager
def _seeded(seed: int | None):
    """Fork the CPU (and CUDA) random state and seed it; no-op for None."""
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _draw(p: Distribution, q: Distribution, n_samples: int,
          seed: int | None) -> torch.Tensor:
    """z ~ p, shape (n_samples, 1, ..., 1, *p.batch_shape, *event_shape).

    Singleton dimensions are inserted so that ``z`` broadcasts against the
    broadcast batch shape of p and q rather than against the sample
    dimension.
    """
    draw = p.rsample if p.has_rsample else p.sample
    try:
        with _seeded(seed):
            z = draw((n_samples,))
    except NotImplementedError as err:
        raise NotImplementedError(
            f"Cannot estimate KL(p || q) by Monte Carlo for p={_describe(p)} and "
            f"q={_describe(q)}: p cannot draw samples ({err}), and no closed "
            "form applies. Register one with @elbokit.kl.register_kl."
        ) from err
    n_new = len(_check_shapes(p, q)) - len(p.batch_shape)
    return z.reshape((n_samples,) + (1,) * n_new + tuple(z.shape[1:]))


def _log_ratio(p: Distribution, q: Distribution, z: torch.Tensor) -> torch.Tensor:
    """log p(z) - log q(z), shape (n_samples, *broadcast batch shape)."""
    return _log_prob(p, "p", p, q, z) - _log_prob(q, "q", p, q, z)


def _log_prob(d: Distribution, role: str, p: Distribution, q: Distribution,
              z: torch.Tensor) -> torch.Tensor:
    """``d.log_prob(z)`` for ``d`` in ``role`` "p" or "q", with errors naming both."""
    try:
        return d.log_prob(z)
    except NotImplementedError as err:
        raise NotImplementedError(
            f"Cannot estimate KL(p || q) by Monte Carlo for p={_describe(p)} and "
            f"q={_describe(q)}: {role}.log_prob is not implemented ({err}), and "
            "no closed form applies. Register one with @elbokit.kl.register_kl."
        ) from err
    except ValueError as err:
        if role == "p":
            raise
        raise ValueError(
            f"q={_describe(q)} rejected samples from p={_describe(p)} ({err}). "
            "If p puts mass outside the support of q, KL(p || q) is infinite."
        ) from err


def _monte_carlo(p: Distribution, q: Distribution, n_samples: int,
                 seed: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error of log p(z) - log q(z) over z ~ p.

    Accumulated in float64, returned in the dtype of the log densities; the
    standard error is detached.
    """
    ratio = _log_ratio(p, q, _draw(p, q, n_samples, seed))
    ratio64 = ratio.to(torch.float64)
    value = ratio64.mean(dim=0).to(ratio.dtype)
    stderr = ratio64.detach().std(dim=0, correction=1) / math.sqrt(n_samples)
    return value, stderr.to(ratio.dtype)


# ---------------------------------------------------------------------------
# Closed forms torch lacks.
#
# For Gaussians N(m_p, S_p) and N(m_q, S_q) in d dimensions,
#   KL = 1/2 [tr(S_q^-1 S_p) + (m_q - m_p)^T S_q^-1 (m_q - m_p) - d
#             + log det S_q - log det S_p].
# With S_q = L L^T (Cholesky factor L, ``scale_tril``), every S_q^-1 term is a
# squared norm of a triangular solve with L; no inverse is formed.


def _diag_normal_parts(d: Independent) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc, scale) of ``Independent(Normal(loc, scale), 1)``, shape (*batch, d).

    Raises NotImplementedError for any other ``Independent`` so that the
    registry falls back (``method="auto"`` then uses Monte Carlo).
    """
    if not isinstance(d.base_dist, Normal) or d.reinterpreted_batch_ndims != 1:
        raise NotImplementedError(
            f"the closed form against MultivariateNormal covers "
            f"Independent(Normal, 1) only, not {_describe(d)}"
        )
    return d.base_dist.loc, d.base_dist.scale


def _check_gaussian_event_shapes(p: Distribution, q: Distribution) -> None:
    if p.event_shape != q.event_shape:
        raise ValueError(
            f"KL between Gaussians with different event shapes "
            f"{tuple(p.event_shape)} and {tuple(q.event_shape)} is undefined."
        )


@register_kl(Independent, MultivariateNormal)
def _kl_diagnormal_mvn(p: Independent, q: MultivariateNormal) -> torch.Tensor:
    """KL(N(loc, diag(scale^2)) || N(m_q, L L^T)), e.g. posterior vs prior.

    tr(S_q^-1 S_p) = ||L^-1 diag(scale)||_F^2; the Mahalanobis term is
    ||L^-1 (m_q - loc)||^2.  Shape broadcast(p.batch_shape, q.batch_shape).
    """
    _check_gaussian_event_shapes(p, q)
    loc, scale = _diag_normal_parts(p)
    tril = q.scale_tril
    trace = torch.linalg.solve_triangular(
        tril, torch.diag_embed(scale), upper=False
    ).pow(2).sum((-2, -1))
    diff = (q.loc - loc).unsqueeze(-1)
    mahalanobis = torch.linalg.solve_triangular(tril, diff, upper=False).pow(2).sum((-2, -1))
    log_det_q = 2 * tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    log_det_p = 2 * scale.log().sum(-1)
    return 0.5 * (trace + mahalanobis - loc.shape[-1] + log_det_q - log_det_p)


@register_kl(MultivariateNormal, Independent)
def _kl_mvn_diagnormal(p: MultivariateNormal, q: Independent) -> torch.Tensor:
    """KL(N(m_p, L L^T) || N(loc, diag(scale^2))), e.g. prior vs posterior.

    tr(S_q^-1 S_p) = sum_ij (L_ij / scale_i)^2, and the Mahalanobis term is
    sum_i ((loc_i - m_p,i) / scale_i)^2.  Shape broadcast of the batch shapes.
    """
    _check_gaussian_event_shapes(p, q)
    loc, scale = _diag_normal_parts(q)
    tril = p.scale_tril
    trace = (tril / scale.unsqueeze(-1)).pow(2).sum((-2, -1))
    mahalanobis = ((loc - p.loc) / scale).pow(2).sum(-1)
    log_det_q = 2 * scale.log().sum(-1)
    log_det_p = 2 * tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return 0.5 * (trace + mahalanobis - loc.shape[-1] + log_det_q - log_det_p)


# For Wisharts W(V_p, n_p) and W(V_q, n_q) over d x d matrices (V the scale matrix),
#   KL = (n_p - n_q)/2 psi_d(n_p/2) + log Gamma_d(n_q/2) - log Gamma_d(n_p/2)
#        + n_q/2 (log det V_q - log det V_p) + n_p/2 (tr(V_q^-1 V_p) - d),
# psi_d the multivariate digamma (sum_{i<d} psi(a - i/2)).


def wishart_kl(df_p: torch.Tensor, log_det_scale_p: torch.Tensor, df_q: torch.Tensor,
               log_det_scale_q: torch.Tensor, trace_q_inv_p: torch.Tensor, dim: int) -> torch.Tensor:
    """KL(W(V_p, n_p) || W(V_q, n_q)) from n, log det V and tr(V_q^-1 V_p).

    Works for any structure of the scale matrices (diagonal, scaled identity)
    once these three numbers are known; the tensors broadcast.
    """
    i = torch.arange(dim, dtype=df_p.dtype, device=df_p.device)
    digamma = torch.special.digamma(0.5 * df_p[..., None] - 0.5 * i).sum(-1)
    return (0.5 * (df_p - df_q) * digamma
            + torch.special.multigammaln(0.5 * df_q, dim) - torch.special.multigammaln(0.5 * df_p, dim)
            + 0.5 * df_q * (log_det_scale_q - log_det_scale_p)
            + 0.5 * df_p * (trace_q_inv_p - dim))


@register_kl(Wishart, Wishart)
def _kl_wishart_wishart(p: Wishart, q: Wishart) -> torch.Tensor:
    """KL between Wisharts through their scale factors L (V = L L^T):
    tr(V_q^-1 V_p) = ||L_q^-1 L_p||_F^2. Shape broadcast of the batch shapes."""
    if p.event_shape != q.event_shape:
        raise ValueError("KL between Wisharts of different dimensions is undefined.")
    lp, lq = p.scale_tril, q.scale_tril
    trace = torch.linalg.solve_triangular(lq, lp, upper=False).pow(2).sum((-2, -1))
    log_det_p = 2 * lp.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    log_det_q = 2 * lq.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return wishart_kl(p.df, log_det_p, q.df, log_det_q, trace, p.event_shape[-1])
