"""The ELBO, the KL gap and the IWAE bound, checked on a conjugate Gaussian model.

z ~ N(0, 1), x | z ~ N(z, s^2): log p(x) = log N(x | 0, 1 + s^2) and the
posterior is N(x / (1 + s^2), s^2 / (1 + s^2)), both in closed form.
"""

import math

import pytest
import torch
from torch.distributions import Categorical, Normal

from elbokit.bounds import decompose_discrete, elbo_discrete, elbo_monte_carlo, iwae_bound
from elbokit.kl import kl_divergence

S = 0.7
X = torch.tensor([-1.5, 0.2, 2.0], dtype=torch.float64)


def f64(v):
    return torch.as_tensor(v, dtype=torch.float64)


def log_joint(z):
    return Normal(f64(0.0), f64(1.0)).log_prob(z) + Normal(z, f64(S)).log_prob(X)


def exact_log_marginal():
    return Normal(f64(0.0), f64(math.sqrt(1 + S**2))).log_prob(X)


def posterior():
    return Normal(X / (1 + S**2), math.sqrt(S**2 / (1 + S**2)) * torch.ones_like(X))


def test_elbo_plus_kl_equals_log_marginal_for_any_q():
    torch.manual_seed(0)
    q = Normal(torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64),
               torch.tensor([0.5, 1.5, 0.3], dtype=torch.float64))
    elbo = elbo_monte_carlo(log_joint, q, n_samples=400_000)
    kl = kl_divergence(q, posterior())
    torch.testing.assert_close(elbo + kl, exact_log_marginal(), rtol=0, atol=0.02)
    assert bool((kl > 0).all())


def test_elbo_of_the_posterior_is_log_marginal_exactly():
    """With q = p(z|x) every draw's log-weight equals log p(x): zero variance."""
    elbo = elbo_monte_carlo(log_joint, posterior(), n_samples=5)
    torch.testing.assert_close(elbo, exact_log_marginal(), rtol=0, atol=1e-12)


def test_iwae_rises_towards_log_marginal():
    torch.manual_seed(1)
    q = Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    truth = exact_log_marginal()
    reps = 200
    means = []
    for k in (1, 10, 1000):
        b = torch.stack([iwae_bound(log_joint, q, k) for _ in range(reps)]).mean(0)
        means.append(b)
    assert bool((means[0] < means[1]).all()) and bool((means[1] < means[2]).all())
    assert bool((means[2] <= truth + 5e-3).all())
    torch.testing.assert_close(means[2], truth, rtol=0, atol=0.01)
    torch.manual_seed(2)
    one = iwae_bound(log_joint, q, 1)
    torch.manual_seed(2)
    torch.testing.assert_close(one, elbo_monte_carlo(log_joint, q, 1))  # k = 1 is the ELBO


def test_monte_carlo_elbo_is_differentiable():
    loc = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    q = Normal(loc, torch.ones(3, dtype=torch.float64))
    elbo_monte_carlo(log_joint, q, n_samples=8).sum().backward()
    assert loc.grad is not None and bool(torch.isfinite(loc.grad).all())


def test_discrete_decomposition_terms():
    log_joint_table = torch.log(torch.tensor([[0.1, 0.3], [0.25, 0.05]], dtype=torch.float64))
    parts = decompose_discrete(log_joint_table, torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    torch.testing.assert_close(parts.log_marginal, torch.log(torch.tensor([0.4, 0.3], dtype=torch.float64)))
    torch.testing.assert_close(parts.elbo[0], torch.log(torch.tensor(0.1, dtype=torch.float64)))
    torch.testing.assert_close(parts.gap, parts.kl)
    # a one-hot q contributes 0 log 0 = 0, not NaN
    assert torch.isfinite(elbo_discrete(log_joint_table, Categorical(probs=torch.tensor([1.0, 0.0])))).all()
    with pytest.raises(ValueError, match="3 categories"):
        elbo_discrete(log_joint_table, torch.full((2, 3), 1 / 3))
