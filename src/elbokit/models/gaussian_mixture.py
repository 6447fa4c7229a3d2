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

import numpy as np
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


class DegenerateCovarianceError(ValueError, ArithmeticError):
    """A covariance matrix is not positive definite even after regularisation.

    An ``ArithmeticError`` too, so that the EM engine retries a float32 step
    in float64 before it gives up.
    """


class PrecisionLostError(ArithmeticError):
    """float32 statistics were not accurate enough for the parameters they gave.

    Raised by the M-step when a component whose statistics were summed in
    float32 comes out too narrow for them; the EM engine then calls
    :meth:`GaussianMixtureModel.refine`, which moves that component to float64,
    and redoes the step.
    """


def _cholesky_error(covariance_type: str) -> DegenerateCovarianceError:
    return DegenerateCovarianceError(
        "Fitting the mixture model failed because some components have ill-defined "
        "empirical covariance (for instance caused by singleton or collapsed samples). "
        "Try to decrease the number of components, increase reg_covar, or scale the input "
        f"data. (covariance_type={covariance_type!r}; the covariance stayed singular in float64 "
        "after adding reg_covar to its diagonal.)"
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


def _user_array(value, name: str, argument: str, shape, like: torch.Tensor) -> torch.Tensor:
    """A user-given parameter as a float64 tensor beside ``like``, checked for shape
    (with scikit-learn's message) and finiteness."""
    t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    t = t.to(device=like.device, dtype=torch.float64)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(
            f"The parameter '{name}' should have the shape of {tuple(shape)}, but got "
            f"{tuple(t.shape)}: give {argument} of shape {tuple(shape)}."
        )
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{argument} contains NaN or inf.")
    return t


def with_user_parameters(params: GaussianMixtureParams, covariance_type: str, weights=None,
                         means=None, precisions=None) -> GaussianMixtureParams:
    """``params`` with user-given initial weights, means and precisions in their place.

    Checked as scikit-learn checks ``weights_init``, ``means_init`` and
    ``precisions_init``, and with its messages (each followed by the fix).
    """
    K, D = params.means.shape
    ct = covariance_type
    new_weights, new_means = params.weights, params.means
    cov, prec_chol = params.covariances, params.precisions_cholesky
    if weights is not None:
        new_weights = _user_array(weights, "weights", "weights_init", (K,), params.means)
        if bool((new_weights < 0).any()) or bool((new_weights > 1).any()):
            # (scikit-learn's message calls the minimum 'max value' and the maximum 'min value')
            raise ValueError(
                "The parameter 'weights' should be in the range [0, 1], but got max value "
                f"{float(new_weights.min()):.5f}, min value {float(new_weights.max()):.5f}: "
                "weights_init holds the mixing weights, each in [0, 1]."
            )
        if abs(1.0 - float(new_weights.sum())) > 1e-6:
            raise ValueError(
                "The parameter 'weights' should be normalized, but got sum(weights) = "
                f"{float(new_weights.sum()):.5f}: weights_init must sum to 1."
            )
    if means is not None:
        new_means = _user_array(means, "means", "means_init", (K, D), params.means)
    if precisions is not None:
        shape = {"full": (K, D, D), "tied": (D, D), "diag": (K, D), "spherical": (K,)}[ct]
        prec = _user_array(precisions, f"{ct} precision", "precisions_init", shape, params.means)
        if ct in ("full", "tied"):
            chol, info = torch.linalg.cholesky_ex(prec)
            if not torch.allclose(prec, prec.mT) or bool((info != 0).any()):
                raise ValueError(f"'{ct} precision' should be symmetric, positive-definite: "
                                 "precisions_init holds inverse covariance matrices.")
            prec_chol, cov = chol, torch.cholesky_inverse(chol)  # L L^T = precision
        else:
            if bool((prec <= 0).any()):
                raise ValueError(f"'{ct} precision' should be positive: precisions_init holds "
                                 "inverse variances.")
            prec_chol, cov = prec.sqrt(), prec.reciprocal()
    return GaussianMixtureParams(new_weights, new_means, cov, prec_chol)


def duplicate_components(params: GaussianMixtureParams, covariance_type: str,
                         rtol: float = 1e-3) -> list[tuple[int, int]]:
    """Pairs of components that are one and the same, up to ``rtol``.

    Two components are duplicates when their weights and covariances agree
    to ``rtol`` and their means to ``rtol`` standard deviations in every
    feature: what EM makes of more components than the data have distinct
    clusters (identical rows, fewer distinct points than components).

    Returns
    -------
    list of (i, j) with i < j
    """
    f64 = torch.float64
    weights, means, cov = params.weights.to(f64), params.means.to(f64), params.covariances.to(f64)
    K, D = means.shape
    var = {"full": lambda: cov.diagonal(dim1=1, dim2=2), "tied": lambda: cov.diagonal().expand(K, D),
           "diag": lambda: cov, "spherical": lambda: cov[:, None].expand(K, D)}[covariance_type]()
    sd = var.clamp_min(torch.finfo(f64).tiny).sqrt()
    close_means = ((means[:, None] - means[None]).abs() <= rtol * sd[:, None]).all(-1)
    close_weights = (weights[:, None] - weights[None]).abs() <= rtol * weights.clamp_min(1e-300)[:, None]
    pairs = []
    for i, j in torch.nonzero(torch.triu(close_means & close_weights, diagonal=1)).tolist():
        if covariance_type == "tied" or torch.allclose(cov[i], cov[j], rtol=rtol, atol=0.0):
            pairs.append((i, j))
    return pairs


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


# --------------------------------------------------------------------------- float32 safety
_EPS32 = float(torch.finfo(torch.float32).eps)
FLOAT32_TOLERANCE = 1e-4
"""Largest estimated float32 error, in nats per row, of a component's log-density
that the E-step accepts; a component above it is computed in float64.  Chosen
on scikit-learn's bundled data sets (``python bench/gmm.py --robustness``)."""
_FLOAT32_RANGE = 2.0 ** 60  # magnitudes float32 holds with room for squares and sums


def float32_error(params: GaussianMixtureParams, covariance_type: str) -> torch.Tensor:
    """Estimated error, in nats, of each component's log-density computed in float32.

    The E-step centres the data at c = sum_k pi_k mu_k in float64, casts it
    to float32 and forms the Mahalanobis terms with matrix products.  Rounding
    errs by about eps32 times the terms that cancel, which are large when a
    component is narrow compared with its distance from c: a feature that is
    nearly constant within a cluster, a tight cluster far from the others, an
    ill-conditioned covariance.  For rows of component k (within three
    standard deviations of mu_k, so |x - c| <= r = |mu_k - c| + 3 sd) the
    estimate is

    * full and tied: the rounding of the whitening product (x - c)^T U,
      eps32 sqrt(sum_d (r_d U_dj)^2) per coordinate j, entering the
      Mahalanobis term through 2 y.dy (|y| taken as 3);
    * tied, in addition: the expansion |y - b_k|^2 = |y|^2 - 2 y.b_k + |b_k|^2
      with b_k = U^T (mu_k - c), 3 eps32 (|b_k| + sqrt(D) + 3)^2;
    * diag and spherical: the expansion of sum_d prec_d (x_d - mu_d)^2 into
      squares of x - c and mu - c, 3 eps32 sum_d prec_d r_d^2.

    A component whose data or factors leave float32's comfortable range
    (2^-60 .. 2^60) gets inf.  The estimate errs on the safe side: measured
    errors on scikit-learn's bundled data sets are 2 to 100 times smaller.

    Returns
    -------
    Tensor of shape (K,), float64
    """
    f64 = torch.float64
    means = params.means.to(f64)
    U = params.precisions_cholesky.to(f64)
    cov = params.covariances.to(f64)
    m = means - params.weights.to(f64) @ means
    K, D = means.shape
    if covariance_type in ("full", "tied"):
        reach = m.abs() + cov.diagonal(dim1=-2, dim2=-1).sqrt()          # (K, D)
        g = (reach.square().unsqueeze(1) @ U.square()).squeeze(1).sqrt()  # (K, D)
        err = 2 * g.norm(dim=1)
        if covariance_type == "tied":
            err = err + ((m @ U).abs() + 1).square().sum(1)
        big, small = U.abs().flatten(-2).amax(-1), U.diagonal(dim1=-2, dim2=-1).amin(-1)
    elif covariance_type == "diag":
        reach = m.abs() + cov.sqrt()
        err = (U.square() * reach.square()).sum(1)
        big, small = U.amax(1), U.amin(1)
    else:
        reach = m.abs() + cov.sqrt()[:, None]
        err = U.square() * reach.square().sum(1)
        big = small = U
    in_range = (big.expand(K) < _FLOAT32_RANGE) & (small.expand(K) > 1 / _FLOAT32_RANGE) & (
        reach.amax(1) < _FLOAT32_RANGE)
    return torch.where(in_range, _EPS32 * err, torch.full_like(err, math.inf))


@dataclass(frozen=True)
class _Group:
    """E-step constants of some of the components, in one compute dtype.

    ``index`` lists the components (None: all of them, in order);
    ``log_norm`` = log pi_k + log det U_k - D/2 log 2 pi - offset, shape (k,).
    The chunk enters centred at c, as x - c for full and tied and as
    [x - c | (x - c)^2], shape (n, 2D), for diag and spherical; with
    m_k = mu_k - c, ``a`` and ``b`` map it to the Mahalanobis terms:

    * full: a = [U_1 | ... | U_k], shape (D, k*D), and b = the concatenated
      -m_k^T U_k, shape (k*D,), so that one GEMM (x - c)^T a + b gives every
      whitened residual y_k = U_k^T (x - mu_k) at once, laid out (n, k, D)
      (the bias is added by the GEMM, whose inner dimension stays D: a D+1
      column would cost BLAS its aligned kernel, ~1.7x the time);
    * tied: a = U (D, D); b = m U (k, D), and |y - b_k|^2 with y = U^T (x - c);
    * diag: a = [-2 m_k prec_k ; prec_k] stacked, shape (2D, k), and
      b = sum_d prec_kd m_kd^2 (k,): one GEMM [x - c | (x - c)^2] a + b;
    * spherical: a = -2 m_k, shape (D, k), b = |m_k|^2 and ``scale`` = prec_k
      (k,): (|x - c|^2 + (x - c) a + b) prec_k.
    """

    index: torch.Tensor | None
    log_norm: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    scale: torch.Tensor | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.a.dtype

    @property
    def size(self) -> int:
        return self.log_norm.shape[0]


@dataclass(frozen=True)
class _Prepared:
    """Per-iteration constants of the E-step.

    ``centre`` c = sum_k pi_k mu_k (float64): data and means are shifted by it
    before any cast, so float32 never sees large offsets.  ``offset``
    (float64) is taken out of every log-normaliser so that float32 holds only
    the differences between components; it is added back in float64.
    ``groups``: the float32 components, then those that
    :func:`float32_error` sends to float64; the E-step lays their columns
    side by side, so that column j is component ``order[j]`` (None: the
    identity).
    """

    centre: torch.Tensor
    offset: float
    groups: tuple[_Group, ...]
    n_components: int
    order: torch.Tensor | None = None
    exact: "_Exact | None" = None

    @property
    def dtype(self) -> torch.dtype:
        """The widest compute dtype of the groups."""
        return self.groups[-1].dtype


@dataclass(frozen=True)
class _Exact:
    """Diag and spherical components whose float32 expansion is not accurate enough.

    They stay in the float32 GEMM with the others; then, for the rows where
    that float32 value comes within ``margin`` of the row's best (80 nats,
    below which a responsibility is nothing, plus ten times the component's
    estimated float32 error), their Mahalanobis terms are recomputed in
    float64 from the residuals x - mu_k, and so are their statistics.  Rows
    further away get responsibility 0.  A few components far from the centre
    then cost a few gathered rows, not a float64 pass over the chunk.

    Attributes
    ----------
    index : LongTensor (r,)
        The components; the E-step lays them out as its last r columns.
    margin : Tensor (r,)
    log_norm : Tensor (r,), float64
    m : Tensor (r, D), float64
        mu_k - c.
    precision : Tensor (r, D), float64
        1 / sigma^2 per feature (spherical: repeated).
    """

    index: torch.Tensor
    margin: torch.Tensor
    log_norm: torch.Tensor
    m: torch.Tensor
    precision: torch.Tensor


@dataclass(frozen=True)
class _Pairs:
    """The (row, component) pairs of one chunk that :class:`_Exact` recomputed."""

    rows: torch.Tensor
    slots: torch.Tensor  # position of the component in ``_Exact.index``
    residual: torch.Tensor  # (P, D) float64, x - c


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

    With a float32 compute dtype, the components whose float32 error
    (:func:`float32_error`) exceeds :data:`FLOAT32_TOLERANCE` are computed in
    float64, each iteration anew, and so are those the M-step found too
    narrow for float32 statistics; :meth:`refine` is how the EM engine asks
    for more precision when a step loses it.

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
        self._buffers: dict = {}
        self._forced: torch.Tensor | None = None  # components kept in float64 whatever their estimate
        self._pending: torch.Tensor | None = None  # components the last M-step found too narrow
        self.n_reseeded = 0

    def work_per_row(self, n_components: int, n_features: int) -> int:
        """Elements of E-step work memory per data row: K*D for full (the
        whitened residuals), K + D otherwise."""
        if self.covariance_type == "full":
            return n_components * n_features
        return n_components + n_features

    def refine(self) -> bool:
        """More precision from now on: the components the last M-step found too
        narrow for float32 (see :meth:`maximize`) move to float64, or, when it
        found none, everything does.  False when everything already is."""
        self._cache = None
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._forced = pending if self._forced is None else self._forced | pending
            return True
        if self.dtype == torch.float64:
            return False
        self.dtype = torch.float64
        return True

    def bound_rounding(self, bound: float) -> float:
        """How far rounding may move a mean log-likelihood of size ``bound``."""
        return 4 * float(torch.finfo(self.dtype).eps) * (1 + abs(bound))

    # ----------------------------------------------------------------- density
    def prepare(self, params: GaussianMixtureParams) -> _Prepared:
        """E-step constants for ``params`` (memoised for the last params seen)."""
        if self._cache is not None and self._cache[0] is params and self._cache[1] == self.dtype:
            return self._cache[2]
        f64 = torch.float64
        weights, means = params.weights.to(f64), params.means.to(f64)
        U = params.precisions_cholesky.to(f64)
        K, D = means.shape
        centre = weights @ means
        ct = self.covariance_type
        log_norm = self.log_normalisers(params)
        finite = log_norm[torch.isfinite(log_norm)]
        offset = float(finite.max()) if finite.numel() else 0.0
        log_norm = log_norm - offset
        split, order, exact = [(None, self.dtype)], None, None
        if self.dtype != f64:
            error = float32_error(params, ct)
            precise = error > FLOAT32_TOLERANCE
            if self._forced is not None:
                precise |= self._forced
            if bool(precise.all()) or not bool(torch.isfinite(error).all()):
                split = [(None, f64)]
            elif bool(precise.any()) and ct in ("diag", "spherical"):
                risky = torch.nonzero(precise).flatten()
                order = torch.cat([torch.nonzero(~precise).flatten(), risky])
                split = [(order, self.dtype)]
                exact = self._exact(risky, error, means - centre, U, log_norm)
            elif bool(precise.any()):
                idx32, idx64 = torch.nonzero(~precise).flatten(), torch.nonzero(precise).flatten()
                split, order = [(idx32, self.dtype), (idx64, f64)], torch.cat([idx32, idx64])
        groups = tuple(self._group(index, dtype, means - centre, U, log_norm)
                       for index, dtype in split)
        prep = _Prepared(centre, offset, groups, K, order, exact)
        self._cache = (params, self.dtype, prep)
        return prep

    def log_normalisers(self, params: GaussianMixtureParams) -> torch.Tensor:
        """log pi_k + log det U_k - D/2 log 2 pi, shape (K,), float64: log p(x, z=k) at
        x = mu_k, so that log p(x, z=k) = this - 1/2 (squared Mahalanobis distance)."""
        f64 = torch.float64
        U = params.precisions_cholesky.to(f64)
        K, D = params.means.shape
        ct = self.covariance_type
        if ct == "full":
            log_det = U.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        elif ct == "tied":
            log_det = U.diagonal().log().sum().expand(K)
        elif ct == "diag":
            log_det = U.log().sum(-1)
        else:
            log_det = D * U.log()
        return params.weights.to(f64).log() + log_det - 0.5 * D * math.log(2 * math.pi)

    def _exact(self, index, error, mc, U, log_norm) -> _Exact:
        """The :class:`_Exact` constants of the diag/spherical components ``index``."""
        precision = U[index].square()
        if precision.ndim == 1:
            precision = precision[:, None].expand(-1, mc.shape[1])
        margin = (80.0 + 10 * error[index]).to(self.dtype)
        return _Exact(index, margin, log_norm[index], mc[index], precision)

    def _group(self, index, dtype, mc, U, log_norm) -> _Group:
        """The E-step constants of the components ``index`` (None: all) in ``dtype``."""
        ct = self.covariance_type
        if index is not None:
            mc, log_norm = mc[index], log_norm[index]
            U = U if ct == "tied" else U[index]
        k, D = mc.shape
        scale = None
        if ct == "full":
            a = U.permute(1, 0, 2).reshape(D, k * D)
            b = -(mc.unsqueeze(1) @ U).reshape(k * D)
        elif ct == "tied":
            a, b = U, mc @ U
        elif ct == "diag":
            prec = U.square()
            a, b = torch.cat([-2 * mc * prec, prec], 1).mT, (prec * mc.square()).sum(1)
        else:
            a, b, scale = -2 * mc.mT, mc.square().sum(1), U.square().to(dtype)
        return _Group(index, log_norm.to(dtype), a.to(dtype).contiguous(), b.to(dtype).contiguous(),
                      scale)

    def _mahalanobis(self, group: _Group, F: torch.Tensor):
        """Squared Mahalanobis distances, shape (n, k), and for ``full`` the
        whitened residuals y_nk, shape (n, k, D); None otherwise.

        ``F`` is the chunk as :meth:`_features` lays it out.
        """
        ct = self.covariance_type
        if ct == "full":
            n, D = F.shape
            kD = group.a.shape[1]
            out = self._workspace(n * kD, F, "residuals").view(n, kD)
            Y = torch.addmm(group.b, F, group.a, out=out).view(n, kD // D, D)
            # one fused pass, no squared copy of Y
            return torch.linalg.vector_norm(Y, dim=2).square_(), Y
        if ct == "tied":
            Y = F @ group.a
            maha = Y.square().sum(1, keepdim=True) - 2 * Y @ group.b.mT + group.b.square().sum(1)
        elif ct == "diag":
            maha = torch.addmm(group.b, F, group.a)
        else:  # |x - c|^2 - 2 (x - c).m + |m|^2, from the two halves of F
            D = F.shape[1] // 2
            maha = torch.addmm(group.b, F[:, :D], group.a).add_(F[:, D:].sum(1, keepdim=True))
            maha *= group.scale
        return maha.clamp_min_(0.0), None

    def _workspace(self, size: int, like: torch.Tensor, role: str) -> torch.Tensor:
        """A reused flat buffer of at least ``size`` elements for a chunk's work.

        A fresh multi-megabyte tensor per chunk comes from the system (mmap)
        and pays a page fault on every first touch: as much as the GEMM
        that fills it. One buffer per role and dtype lives until the next
        chunk; what it holds is never kept beyond its own chunk.
        """
        key = (role, like.dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < size or buf.device != like.device:
            buf = torch.empty(size, dtype=like.dtype, device=like.device)
            self._buffers[key] = buf
        return buf[:size]

    def _features(self, prep: _Prepared, X: torch.Tensor) -> list[tuple[_Group, torch.Tensor]]:
        """Each group with the chunk as its E-step reads it, once per dtype.

        The chunk is centred at c in (at least) the data's own precision, then
        cast to the group's dtype; for diag and spherical it is laid out
        [x - c | (x - c)^2], shape (n, 2D), so that one GEMM gives the
        Mahalanobis terms and one more both statistics.
        """
        out, done = [], {}
        for group in prep.groups:
            dtype = group.dtype
            if dtype not in done:
                if dtype == torch.float64 or X.dtype == torch.float64:
                    Xc = (X.to(torch.float64) - prep.centre).to(dtype)
                else:
                    Xc = X - prep.centre.to(X.dtype)
                if self.covariance_type in ("diag", "spherical"):
                    n, D = Xc.shape
                    F = self._workspace(2 * n * D, Xc, "features").view(n, 2 * D)
                    F[:, :D] = Xc
                    torch.mul(Xc, Xc, out=F[:, D:])
                    Xc = F
                done[dtype] = Xc
            out.append((group, done[dtype]))
        return out

    def _log_joint_columns(self, prep: _Prepared, features):
        """log p(x, z) less the offset, shape (n, K), with the groups' columns side
        by side (see ``prep.order``), and each group's whitened residuals (full)
        or None.

        In the widest dtype of the groups: a component sent to float64 keeps
        float64 through its responsibilities (the fits that need it, components
        collapsing onto a subspace, amplify any rounding of them).
        """
        columns, residuals = [], []
        for group, F in features:
            maha, Y = self._mahalanobis(group, F)
            columns.append(group.log_norm - 0.5 * maha)
            residuals.append(Y)
        if len(columns) == 1:
            return columns[0], residuals
        return torch.cat([c.to(prep.dtype) for c in columns], 1), residuals

    def _exact_pairs(self, prep: _Prepared, X: torch.Tensor, lj: torch.Tensor, resp=None) -> _Pairs:
        """Recompute :class:`_Exact`'s components in float64 where they matter.

        With ``lj`` (the float32 log joint of the chunk, less the offset):
        the pairs within the margin of their row's best get their float64
        value, the others -inf, in place.  With ``resp`` instead (statistics
        from given responsibilities), the pairs with a positive one.
        """
        ex = prep.exact
        first = prep.n_components - ex.index.shape[0]  # their columns: the last ones
        if resp is None:
            cols = lj[:, first:]
            top = lj.amax(1, keepdim=True)
            rows, slots = torch.nonzero(cols >= top - ex.margin).unbind(1)
        else:
            rows, slots = torch.nonzero(resp[:, first:] > 0).unbind(1)
        residual = X[rows].to(torch.float64) - prep.centre
        if resp is None:
            maha = ((residual - ex.m[slots]).square() * ex.precision[slots]).sum(1)
            cols.fill_(-math.inf)
            cols[rows, slots] = (ex.log_norm[slots] - 0.5 * maha).to(cols.dtype)
        return _Pairs(rows, slots, residual)

    def _exact_statistics(self, prep: _Prepared, pairs: _Pairs, rw: torch.Tensor) -> dict:
        """``s1`` and ``s2`` of the :class:`_Exact` components, float64 sums over the
        recomputed pairs (``rw`` in the E-step's column order)."""
        ex = prep.exact
        first = prep.n_components - ex.index.shape[0]
        r = rw[pairs.rows, first + pairs.slots].to(torch.float64)
        rx = pairs.residual * r[:, None]
        zeros = pairs.residual.new_zeros((ex.index.shape[0], pairs.residual.shape[1]))
        return {"s1": zeros.index_add(0, pairs.slots, rx),
                "s2": zeros.index_add(0, pairs.slots, rx * pairs.residual)}

    def log_joint_shifted(self, params: GaussianMixtureParams, X: torch.Tensor):
        """log p(x, z=k) less a constant, for every sample and component.

        Returns
        -------
        log_joint : Tensor, shape (n, K)
            In the compute dtype (float64 when a component needs it).
        offset : float
            The constant: log p(x, z=k) = log_joint + offset.
        """
        prep = self.prepare(params)
        lj, _ = self._log_joint_columns(prep, self._features(prep, X))
        if prep.exact is not None:
            self._exact_pairs(prep, X, lj)
        if prep.order is not None:
            lj = lj.index_select(1, torch.argsort(prep.order))
        return lj, prep.offset

    def log_joint(self, params: GaussianMixtureParams, X: torch.Tensor) -> torch.Tensor:
        """log p(x, z=k) for every sample and component.

        Parameters
        ----------
        X : Tensor, shape (n, D)

        Returns
        -------
        Tensor, shape (n, K)
        """
        lj, offset = self.log_joint_shifted(params, X)
        return lj + offset

    # ----------------------------------------------------------------- E-step
    def statistics_from_responsibilities(
        self, params: GaussianMixtureParams, X, resp, weight
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

        Returns
        -------
        dict of float64 tensors
            ``nk`` (K,) and ``s1`` (K, D): sum_n r_nk y_nk (full) or
            sum_n r_nk (x_n - c); ``s2``: (K, D, D) sum r y y^T (full),
            (D, D) sum_n w_n (x_n - c)(x_n - c)^T (tied), (K, D)
            sum r (x - c)^2 elementwise (diag, spherical).
        """
        prep = self.prepare(params)
        features = self._features(prep, X)
        if prep.order is not None:
            resp = resp[:, prep.order]
        pairs = None if prep.exact is None else self._exact_pairs(prep, X, None, resp)
        return self._statistics(prep, features, [None] * len(features), resp, weight, pairs)

    def _statistics(self, prep: _Prepared, features, residuals, resp, weight, pairs=None):
        """The statistics of :meth:`statistics_from_responsibilities`, from the
        responsibilities in the E-step's column order, back in component order
        (and float64 sums for the recomputed ``pairs``)."""
        f64 = torch.float64
        rw = resp if weight is None else resp * weight[:, None].to(resp.dtype)
        parts, start = [], 0
        for (group, F), Y in zip(features, residuals):
            stop = start + group.size - (0 if pairs is None else prep.exact.index.shape[0])
            rw_g = rw if stop - start == rw.shape[1] else rw[:, start:stop]
            start = stop
            parts.append(self._group_statistics(group, F, rw_g.to(F.dtype), Y))
        if pairs is not None:
            parts.append(self._exact_statistics(prep, pairs, rw))
        stats = {key: parts[0][key] if len(parts) == 1 else torch.cat([p[key] for p in parts])
                 for key in parts[0]}
        stats["nk"] = rw.sum(0, dtype=f64)
        if prep.order is not None:
            for key, value in stats.items():
                stats[key] = torch.empty_like(value).index_copy_(0, prep.order, value)
        if self.covariance_type == "tied":  # pooled over components: in the widest dtype
            Xc = features[-1][1]
            xw = Xc if weight is None else Xc * weight[:, None].to(Xc.dtype)
            stats["s2"] = (xw.mT @ Xc).to(f64)
        return stats

    def _group_statistics(self, group: _Group, F, rw, Y) -> dict[str, torch.Tensor]:
        """``s1`` (and ``s2`` but for tied) of one group's components, float64."""
        f64 = torch.float64
        ct = self.covariance_type
        if ct == "full":
            if Y is None:
                Y = self._mahalanobis(group, F)[1]
            Yk, rwk = self._active_rows(Y, rw)  # (k, n', D), (k, n')
            weighted = Yk * rwk.unsqueeze(2)
            return {"s1": weighted.sum(1).to(f64), "s2": torch.bmm(weighted.mT, Yk).to(f64)}
        if ct == "tied":
            return {"s1": (rw.mT @ F).to(f64)}
        both = (rw.mT @ F).to(f64)  # (k, 2D): sums of x - c and of (x - c)^2
        D = both.shape[1] // 2
        return {"s1": both[:, :D], "s2": both[:, D:]}

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
        if Y.dtype == torch.float32 and n >= 64:
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
        prep = self.prepare(params)
        features = self._features(prep, X)
        lj, residuals = self._log_joint_columns(prep, features)
        pairs = None if prep.exact is None else self._exact_pairs(prep, X, lj)
        resp, log_px = _normalise_log(lj)
        stats = self._statistics(prep, features, residuals, resp, weight, pairs)
        lp = log_px.to(torch.float64) + prep.offset
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

        Raises
        ------
        PrecisionLostError
            When a component's statistics were summed in float32 but its new
            parameters are too narrow for float32 (:func:`float32_error`):
            its variance came out of a difference that float32 cannot resolve.
        """
        new = self.from_moments(self.moments(stats, params))
        if self.dtype != torch.float64:
            summed32 = self._float32_components(self.prepare(params))
            lost = summed32 & (float32_error(new, self.covariance_type) > FLOAT32_TOLERANCE)
            if bool(lost.any()):
                self._pending = lost
                raise PrecisionLostError(
                    f"{int(lost.sum())} component(s) became too narrow for float32 statistics.")
        return new

    @staticmethod
    def _float32_components(prep: _Prepared) -> torch.Tensor:
        """Which components ``prep`` computes in float32, a boolean mask (K,)."""
        mask = torch.zeros(prep.n_components, dtype=torch.bool, device=prep.centre.device)
        for group in prep.groups:
            if group.dtype != torch.float64:
                mask[slice(None) if group.index is None else group.index] = True
        if prep.exact is not None:
            mask[prep.exact.index] = False
        return mask

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

    def statistics_from_labels(self, centres: torch.Tensor, X, labels, weight) -> dict[str, torch.Tensor]:
        """Statistics of hard assignments, in float64, about each row's own centre.

        The initialisation's M-step: each row belongs to one component (its
        nearest centre), so a full covariance needs only its own rows (n D^2
        work instead of the E-step's n K D^2), and a component of identical
        rows at its centre gets exactly zero spread.  Additive over batches;
        :meth:`moments_from_labels` turns the sums into moments.

        Parameters
        ----------
        centres : Tensor, shape (K, D)
        X : Tensor, shape (n, D)
        labels : LongTensor, shape (n,)
        weight : Tensor of shape (n,) or None

        Returns
        -------
        dict of float64 tensors
            ``nk`` (K,); ``s1`` (K, D) sum w (x - centre); ``s2`` sum w r r^T
            with r = x - centre: (K, D, D) full, pooled (D, D) tied, (K, D)
            elementwise diag and spherical.
        """
        f64 = torch.float64
        K, D = centres.shape
        w = (torch.ones(X.shape[0], dtype=f64, device=X.device) if weight is None
             else weight.to(f64))
        zeros = centres.new_zeros
        R = X.to(f64) - centres.to(f64)[labels]
        Rw = R * w[:, None]
        stats = {"nk": zeros(K, dtype=f64).index_add_(0, labels, w),
                 "s1": zeros(K, D, dtype=f64).index_add_(0, labels, Rw)}
        ct = self.covariance_type
        if ct == "tied":
            stats["s2"] = Rw.mT @ R
        elif ct in ("diag", "spherical"):
            stats["s2"] = zeros(K, D, dtype=f64).index_add_(0, labels, Rw * R)
        else:
            order = torch.argsort(labels, stable=True)
            R, Rw = R[order], Rw[order]
            stats["s2"] = zeros(K, D, D, dtype=f64)
            start = 0
            for k, count in enumerate(torch.bincount(labels, minlength=K).tolist()):
                if count:
                    stats["s2"][k] = Rw[start:start + count].mT @ R[start:start + count]
                start += count
        return stats

    def moments_from_labels(self, stats, centres: torch.Tensor) -> Moments:
        """Moments from :meth:`statistics_from_labels`'s sums (summed over batches)."""
        f64 = torch.float64
        nk = stats["nk"]
        shift = stats["s1"] / nk.clamp_min(10 * torch.finfo(f64).eps)[:, None]
        means = centres.to(f64) + shift
        ct = self.covariance_type
        if ct == "full":
            n = nk.clamp_min(10 * torch.finfo(f64).eps)[:, None, None]
            return Moments(nk, means, stats["s2"] / n - shift.unsqueeze(2) * shift.unsqueeze(1))
        if ct == "tied":
            return Moments(nk, means, (stats["s2"] - (shift.mT * nk) @ shift) / nk.sum())
        n = nk.clamp_min(10 * torch.finfo(f64).eps)[:, None]
        return Moments(nk, means, (stats["s2"] / n - shift.square()).clamp_min(0.0))

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

