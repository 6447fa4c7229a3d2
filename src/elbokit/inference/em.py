"""The expectation-maximisation (EM) engine.

EM maximises log p(x) for models whose posterior p(z | x) is tractable.  The
E-step sets q(z) = p(z | x), so that KL(q || p(z | x)) = 0 and the evidence
lower bound (ELBO) touches log p(x); the M-step maximises the expected
complete log-likelihood E_q[log p(x, z)].  Neither step can decrease log p(x).

This module knows the loop and nothing of any model.  A model supplies
(see :class:`EMModel`):

* ``expected_statistics(params, X, weight)``: the E-step on one batch, returning
  additive expected sufficient statistics (float64) and the weighted sum of
  log p(x) over the batch;
* ``maximize(stats, params)``: the M-step, the closed-form maximiser given the
  statistics summed over the whole data set;
* optionally, for models that compute in reduced precision (float32),
  ``refine()``, which moves their work to more precision and says whether it
  did, and ``bound_rounding(bound)``, how far rounding may move the bound.
  EM never decreases the bound, so a fall beyond rounding, or an arithmetic
  failure (``ArithmeticError``) of a step, means precision was lost: the
  engine refines the model and redoes that step.

One iteration is: zero the statistics, add each batch's, reduce (a hook for
several processes), maximise.  The bound reported is the *per-sample mean*
log-likelihood, so that ``tol`` means the same at any number of samples.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from sklearn.exceptions import ConvergenceWarning as _SklearnConvergenceWarning
from tqdm.auto import tqdm

from elbokit.inference.distributed import checked, checker

Statistics = dict[str, torch.Tensor]


class ConvergenceWarning(_SklearnConvergenceWarning):
    """EM stopped at ``max_iter`` before the bound changed by less than ``tol``.

    A subclass of scikit-learn's, so existing warning filters apply.
    """


class EMModel(Protocol):
    """The math an EM-fitted model provides to the engine."""

    def expected_statistics(
        self, params: Any, X: torch.Tensor, weight: torch.Tensor | None
    ) -> tuple[Statistics, torch.Tensor]:
        """E-step on one batch.

        Returns
        -------
        stats : dict of str to float64 tensors
            Additive expected sufficient statistics of the batch.
        log_likelihood : float64 scalar tensor
            Sum over the batch of weight * log p(x | params).
        """
        ...

    def maximize(self, stats: Statistics, params: Any) -> Any:
        """M-step: the parameters maximising E_q[log p(x, z)] given ``stats``."""
        ...


@dataclass
class EMRun:
    """Outcome of one EM run from one initialisation.

    Attributes
    ----------
    params : Any
        The model's parameters after the last M-step.
    lower_bounds : list of float
        Per-sample mean log-likelihood before each M-step and, last, under the
        returned parameters (length ``n_iter + 1``).
    converged : bool
    n_iter : int
        Number of EM iterations (M-steps) run.
    """

    params: Any
    lower_bounds: list[float] = field(default_factory=list)
    converged: bool = False
    n_iter: int = 0

    @property
    def lower_bound(self) -> float:
        """Per-sample mean log-likelihood of the returned parameters."""
        return self.lower_bounds[-1]


def add_statistics(total: Statistics | None, stats: Statistics) -> Statistics:
    """``total + stats`` key by key, in float64 (``stats`` itself when ``total`` is None)."""
    if total is None:
        return {k: v.to(torch.float64).clone() for k, v in stats.items()}
    for k, v in stats.items():
        total[k] += v
    return total


def _local_sums(model: EMModel, params, source) -> Statistics:
    """This process's E-step: the statistics summed over its batches."""
    total: Statistics | None = None
    for X, weight in source:
        stats, log_lik = model.expected_statistics(params, X, weight)
        n = X.new_tensor(X.shape[0], dtype=torch.float64) if weight is None else weight.sum()
        stats = dict(stats, _log_likelihood=log_lik, _weight=n.to(torch.float64))
        total = add_statistics(total, stats)
    if total is None:
        raise ValueError("the data source yielded no batch: it is empty.")
    return total


def accumulate(model: EMModel, params, source, reduce: Callable | None = None):
    """One E-step over every batch of ``source``.

    Parameters
    ----------
    reduce : callable, optional
        Combines the local sums across processes (see
        :class:`elbokit.inference.distributed.Reducer`).  When it has a
        ``check`` method, the ranks first agree that every local step
        succeeded, so that an error on one rank is raised on all of them.

    Returns
    -------
    stats : Statistics
        The summed (and reduced) statistics.
    mean_log_likelihood : float
        Weighted per-sample mean of log p(x | params), plus log p(params) / n
        for a model with a ``log_prior`` (MAP-EM).
    """
    total = checked(checker(reduce), lambda: _local_sums(model, params, source))
    if reduce is not None:
        total = reduce(total)
    objective = total.pop("_log_likelihood")
    log_prior = getattr(model, "log_prior", None)
    if log_prior is not None:  # MAP-EM: the objective is log p(X | theta) + log p(theta)
        objective = objective + log_prior(params)
    mean = float(objective / total.pop("_weight"))
    if mean != mean or mean in (float("inf"), float("-inf")):
        raise FloatingPointError(
            f"the log-likelihood became {mean}: the data or the parameters are degenerate. "
            "Increase reg_covar, scale the data, or use dtype='float64'."
        )
    return total, mean


class _Progress:
    """Per-iteration reporting: nothing, a progress bar, or one line per iteration."""

    def __init__(self, verbose: int, max_iter: int, desc: str, previous: float = -float("inf"),
                 leave_plateaus: bool = False, quantity: str = "bound"):
        self.verbose = verbose
        self.quantity = quantity  # what is reported: the bound, or a sampler's log-likelihood
        self.previous = previous  # the last bound reported
        self.leave_plateaus = leave_plateaus
        self.last_change = None
        self.bar = None
        if verbose == 1:
            self.bar = tqdm(total=max_iter, desc=desc, leave=False, file=sys.stderr)
        elif verbose >= 2:
            print(f"{desc}", flush=True)

    def update(self, n_iter: int, bound: float) -> float:
        """Report iteration ``n_iter``'s bound; returns its change since the last report."""
        change = bound - self.previous
        self.previous = bound
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({self.quantity: f"{bound:.5f}", "change": f"{change:.2e}"})
        elif self.verbose >= 2:
            print(f"  iteration {n_iter:4d}  {self.quantity} {bound: .6f}  change {change: .3e}",
                  flush=True)
        return change

    def settled(self, run, n_iter: int, bound: float, tol: float) -> bool:
        """Report iteration ``n_iter`` of ``run``; True (and ``run.converged``) when the
        bound moved by less than ``tol`` since the last report."""
        run.n_iter = n_iter
        change = self.update(n_iter, bound)
        # near a maximum EM's gains shrink (linear convergence); a first small gain
        # after a large one, or a small gain larger than the last, is the bound on or
        # leaving a plateau (a saddle), not settling
        last, self.last_change = self.last_change, change
        plateau = self.leave_plateaus and (last is None or abs(last) >= tol or change > last)
        run.converged = abs(change) < tol and not plateau
        return run.converged

    def close(self, run: EMRun, capped: bool = False):
        """Close the bar and say how the run ended; ``capped``: its ``max_iter`` was the
        intended length (a start for something else), so not converging is no news."""
        if self.bar is not None:
            self.bar.close()
        if self.verbose >= 1:
            state = "converged" if run.converged else \
                "stopped as asked" if capped else "did not converge"
            print(
                f"  {state} after {run.n_iter} iterations, bound {run.lower_bound:.6f}",
                file=sys.stderr if self.bar is not None else sys.stdout,
                flush=True,
            )


def _refine(model) -> bool:
    """Ask the model for more precision; True when it could give some."""
    refine = getattr(model, "refine", None)
    return bool(refine is not None and refine())


def _refined(model, step: Callable):
    """``step()``, redone after :func:`_refine` for as long as it fails
    arithmetically and the model can still gain precision."""
    while True:
        try:
            return step()
        except ArithmeticError:
            if not _refine(model):
                raise


def _rounding(model, bound: float) -> float:
    """How far rounding may move a bound of this size, by the model's word (0 if silent)."""
    rounding = getattr(model, "bound_rounding", None)
    return rounding(bound) if rounding is not None else 0.0


def _fell(model, bound: float, last: float) -> bool:
    """True when ``bound`` lies below ``last`` by more than the model's rounding
    (a lost climb) and the model has just been refined to redo the step."""
    return bound < last - _rounding(model, last) and _refine(model)


def run_em(
    model: EMModel,
    params,
    source,
    *,
    tol: float,
    max_iter: int,
    verbose: int = 0,
    desc: str = "EM",
    reduce: Callable | None = None,
    previous: float = -float("inf"),
    leave_plateaus: bool = False,
) -> EMRun:
    """Iterate E- and M-steps from ``params`` until the bound settles.

    Converged means the per-sample mean bound changed by less than ``tol``
    between two iterations.  After the loop, one more E-step computes the
    bound of the returned parameters (the last entry of ``lower_bounds``).

    When the bound falls by more than the model's rounding, the model is
    refined (see the module docstring) and the step that lost it is redone
    from its starting parameters, its bound recomputed; a step that fails
    arithmetically is retried the same way.

    Parameters
    ----------
    previous : float
        The bound a warm start continues from (the last per-iteration bound of
        the run it continues), so that convergence is detected across calls.
    leave_plateaus : bool
        Converged only after two gains below ``tol`` in a row, the second not
        the larger: a lone small gain, or a growing one, is the bound on or
        leaving a plateau (models whose
        symmetric starts sit near a saddle, as HMMs' uniform transitions).
        False keeps scikit-learn's rule (|change| < tol).
    """
    run = EMRun(params=params)
    progress = _Progress(verbose, max_iter, desc, previous, leave_plateaus)

    def step(p):
        """E-step at p, then M-step: (bound of p, new parameters)."""
        def attempt():
            stats, bound = accumulate(model, p, source, reduce)
            return bound, model.maximize(stats, p)
        return _refined(model, attempt)

    def bound_of(p):
        return _refined(model, lambda: accumulate(model, p, source, reduce)[1])

    before = None  # the parameters the last M-step started from
    for n_iter in range(1, max_iter + 1):
        bound, new = step(run.params)
        if before is not None and _fell(model, bound, run.lower_bounds[-1]):
            run.lower_bounds[-1], run.params = step(before)
            progress.previous = run.lower_bounds[-1]
            bound, new = step(run.params)
        run.lower_bounds.append(bound)
        before, run.params = run.params, new
        if progress.settled(run, n_iter, bound, tol):
            break
    final = bound_of(run.params)
    if before is not None and _fell(model, final, run.lower_bounds[-1]):
        run.lower_bounds[-1], run.params = step(before)
        final = bound_of(run.params)
    run.lower_bounds.append(final)
    progress.close(run)
    return run


def fit_em(
    runner: Callable[[Any], EMRun],
    initialize: Callable[[int], Any],
    *,
    n_init: int = 1,
    tol: float,
    max_iter: int,
    verbose: int = 0,
) -> EMRun:
    """Run EM from ``n_init`` initialisations and keep the best.

    Parameters
    ----------
    runner : callable
        ``runner(params)`` runs EM (exact or stepwise) from ``params`` and
        returns its :class:`EMRun`, e.g. ``functools.partial(run_em, model,
        source=..., ...)``.
    initialize : callable
        ``initialize(i)`` returns the starting parameters of restart ``i``.
    n_init : int
        Number of restarts; the run with the highest final bound is kept.
    tol, max_iter, verbose
        As given to the runner; used for the warning and progress lines.

    Warns
    -----
    ConvergenceWarning
        If the kept run did not converge.
    """
    best: EMRun | None = None
    for i in range(n_init):
        if verbose >= 2 and n_init > 1:
            print(f"restart {i + 1}/{n_init}", flush=True)
        run = runner(initialize(i))
        if best is None or run.lower_bound > best.lower_bound:
            best = run
    if not best.converged and max_iter > 0:
        warnings.warn(
            "Best performing initialization did not converge. Try different init parameters, "
            f"or increase max_iter, tol, or check for degenerate data. (EM ran max_iter={max_iter} "
            f"iterations; the bound still changed by more than tol={tol}.)",
            ConvergenceWarning,
            stacklevel=3,
        )
    return best


# --------------------------------------------------------------------------- stepwise EM
@dataclass(frozen=True)
class RobbinsMonro:
    """Step sizes rho_t = (t + offset)^-decay for stepwise (online) EM, t = 1, 2, ...

    Stepwise EM (Cappe & Moulines, 2009; Liang & Klein, 2009) replaces the
    full E-step by a stochastic approximation: after each mini-batch the
    running statistics move a step rho_t towards the batch's,
    s <- (1 - rho_t) s + rho_t s_batch.  It converges when sum rho_t = inf
    and sum rho_t^2 < inf, that is for 0.5 < decay <= 1.

    Parameters
    ----------
    offset : float, >= 0
        Delays the decay (larger: smaller early steps, more inertia).
    decay : float in (0.5, 1]
        Forgetting rate kappa.
    """

    offset: float = 2.0
    decay: float = 0.7

    def __post_init__(self):
        if not (isinstance(self.decay, (int, float)) and 0.5 < self.decay <= 1.0):
            raise ValueError(
                f"step_decay={self.decay!r} must lie in (0.5, 1] for stepwise EM to converge."
            )
        if not (isinstance(self.offset, (int, float)) and self.offset >= 0 and self.offset < float("inf")):
            raise ValueError(f"step_offset={self.offset!r} must be a finite number >= 0.")

    def __call__(self, t: int) -> float:
        return min(1.0, (t + self.offset) ** (-self.decay))


class StepwiseModel(EMModel, Protocol):
    """What stepwise EM needs beyond EM: statistics as blendable moments."""

    def moments(self, stats: Statistics, params: Any) -> Any: ...

    def moments_of(self, params: Any) -> Any: ...

    def blend(self, old: Any, new: Any, rho: float) -> Any: ...

    def from_moments(self, moments: Any) -> Any: ...


def stepwise_update(model: StepwiseModel, params, X, weight, rho: float):
    """One stepwise-EM update from one mini-batch.

    Returns
    -------
    params
        The new parameters.
    mean_log_likelihood : float
        The batch's mean log p(x) under the parameters *before* the update.
    """
    stats, log_lik = model.expected_statistics(params, X, weight)
    n = float(X.shape[0]) if weight is None else float(weight.sum())
    mean = float(log_lik) / n
    if mean != mean or abs(mean) == float("inf"):
        raise FloatingPointError(
            f"the log-likelihood of a mini-batch became {mean}: increase reg_covar, scale the "
            "data, or use dtype='float64'."
        )
    batch = model.moments(stats, params)
    blended = model.blend(model.moments_of(params), batch, rho)
    return model.from_moments(blended), mean


def run_stepwise(
    model: StepwiseModel,
    params,
    source,
    schedule: RobbinsMonro,
    *,
    tol: float,
    max_iter: int,
    first_step: int = 1,
    verbose: int = 0,
) -> tuple[EMRun, int]:
    """Stepwise EM over the mini-batches of ``source``, ``max_iter`` epochs at most.

    The bound recorded per epoch is the mean over its mini-batches of the
    batch log-likelihood before each update (a running estimate, stated as
    such); convergence is a change below ``tol`` between epochs.  The last
    entry of ``lower_bounds`` is the exact mean log-likelihood of the
    returned parameters (one full pass).

    Returns
    -------
    run : EMRun
    next_step : int
        The step counter t after the last update.
    """
    run = EMRun(params=params)
    progress = _Progress(verbose, max_iter, "stepwise EM")
    t = first_step
    for epoch in range(1, max_iter + 1):
        total, weight_sum = 0.0, 0.0
        for X, weight in source:
            run.params, mean = stepwise_update(model, run.params, X, weight, schedule(t))
            n = float(X.shape[0]) if weight is None else float(weight.sum())
            total, weight_sum, t = total + mean * n, weight_sum + n, t + 1
        bound = total / weight_sum
        run.lower_bounds.append(bound)
        if progress.settled(run, epoch, bound, tol):
            break
    _, final = accumulate(model, run.params, source)
    run.lower_bounds.append(final)
    progress.close(run)
    return run, t
