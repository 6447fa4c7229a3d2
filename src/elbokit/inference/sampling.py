"""Monte Carlo: a blocked Gibbs sampler over the sufficient-statistics seam.

For a conjugate model with global variables (LDA's topics) and local ones
per item (each document's topic mixture and word assignments), the blocked
Gibbs sampler alternates

1. for every batch: draw the local variables given the globals, and add
   the batch's (sampled, not expected) sufficient statistics;
2. draw the globals from their conditional posterior given the summed
   statistics.

Each block is drawn exactly from its full conditional, so the chain leaves
the posterior invariant; every draw of a block is one tensor operation
over the whole batch (no per-item Python loop).  After ``burn_in`` sweeps
the statistics are averaged: the Rao-Blackwellised estimate of the
posterior mean of the globals.

A model supplies (see :class:`GibbsModel`) ``sample_local`` and
``sample_global``.  All randomness comes from one ``torch.Generator``, so a
seed makes the chain repeatable.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from elbokit.inference.distributed import checked, checker
from elbokit.inference.em import Statistics, _Progress, add_statistics


class GibbsModel(Protocol):
    def sample_local(self, params: Any, batch: Any, local: Any, generator: torch.Generator):
        """Draw one batch's local variables.

        Returns
        -------
        stats : Statistics (float64)
            The batch's sufficient statistics under the draw.
        log_likelihood : float64 scalar tensor
            log p(batch | drawn locals' mixing weights, params), summed.
        n_units : float64 scalar tensor
        local : the new local state
        """
        ...

    def sample_global(self, stats: Statistics, params: Any, generator: torch.Generator) -> Any:
        """Draw the globals from their full conditional given ``stats``."""
        ...


@dataclass
class GibbsRun:
    """Outcome of a Gibbs run.

    Attributes
    ----------
    params : Any
        The last draw of the globals.
    mean_stats : Statistics
        Statistics averaged over the sweeps after burn-in.
    log_likelihoods : list of float
        Per-unit log-likelihood of each sweep's draw.
    n_iter : int
        Sweeps run.
    burn_in : int
        Sweeps discarded before averaging.
    converged : bool
        Whether the chain settled (see :func:`run_gibbs`) and the run stopped
        before ``n_sweeps``.
    locals : list
        Last local state per batch.
    """

    params: Any
    mean_stats: Statistics = field(default_factory=dict)
    log_likelihoods: list[float] = field(default_factory=list)
    n_iter: int = 0
    burn_in: int = 0
    converged: bool = False
    locals: list = field(default_factory=list)


def settled(values, window: int, tol: float, n_batches: int = 5) -> bool:
    """Whether the chain has stopped drifting over the second half of the run.

    ``values``: one float, or one 1-D tensor of monitored quantities, per
    sweep; every quantity must pass. The means of the last two quarters of
    the run (each at least ``window`` sweeps) must differ by less than
    ``tol`` or by less than two standard errors of their difference, the
    errors from ``n_batches`` batch means per quarter, which allows for the
    chain's autocorrelation (a Geweke-style test). ``tol=0`` never settles.
    """
    n = len(values)
    q = n // 4
    if tol <= 0 or q < max(window, n_batches):
        return False
    v = torch.stack([torch.as_tensor(x, dtype=torch.float64).reshape(-1).cpu()
                     for x in values[n - 2 * q:]])
    size = q // n_batches
    means = [v[part * q + b * size:part * q + (b + 1) * size].mean(0)
             for part in (0, 1) for b in range(n_batches)]
    a, b = torch.stack(means[:n_batches]), torch.stack(means[n_batches:])
    diff = (v[q:].mean(0) - v[:q].mean(0)).abs()
    se = torch.sqrt((a.var(0) + b.var(0)) / n_batches)
    return bool((diff < torch.clamp(2.0 * se, min=tol)).all())


def run_gibbs(model: GibbsModel, params, source, *, n_sweeps: int, burn_in: int | None,
              generator: torch.Generator, verbose: int = 0, tol: float = 0.0,
              window: int = 10, reduce: Callable | None = None, desc: str = "Gibbs",
              local_generator: torch.Generator | None = None,
              monitor: Callable | None = None) -> GibbsRun:
    """Blocked Gibbs sweeps; statistics averaged after the burn-in.

    ``burn_in=None`` (adaptive): the burn-in ends at the first sweep where the
    per-unit log-likelihood has :func:`settled` (``tol``; at the earliest
    after ``4 window`` sweeps), at ``n_sweeps // 2`` at the latest; the run then
    averages as many sweeps as the burn-in took (at least ``window``) and
    stops, ``converged`` if that happened before ``n_sweeps``. An int
    ``burn_in`` is a fixed schedule: ``n_sweeps`` sweeps, never "converged".
    ``monitor(params)``, if given, returns a 1-D tensor of more quantities
    (say the log of learned hyperparameters) that must settle too.

    ``generator`` draws the globals, ``local_generator`` (default: the same)
    the locals. Under torch.distributed (``reduce`` given) each rank sweeps
    its own items with its own ``local_generator``, the statistics are summed
    over ranks, and every rank draws the same globals from ``generator``
    (seeded alike everywhere): the locals of different items are independent
    given the globals, so this is the same blocked Gibbs chain as in one
    process, not an approximation. The stopping test reads the summed
    log-likelihood, so every rank stops at the same sweep. A rank with no
    item takes part with zero statistics.
    """
    if burn_in is not None and not 0 <= burn_in < n_sweeps:
        raise ValueError(f"burn_in={burn_in} must be in [0, n_sweeps={n_sweeps}).")
    local_generator = local_generator or generator
    run = GibbsRun(params=params)
    progress = _Progress(verbose, n_sweeps, desc, quantity="log-lik")
    kept = 0
    end_burn = burn_in  # None until the adaptive burn-in ends
    stop_at = n_sweeps
    watched = []  # with a monitor: the log-likelihood and the monitored values per sweep

    def local_sweep():
        total: Statistics | None = None
        new_locals = []
        for i, batch in enumerate(source):
            local = run.locals[i] if i < len(run.locals) else None
            stats, log_lik, units, local = model.sample_local(run.params, batch, local,
                                                              local_generator)
            new_locals.append(local)
            stats = dict(stats, _ll=torch.as_tensor(log_lik, dtype=torch.float64),
                         _units=torch.as_tensor(units, dtype=torch.float64))
            total = add_statistics(total, stats)
        if total is None:
            if reduce is None or not hasattr(model, "zero_statistics"):
                raise ValueError("the data source yielded no batch: it is empty.")
            zeros = model.zero_statistics(run.params)  # an empty shard of a distributed fit
            like = next(iter(zeros.values()))
            total = dict(zeros, _ll=like.new_zeros(()), _units=like.new_zeros(()))
        return total, new_locals

    for sweep in range(1, n_sweeps + 1):
        total, new_locals = checked(checker(reduce), local_sweep)
        if reduce is not None:
            total = reduce(total)
        run.locals = new_locals
        ll = float(total.pop("_ll") / total.pop("_units"))
        if ll != ll:
            raise FloatingPointError("the sampled log-likelihood became NaN.")
        run.log_likelihoods.append(ll)
        if monitor is not None:
            watched.append(torch.cat([torch.tensor([ll], dtype=torch.float64),
                                      monitor(run.params).to(torch.float64).reshape(-1).cpu()]))
        if end_burn is None and (settled(watched if monitor is not None else
                                         run.log_likelihoods, window, tol)
                                 or sweep >= n_sweeps // 2):
            end_burn = sweep
            if sweep < n_sweeps // 2:
                stop_at = min(n_sweeps, sweep + max(window, sweep))
                run.converged = stop_at < n_sweeps
        if end_burn is not None and sweep > end_burn:
            kept += 1
            if not run.mean_stats:
                run.mean_stats = {k: v.clone() for k, v in total.items()}
            else:
                for k, v in total.items():
                    run.mean_stats[k] += (v - run.mean_stats[k]) / kept
        run.params = model.sample_global(total, run.params, generator)
        run.n_iter = sweep
        progress.update(sweep, ll)
        if sweep >= stop_at:
            break
    if not run.mean_stats:  # burn-in up to the last sweep (n_sweeps == 1): keep that one
        run.mean_stats = total
    run.burn_in = int(end_burn if end_burn is not None else n_sweeps - 1)
    run.converged = run.converged and run.n_iter < n_sweeps
    if progress.bar is not None:
        progress.bar.close()
    if verbose >= 1:  # what the chain did
        state = "settled" if run.converged else "ran its sweeps"
        print(f"  {state}: {run.n_iter} sweeps ({run.burn_in} burn-in), last log-likelihood "
              f"per unit {run.log_likelihoods[-1]:.6f}", file=sys.stderr if progress.bar
              is not None else sys.stdout, flush=True)
    return run


def standard_gamma(concentration: torch.Tensor, generator: torch.Generator, *,
                   normalise: bool = False, single: bool = False) -> torch.Tensor:
    """Gamma(concentration, 1) variates (float64), drawn from ``generator``.

    On CPU, a compiled kernel (or NumPy's generators without numba; either about twice
    torch's speed), blocks of rows in parallel threads, seeded from ``generator``;
    ``normalise`` and ``single``
    (CPU only) as :func:`~elbokit.models.lda_gibbs.gamma_rows`.
    """
    c = concentration.to(torch.float64)
    if c.device.type != "cpu":
        g = torch._standard_gamma(c, generator=generator)
        if normalise:
            g = g.clamp_min(torch.finfo(torch.float64).tiny)
            g = g / g.sum(-1, keepdim=True)
        return g
    from elbokit.models.lda_gibbs import gamma_rows

    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return gamma_rows(c.reshape(-1, c.shape[-1]) if c.ndim else c.reshape(1, 1), seed,
                      normalise=normalise, single=single).reshape(c.shape)


def dirichlet(concentration: torch.Tensor, generator: torch.Generator,
              dtype=torch.float64, single: bool = False) -> torch.Tensor:
    """Draw Dirichlet vectors along the last axis, seeded from ``generator``.

    Gamma variates that underflow (tiny concentrations) are clamped to the
    smallest normal number, so a draw never holds NaN. On CPU the rows are drawn
    and normalised in threads (``single``: the gamma variates in float32, for a
    float32 consumer; the rows are normalised in float64 either way).
    """
    return standard_gamma(concentration, generator, normalise=True, single=single).to(dtype)
