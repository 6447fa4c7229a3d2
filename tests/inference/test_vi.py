"""The mean-field VI engine, on a conjugate model whose posterior is known exactly.

The model: categorical observations x_i in {0..K-1} with a Dirichlet(a) prior
on their probabilities pi. The exact posterior is Dirichlet(a + counts), so
the optimal q(pi) is the posterior, and the ELBO at it equals the log
evidence (the Dirichlet-multinomial likelihood of the sequence).
"""

import math
from dataclasses import dataclass

import pytest
import torch
from torch.distributions import Dirichlet

from elbokit.inference.em import ConvergenceWarning
from elbokit.inference.vi import (
    LocalResult,
    online_step,
    run_batch_vi,
    run_online_vi,
    step_size,
)
from elbokit.kl import kl_divergence


@dataclass
class Conc:
    c: torch.Tensor


class DirichletCategorical:
    def __init__(self, prior):
        self.prior = prior

    def local_step(self, params, batch, local):
        counts = torch.bincount(batch, minlength=len(self.prior)).double()
        elog = torch.digamma(params.c) - torch.digamma(params.c.sum())
        return LocalResult({"counts": counts}, (counts * elog).sum(), len(batch),
                           torch.tensor(float(len(batch)), dtype=torch.float64), local)

    def maximize(self, stats, params, scale):
        return Conc(self.prior + scale * stats["counts"])

    def blend(self, params, target, rho):
        return Conc((1 - rho) * params.c + rho * target.c)

    def global_bound(self, params):
        return -kl_divergence(Dirichlet(params.c), Dirichlet(self.prior))


def log_evidence(prior, counts):
    a, n = prior.double(), counts.double()
    return float(torch.lgamma(a.sum()) - torch.lgamma(a.sum() + n.sum())
                 + (torch.lgamma(a + n) - torch.lgamma(a)).sum())


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(0)
    x = torch.multinomial(torch.tensor([0.5, 0.3, 0.2]), 120, replacement=True, generator=gen)
    return x, torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)


def test_batch_vi_reaches_the_exact_posterior_and_evidence(data):
    x, prior = data
    model = DirichletCategorical(prior)
    source = [x[i:i + 25] for i in range(0, len(x), 25)]  # several batches, one statistic
    run = run_batch_vi(model, Conc(torch.ones(3, dtype=torch.float64)), source,
                       tol=1e-12, max_iter=5)
    counts = torch.bincount(x, minlength=3).double()
    torch.testing.assert_close(run.params.c, prior + counts)
    assert run.converged
    # ELBO at the exact posterior = log p(x); the bound is per unit (observation)
    assert run.lower_bound == pytest.approx(log_evidence(prior, counts) / len(x), rel=1e-12)
    assert all(b2 >= b1 - 1e-12 for b1, b2 in zip(run.lower_bounds, run.lower_bounds[1:]))


def test_batch_vi_warns_when_not_converged(data):
    x, prior = data
    model = DirichletCategorical(prior)
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        run_batch_vi(model, Conc(torch.ones(3, dtype=torch.float64)), [x], tol=0.0, max_iter=1)


def test_online_vi_converges_to_the_posterior_when_batches_agree(data):
    x, prior = data
    model = DirichletCategorical(prior)
    batch = x[:30]
    source = [batch] * 4  # every mini-batch has the same composition
    run = run_online_vi(model, Conc(torch.ones(3, dtype=torch.float64)), source,
                        total=120, tau0=1.0, kappa=0.6, max_iter=40, tol=0.0)
    exact = prior + 4 * torch.bincount(batch, minlength=3).double()
    torch.testing.assert_close(run.params.c, exact, rtol=1e-3, atol=0)
    assert run.n_updates == 160 and run.n_iter == 40


def test_online_step_blends_with_the_scheduled_rate(data):
    x, prior = data
    model = DirichletCategorical(prior)
    start = Conc(torch.ones(3, dtype=torch.float64))
    new, local, units = online_step(model, start, x[:30], total=120, t=3, tau0=2.0, kappa=0.8)
    assert float(units) == 120.0
    rho = (2.0 + 4) ** -0.8
    target = prior + 4 * torch.bincount(x[:30], minlength=3).double()
    torch.testing.assert_close(new.c, (1 - rho) * start.c + rho * target)
    assert step_size(1, 0.0, 0.7) == 1.0
    assert step_size(10, 10.0, 0.5) == pytest.approx(1 / math.sqrt(20))
    with pytest.raises(ValueError, match="counted from 1"):
        step_size(0, 1.0, 0.7)
