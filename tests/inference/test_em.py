"""The EM engine, with a model it has never heard of: a two-coin mixture.

Each row of X holds the heads of 10 tosses of one of two biased coins; the
coin (z) is latent.  The engine must climb log p(x), keep the best restart,
warn when it runs out of iterations and stop on a NaN.
"""

import math

import numpy as np
import pytest
import torch

from elbokit.inference.em import ConvergenceWarning, accumulate, fit_em, run_em
from elbokit.data import InMemorySource

N_TOSSES = 10


class TwoCoins:
    def log_joint(self, params, X):
        pi, theta = params
        heads = X[:, :1]
        return (pi.log() + heads * theta.log() + (N_TOSSES - heads) * (1 - theta).log()
                + torch.lgamma(torch.tensor(N_TOSSES + 1.0, dtype=X.dtype))
                - torch.lgamma(heads + 1) - torch.lgamma(N_TOSSES - heads + 1))

    def expected_statistics(self, params, X, weight):
        lj = self.log_joint(params, X)
        lp = torch.logsumexp(lj, 1)
        r = (lj - lp[:, None]).exp()
        return {"n": r.sum(0).double(), "heads": (r * X[:, :1]).sum(0).double()}, lp.double().sum()

    def maximize(self, stats, params):
        return stats["n"] / stats["n"].sum(), stats["heads"] / (N_TOSSES * stats["n"])


@pytest.fixture
def coins():
    g = torch.Generator().manual_seed(0)
    z = torch.rand(500, generator=g) < 0.3
    p = torch.where(z, 0.8, 0.35)
    return torch.binomial(torch.full((500,), float(N_TOSSES)), p, generator=g).double()[:, None]


def start(a=0.5, b=0.6):
    return torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([a, b], dtype=torch.float64)


def test_engine_climbs_monotonically_and_recovers_the_coins(coins):
    run = run_em(TwoCoins(), start(), InMemorySource(coins, batch_size=64), tol=1e-10, max_iter=500)
    assert run.converged
    diffs = torch.diff(torch.tensor(run.lower_bounds))
    assert bool((diffs >= -1e-12).all())
    pi, theta = run.params
    assert sorted(theta.tolist()) == pytest.approx([0.35, 0.8], abs=0.05)


def test_batches_do_not_change_the_result(coins):
    a = run_em(TwoCoins(), start(), InMemorySource(coins), tol=0, max_iter=20)
    b = run_em(TwoCoins(), start(), InMemorySource(coins, batch_size=7), tol=0, max_iter=20)
    torch.testing.assert_close(a.params[1], b.params[1], rtol=1e-12, atol=0)


def test_restarts_keep_the_best_and_warn_when_not_converged(coins):
    starts = [start(0.5, 0.500001), start(0.3, 0.9)]
    with pytest.warns(ConvergenceWarning):
        best = fit_em(lambda p: run_em(TwoCoins(), p, InMemorySource(coins), tol=1e-14, max_iter=3),
                      lambda i: starts[i], n_init=2, tol=1e-14, max_iter=3)
    singles = [run_em(TwoCoins(), s, InMemorySource(coins), tol=1e-14, max_iter=3).lower_bound
               for s in starts]
    assert best.lower_bound == max(singles)


def test_reduce_hook_sees_every_iteration(coins):
    calls = []

    def reduce(stats):
        calls.append(sorted(stats))
        return stats

    run = run_em(TwoCoins(), start(), InMemorySource(coins), tol=0, max_iter=4, reduce=reduce)
    assert len(calls) == run.n_iter + 1
    assert "_log_likelihood" in calls[0] and "_weight" in calls[0]


def test_nan_is_never_silent(coins):
    bad = (torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([math.nan, 0.5], dtype=torch.float64))
    with pytest.raises(FloatingPointError, match="log-likelihood became nan"):
        accumulate(TwoCoins(), bad, InMemorySource(coins))


def test_empty_source_is_a_clear_error():
    with pytest.raises(ValueError, match="empty"):
        accumulate(TwoCoins(), start(), [])


class RoundedCoins(TwoCoins):
    """TwoCoins whose low-precision mode breaks: its statistics are perturbed (the
    bound falls), or its M-step fails, until the engine asks for more precision."""

    def __init__(self, fail="fall"):
        self.low, self.fail, self.refined = True, fail, 0

    def refine(self):
        if not self.low:
            return False
        self.low, self.refined = False, self.refined + 1
        return True

    def bound_rounding(self, bound):
        return 1e-7 * (1 + abs(bound))

    def expected_statistics(self, params, X, weight):
        stats, lp = super().expected_statistics(params, X, weight)
        if self.low and self.fail == "fall":
            stats = dict(stats, heads=stats["heads"] * 1.05)  # a wrong M-step: the bound falls
        return stats, lp

    def maximize(self, stats, params):
        if self.low and self.fail == "raise":
            raise FloatingPointError("lost precision")
        return super().maximize(stats, params)


@pytest.mark.parametrize("fail", ["fall", "raise"])
def test_lost_precision_is_refined_and_the_step_redone(coins, fail):
    model = RoundedCoins(fail)
    run = run_em(model, start(0.3, 0.9), InMemorySource(coins), tol=1e-12, max_iter=200)
    exact = run_em(TwoCoins(), start(0.3, 0.9), InMemorySource(coins), tol=1e-12, max_iter=200)
    assert model.refined == 1
    diffs = np.diff(run.lower_bounds)
    assert np.all(diffs >= -1e-12), diffs.min()
    torch.testing.assert_close(run.params[1], exact.params[1], rtol=1e-6, atol=0)


def test_a_warm_start_continues_the_convergence_test(coins):
    first = run_em(TwoCoins(), start(), InMemorySource(coins), tol=1e-6, max_iter=3)
    assert not first.converged
    # continuing from the last parameters with the last per-iteration bound: the
    # change is measured across the two calls, so a fit at its optimum stops at once
    done = run_em(TwoCoins(), first.params, InMemorySource(coins), tol=1.0, max_iter=5,
                  previous=first.lower_bounds[-2])
    assert done.converged and done.n_iter == 1
    fresh = run_em(TwoCoins(), first.params, InMemorySource(coins), tol=1.0, max_iter=5)
    assert fresh.n_iter == 2  # without it, the first change is measured from -inf


@pytest.mark.parametrize("leave_plateaus, stops_at", [(False, 3), (True, 8)])
def test_leave_plateaus_waits_for_two_shrinking_gains_below_tol(leave_plateaus, stops_at):
    """A bound that leaps, creeps on a plateau (gains below tol, growing), climbs again
    and settles: scikit-learn's rule stops at the first small gain; with
    leave_plateaus EM goes on until two gains below tol in a row, the second smaller."""
    from types import SimpleNamespace

    from elbokit.inference.em import _Progress

    bounds = [-3.0, -2.0, -2.0 + 1e-6, -2.0 + 3e-6, -1.9, -1.85, -1.85 + 1e-6, -1.85 + 1.5e-6]
    progress, run = _Progress(0, 100, "EM", leave_plateaus=leave_plateaus), SimpleNamespace()
    stopped = next((i for i, b in enumerate(bounds, 1) if progress.settled(run, i, b, 1e-5)), None)
    assert stopped == stops_at and run.converged
