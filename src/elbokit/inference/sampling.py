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
    locals : list
        Last local state per batch.
    """

    params: Any
    mean_stats: Statistics = field(default_factory=dict)
    log_likelihoods: list[float] = field(default_factory=list)
    n_iter: int = 0
    locals: list = field(default_factory=list)


def run_gibbs(model: GibbsModel, params, source, *, n_sweeps: int, burn_in: int,
              generator: torch.Generator, verbose: int = 0,
              reduce: Callable | None = None, desc: str = "Gibbs",
              local_generator: torch.Generator | None = None) -> GibbsRun:
    """Run ``n_sweeps`` blocked Gibbs sweeps; average statistics after ``burn_in``.

    ``generator`` draws the globals, ``local_generator`` (default: the same)
    the locals. Under torch.distributed (``reduce`` given) each rank sweeps
    its own items with its own ``local_generator``, the statistics are summed
    over ranks, and every rank draws the same globals from ``generator``
    (seeded alike everywhere): the locals of different items are independent
    given the globals, so this is the same blocked Gibbs chain as in one
    process, not an approximation. A rank with no item takes part with zero
    statistics.
    """
    if not 0 <= burn_in < n_sweeps:
        raise ValueError(f"burn_in={burn_in} must be in [0, n_sweeps={n_sweeps}).")
    local_generator = local_generator or generator
    run = GibbsRun(params=params)
    progress = _Progress(verbose, n_sweeps, desc)
    kept = 0

    def local_sweep():
        total: Statistics | None = None
        new_locals = []
        for i, batch in enumerate(source):
            local = run.locals[i] if i < len(run.locals) else None
            stats, log_lik, units, local = model.sample_local(run.params, batch, local,
                                                              local_generator)
            new_locals.append(local)
            stats = dict(stats, _ll=log_lik.to(torch.float64), _units=units.to(torch.float64))
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
        run.params = model.sample_global(total, run.params, generator)
        if sweep > burn_in:
            kept += 1
            if not run.mean_stats:
                run.mean_stats = {k: v.clone() for k, v in total.items()}
            else:
                for k, v in total.items():
                    run.mean_stats[k] += (v - run.mean_stats[k]) / kept
        run.n_iter = sweep
        progress.update(sweep, ll)
    if progress.bar is not None:
        progress.bar.close()
    if verbose >= 1:  # a sampler has no convergence test: report what it did
        print(f"  {run.n_iter} sweeps ({burn_in} burn-in), last log-likelihood per unit "
              f"{run.log_likelihoods[-1]:.6f}", file=sys.stderr if progress.bar is not None
              else sys.stdout, flush=True)
    return run


def standard_gamma(concentration: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gamma(concentration, 1) variates (float64), seeded from ``generator``.

    torch's Gamma sampler takes no generator, so the draw runs under a forked
    global RNG seeded from ``generator`` (the global RNG is left untouched).
    """
    device = concentration.device
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return torch._standard_gamma(concentration.to(torch.float64))


def dirichlet(concentration: torch.Tensor, generator: torch.Generator,
              dtype=torch.float64) -> torch.Tensor:
    """Draw Dirichlet vectors along the last axis, seeded from ``generator``.

    Gamma variates that underflow (tiny concentrations) are clamped to the
    smallest normal number, so a draw never holds NaN.
    """
    g = standard_gamma(concentration, generator).clamp_min(torch.finfo(torch.float64).tiny)
    return (g / g.sum(-1, keepdim=True)).to(dtype)
