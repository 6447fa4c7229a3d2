"""The component-family protocol: what one family of distributions gives EM.

A *family* describes K components of one kind of distribution over the
columns of X, batched over the components (every tensor of parameters has
the component index k first).  Everything above it is shared: the mixture
over "which component" (:class:`elbokit.Mixture`), products over column
groups (:class:`~elbokit.families.Product`), HMM emissions.  A family is
math only; it never sees the loop, the data source or the estimator.

Parameters are a flat ``dict[str, Tensor]`` (float64, leading dimension K,
torch's names: ``probs``, ``rate``, ``loc``, ``covariance``, ...), so that
they save as tensors and validate against :meth:`Family.param_shapes`.

Missing values are NaN, treated as missing at random: ``log_prob``
marginalises them, ``statistics`` returns the expected complete-data
statistics given the observed entries, ``conditional_mean`` imputes them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

Params = dict[str, torch.Tensor]
Statistics = dict[str, torch.Tensor]
F64 = torch.float64


class Family(ABC):
    """K components of one distribution family (the unit of extension of EM).

    A subclass implements, with ``params`` a dict of float64 tensors whose
    first dimension is the component k, X of shape (n, D) in the compute
    dtype and ``resp`` of shape (n, K) (posterior weights, already multiplied
    by any sample weight):

    ``log_prob(params, X)`` -> (n, K)
        log p(x_n | z = k); NaN entries marginalised.
    ``statistics(params, X, resp)`` -> dict of float64 tensors
        Additive expected sufficient statistics (sums over rows), so that
        batches, processes and passes add up.  ``params`` are the E-step's
        parameters; a family may take its statistics relative to them (an
        *anchor*), and gets them back in ``maximize``.
    ``maximize(stats, params, fixed)`` -> params
        The weighted maximum-likelihood parameters given the summed
        statistics (the M-step); ``fixed`` holds frozen parameters that the
        other parameters must be maximised around.
    ``sample(params, z, generator)`` -> (n, D) float64
        One row from component z[i] for each i.
    ``n_parameters(params)`` -> int
        Free parameters of all K components (for BIC/AIC).
    ``param_shapes(K, D)`` -> dict of str to shape
        The schema of ``params``, used to validate saved models.

    and may override ``check`` (the data's support), ``initialize`` (default:
    one M-step from given responsibilities), ``embed`` (coordinates for the
    k-means initialisation), ``mean`` and ``conditional_mean`` (imputation)
    and ``statistics_of`` (stepwise EM).

    Attributes
    ----------
    name : str
        Short name, as given to ``Mixture(family=...)``.
    supports_missing : bool
        Whether NaN entries are handled (True for every built-in family
        except von Mises-Fisher).
    """

    name = "family"
    supports_missing = True

    # ------------------------------------------------------------ the protocol
    @abstractmethod
    def log_prob(self, params: Params, X: torch.Tensor) -> torch.Tensor:
        """log p(x_n | z = k), shape (n, K)."""

    @abstractmethod
    def statistics(self, params: Params | None, X: torch.Tensor, resp: torch.Tensor) -> Statistics:
        """Expected sufficient statistics given ``resp`` (n, K); float64, additive."""

    @abstractmethod
    def maximize(self, stats: Statistics, params: Params | None, fixed: Params | None = None) -> Params:
        """The weighted maximum-likelihood parameters from summed statistics."""

    @abstractmethod
    def sample(self, params: Params, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draw one row per entry of ``z`` (component indices), shape (len(z), D)."""

    @abstractmethod
    def n_parameters(self, params: Params) -> int:
        """Number of free parameters of all components."""

    @abstractmethod
    def param_shapes(self, n_components: int, n_features: int) -> dict[str, tuple]:
        """Shape of each parameter tensor."""

    # ------------------------------------------------------------ defaults
    def check(self, X: torch.Tensor, name: str = "X") -> torch.Tensor:
        """Check that the observed entries of X lie in the family's support; returns X."""
        if not self.supports_missing and has_missing(X):
            raise ValueError(
                f"{name} contains NaN, which the {self.name!r} family cannot marginalise: "
                "impute those entries first (e.g. sklearn.impute.SimpleImputer)."
            )
        if bool(torch.isinf(X).any()):
            raise ValueError(f"{name} contains inf: remove those rows or clip the values.")
        return X

    def initialize(self, X: torch.Tensor, resp: torch.Tensor, generator: torch.Generator) -> Params:
        """Starting parameters from initial responsibilities (one M-step)."""
        return self.maximize(self.statistics(None, X, resp), None)

    def embed(self, X: torch.Tensor) -> torch.Tensor:
        """Coordinates in which k-means seeds the components (NaN: the column mean)."""
        return fill_nan_with_column_means(X)

    def mean(self, params: Params) -> torch.Tensor:
        """E[x | z = k], shape (K, D)."""
        raise NotImplementedError(f"the {self.name!r} family has no mean.")

    def conditional_mean(self, params: Params, X: torch.Tensor) -> torch.Tensor:
        """E[x | x_observed, z = k], shape (n, K, D): observed entries kept, missing
        ones at their expectation (for factorised families: the component mean)."""
        mean = self.mean(params).to(X.dtype)
        miss = torch.isnan(X)
        return torch.where(miss[:, None, :], mean[None], X[:, None, :].nan_to_num(0.0))

    def statistics_of(self, params: Params, weights: torch.Tensor) -> Statistics:
        """Statistics whose ``maximize`` returns ``params``, for components of total
        weights ``weights`` (K,); what stepwise EM blends a batch's statistics into."""
        raise NotImplementedError(
            f"the {self.name!r} family does not support stepwise EM (statistics_of)."
        )

    def prepare(self, X: torch.Tensor, reducer=None) -> "Family":
        """The family made ready for data like X (a sample of the training rows):
        settings it finds in the data (e.g. the levels of categorical columns) are
        resolved in a copy; the default is the family itself.  ``reducer``: the
        process group's reducer, so that every rank resolves the same settings."""
        return self

    def work_per_row(self, n_components: int, n_features: int, missing: bool = False) -> int:
        """Elements of E-step work memory per row (chooses the chunk size)."""
        return n_components + n_features

    def get_config(self) -> dict:
        """JSON-able constructor arguments (for save/load)."""
        return {}

    def __elbokit_spec__(self) -> dict:
        """How :func:`elbokit.save` stores a family given as a hyperparameter."""
        return {"name": self.name, "config": self.get_config()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


# --------------------------------------------------------------------------- helpers
_LAST_OBSERVED: list = [None, None]  # the last batch seen and its result


def has_missing(X: torch.Tensor) -> bool:
    """Whether X holds a NaN: one sum (a NaN propagates; inf is refused upstream, and
    an overflow or inf - inf only sends the batch down the exact masked path)."""
    return X.numel() > 0 and bool(torch.isnan(X.sum()))


def observed(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(X with NaN replaced by 0, mask of observed entries in X's dtype, or None when
    every entry is observed).  Memoised for the last batch (density and statistics
    of one E-step ask for the same one)."""
    if _LAST_OBSERVED[0] is X:
        return _LAST_OBSERVED[1]
    if not has_missing(X):
        out = (X, None)
    else:
        miss = torch.isnan(X)
        out = (X.masked_fill(miss, 0.0), (~miss).to(X.dtype)) if bool(miss.any()) else (X, None)
    _LAST_OBSERVED[0], _LAST_OBSERVED[1] = X, out
    return out


def column_counts(resp: torch.Tensor, mask: torch.Tensor | None, n_features: int) -> torch.Tensor:
    """sum_n r_nk o_nj, the weight of observed entries per (component, column), float64."""
    if mask is None:
        return resp.sum(0, dtype=F64)[:, None].expand(-1, n_features).clone()
    return (resp.mT @ mask).to(F64)


def fill_nan_with_column_means(X: torch.Tensor) -> torch.Tensor:
    miss = torch.isnan(X)
    if not bool(miss.any()):
        return X
    counts = (~miss).sum(0).clamp_min(1)
    means = X.nan_to_num(0.0).sum(0) / counts
    return torch.where(miss, means.expand_as(X), X)


def safe_div(num: torch.Tensor, den: torch.Tensor, default) -> torch.Tensor:
    """num / den where den > 0, ``default`` (broadcast) elsewhere."""
    ok = den > 0
    default = torch.as_tensor(default, dtype=num.dtype, device=num.device).expand_as(num)
    return torch.where(ok, num / den.clamp_min(torch.finfo(den.dtype).tiny), default)


def clamp_probs(p: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Probabilities kept inside [eps, 1 - eps] (a 0 or 1 would make log p -inf)."""
    return p.clamp(eps, 1 - eps)


def log_gamma_const(X: torch.Tensor) -> torch.Tensor:
    """log x! for counts (lgamma(x + 1))."""
    return torch.lgamma(X + 1)


LOG_2PI = math.log(2 * math.pi)
