"""The mean-field variational inference engine for conjugate models.

Models such as LDA have global latent variables (the topics, with
variational parameters lambda) and local ones per data item (each
document's topic mixture and word assignments).  Mean-field VI picks
q(global) q(local) to maximise the ELBO; for conjugate-exponential models
each factor has a closed-form coordinate update, and the global update
depends on the data only through *expected sufficient statistics*, which
are additive over items.  The engine therefore runs on the same seam as
EM (:mod:`elbokit.inference.em`): zero the statistics, add each batch's,
reduce, maximise.

* **Batch** (variational EM, Blei et al. 2003): every iteration runs the
  local updates over every batch (warm-started from the previous
  iteration's local state, so that the bound never decreases), then sets
  the global parameters to their optimum given the summed statistics.
* **Online** (stochastic VI, Hoffman et al. 2010): for a mini-batch of
  ``b`` items out of ``total``, the optimum is computed from the batch's
  statistics scaled by ``total / b``, and the global natural parameters
  move towards it with the step rho_t = (tau0 + t)^-kappa, kappa in
  (0.5, 1] (a natural-gradient step).

A model supplies (see :class:`ConjugateVIModel`) the local step, the
global optimum given statistics, the blend of two global parameter sets
and the global part of the bound.  The bound is reported per *unit* of
data, the unit being the model's (words for LDA), so that ``tol`` means
the same at any data size.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from elbokit.inference.distributed import checked, checker
from elbokit.inference.em import ConvergenceWarning, Statistics, _Progress, add_statistics


@dataclass
class LocalResult:
    """What a local step returns for one batch.

    Attributes
    ----------
    stats : dict of str to float64 tensors
        Additive expected sufficient statistics of the batch.
    bound : float64 scalar tensor
        The batch's (local) terms of the ELBO.
    n_items : int
        Number of items (documents) in the batch.
    n_units : float64 scalar tensor
        Number of units (words) the bound is normalised by.
    local : Any
        The batch's local variational parameters, to warm-start the next pass.
    """

    stats: Statistics
    bound: torch.Tensor
    n_items: int
    n_units: torch.Tensor
    local: Any = None


class ConjugateVIModel(Protocol):
    """The math a conjugate mean-field model provides to the engine."""

    def local_step(self, params: Any, batch: Any, local: Any) -> LocalResult:
        """Optimise the local factors of one batch given the global ones."""
        ...

    def maximize(self, stats: Statistics, params: Any, scale: float) -> Any:
        """The optimal global parameters given ``scale`` times ``stats``."""
        ...

    def blend(self, params: Any, target: Any, rho: float) -> Any:
        """(1 - rho) * params + rho * target, in natural parameters."""
        ...

    def global_bound(self, params: Any) -> torch.Tensor:
        """E_q[log p(global)] - E_q[log q(global)], float64."""
        ...


@dataclass
class VIRun:
    """Outcome of a variational fit.

    Attributes
    ----------
    params : Any
        The global variational parameters.
    lower_bounds : list of float
        Per-unit ELBO: for batch VI, at each iteration (after the local
        updates, before the global one; after the global one for a model
        with ``bound_after_update(stats, old, new, bound)``) and, last,
        under the returned parameters; for online VI, the per-pass estimate of
        :func:`online_bound`.
    converged : bool
    n_iter : int
        Iterations (batch) or passes (online).
    locals : list
        Per-batch local state after the last pass (batch VI).
    n_updates : int
        Global updates made (online: the step counter t).
    """

    params: Any
    lower_bounds: list[float] = field(default_factory=list)
    converged: bool = False
    n_iter: int = 0
    locals: list = field(default_factory=list)
    n_updates: int = 0

    @property
    def lower_bound(self) -> float:
        return self.lower_bounds[-1]


def _check_finite(value: float, what: str) -> float:
    if value != value or value in (float("inf"), float("-inf")):
        raise FloatingPointError(
            f"the {what} became {value}: the parameters are degenerate. Check the counts, "
            "raise the priors, or use dtype='float64'."
        )
    return value


def accumulate(model: ConjugateVIModel, params, source, locals_: list | None = None,
               reduce: Callable | None = None):
    """One pass of local steps over ``source``.

    Returns
    -------
    stats : Statistics
        Summed (and reduced) statistics.
    bound : float
        The per-unit ELBO of the pass: local terms plus the global term.
    locals_ : list
        The updated local state per batch.
    """
    def local_pass():
        total: Statistics | None = None
        new_locals = []
        for i, batch in enumerate(source):
            local = None if locals_ is None or i >= len(locals_) else locals_[i]
            res = model.local_step(params, batch, local)
            new_locals.append(res.local)
            stats = dict(res.stats, _bound=res.bound.to(torch.float64),
                         _units=torch.as_tensor(res.n_units, dtype=torch.float64))
            total = add_statistics(total, stats)
        if total is None:
            if reduce is None or not hasattr(model, "zero_statistics"):
                raise ValueError("the data source yielded no batch: it is empty.")
            zeros = model.zero_statistics(params)  # an empty shard of a distributed fit
            like = next(iter(zeros.values()))
            total = dict(zeros, _bound=like.new_zeros(()), _units=like.new_zeros(()))
        return total, new_locals

    total, new_locals = checked(checker(reduce), local_pass)
    if reduce is not None:
        total = reduce(total)
    local_bound = total.pop("_bound")
    units = total.pop("_units")
    bound = float((local_bound + model.global_bound(params)) / units)
    return total, _check_finite(bound, "ELBO"), new_locals


def run_batch_vi(model: ConjugateVIModel, params, source, *, tol: float, max_iter: int,
                 verbose: int = 0, reduce: Callable | None = None, locals_=None,
                 desc: str = "batch VI", warn: bool = True, capped: bool = False) -> VIRun:
    """Batch (variational EM) coordinate ascent until the per-unit bound settles.

    Converged means the bound changed by less than ``tol`` between two
    iterations.  A last pass of local steps computes the bound of the
    returned parameters and the matching local state. ``capped``: ``max_iter``
    is the intended length of a run whose globals alone are wanted (a start
    for another method): no last pass, and stopping there is no failure.

    Warns
    -----
    ConvergenceWarning
        If ``max_iter`` iterations ran without converging.
    """
    run = VIRun(params=params, locals=list(locals_ or []))
    progress = _Progress(verbose, max_iter, desc)
    for n_iter in range(1, max_iter + 1):
        stats, bound, run.locals = accumulate(model, run.params, source, run.locals, reduce)
        run.lower_bounds.append(bound)
        old, run.params = run.params, model.maximize(stats, run.params, 1.0)
        run.n_updates += 1
        after = getattr(model, "bound_after_update", None)
        if after is not None:  # the bound at the updated globals, where the statistics tell it
            bound = run.lower_bounds[-1] = after(stats, old, run.params, bound)
        if progress.settled(run, n_iter, bound, tol):
            break
    if not capped:
        _, last, run.locals = accumulate(model, run.params, source, run.locals, reduce)
        run.lower_bounds.append(last)
    progress.close(run, capped=capped)
    if warn and not capped and not run.converged and max_iter > 0:
        warnings.warn(
            f"variational inference did not converge in max_iter={max_iter} iterations "
            f"(tol={tol}); increase max_iter or tol.",
            ConvergenceWarning, stacklevel=3,
        )
    return run


def step_size(t: int, tau0: float, kappa: float) -> float:
    """The online step rho_t = (tau0 + t)^-kappa, t = 1, 2, ... counting updates.

    With tau0 >= 0 and kappa in (0.5, 1], sum rho_t diverges and sum rho_t^2
    converges (Robbins-Monro); the first step (tau0 = 0) is 1.
    """
    if t < 1:
        raise ValueError(f"t={t} must be >= 1: updates are counted from 1.")
    return float((tau0 + t) ** (-kappa))


def _empty_result(model: ConjugateVIModel, params) -> LocalResult:
    """The local result of no item (a rank with nothing of a mini-batch)."""
    stats = model.zero_statistics(params)
    like = next(iter(stats.values()))
    return LocalResult(stats, like.new_zeros(()), 0, like.new_zeros(()))


def online_step(model: ConjugateVIModel, params, batch, *, total: float, t: int,
                tau0: float, kappa: float, local=None, reduce: Callable | None = None):
    """One stochastic natural-gradient step on a mini-batch.

    ``t`` is the number of updates made before this one; the step is
    rho = (tau0 + t + 1)^-kappa. ``local`` is handed to the model's local
    step as is (None: a fresh start; or a model-defined warm-start store).
    With ``reduce`` (several processes), ``batch`` is this rank's part of
    the mini-batch (possibly no item): statistics, item and unit counts and
    bound terms are summed over ranks before the identical global step.

    Returns
    -------
    params : the blended global parameters
    local_bound : float64 tensor
        The mini-batch's local bound terms scaled by ``total / n_items`` (an
        unbiased estimate of the data set's), under the parameters before the step.
    units : float64 tensor
        The mini-batch's units, scaled alike.
    """
    def local_step():
        if reduce is not None and getattr(batch, "n_docs", 1) == 0:
            return _empty_result(model, params)
        return model.local_step(params, batch, local)

    res = checked(checker(reduce), local_step)
    stats, bound, units = res.stats, res.bound.to(torch.float64), res.n_units
    n_items = float(res.n_items)
    if reduce is not None:
        f64 = dict(dtype=torch.float64, device=bound.device)
        summed = reduce(dict(stats, _bound=bound, _units=torch.as_tensor(units, **f64),
                             _items=torch.tensor(n_items, **f64)))
        bound, units, n_items = summed.pop("_bound"), summed.pop("_units"), float(summed.pop("_items"))
        stats = summed
    if n_items <= 0:
        raise ValueError("a mini-batch held no item: the data source yielded an empty batch.")
    scale = float(total) / n_items
    target = model.maximize(stats, params, scale)
    new = model.blend(params, target, step_size(t + 1, tau0, kappa))
    return new, bound * scale, torch.as_tensor(units).to(torch.float64) * scale


def online_bound(model: ConjugateVIModel, params, local_bounds, units) -> float:
    """Per-unit ELBO estimate from scaled mini-batch terms: (mean local + global) / mean units.

    The global term is taken at ``params`` (once, not per mini-batch: it costs
    O(size of the globals)).
    """
    n = len(local_bounds)
    local = sum(local_bounds) / n
    bound = float((local + model.global_bound(params)) / (sum(units) / n))
    return _check_finite(bound, "ELBO estimate")


def run_online_vi(model: ConjugateVIModel, params, source, *, total: float, tau0: float,
                  kappa: float, max_iter: int, tol: float, verbose: int = 0, t0: int = 0,
                  desc: str = "online VI", local=None, reduce: Callable | None = None) -> VIRun:
    """Stochastic VI: ``max_iter`` passes over ``source`` (mini-batches).

    The per-pass bound is :func:`online_bound` over the pass's mini-batches,
    with the global term at the end of the pass; the run stops early when it
    changes by less than ``tol`` between passes. ``local``, if given, is a
    model-defined store handed to every local step (e.g. to warm-start the
    local updates of items seen at an earlier pass). With ``reduce``, every
    rank's ``source`` yields its part of the same sequence of mini-batches
    (see :func:`online_step`).
    """
    run = VIRun(params=params, n_updates=t0)
    progress = _Progress(verbose, max_iter, desc)
    for n_iter in range(1, max_iter + 1):
        local_bounds, units = [], []
        for batch in source:
            run.params, b, u = online_step(model, run.params, batch, total=total,
                                           t=run.n_updates, tau0=tau0, kappa=kappa,
                                           local=local, reduce=reduce)
            run.n_updates += 1
            local_bounds.append(b)
            units.append(u)
        bound = online_bound(model, run.params, local_bounds, units)
        run.lower_bounds.append(bound)
        if progress.settled(run, n_iter, bound, tol):
            break
    progress.close(run)
    return run
