"""Properties of elbokit.kl: closed forms against Monte Carlo, KL(p||p) = 0,
KL >= 0, the extra Gaussian pairs against torch's full-covariance form, the
Monte Carlo fallback (gradients, seeding, broadcasting) and the errors."""

import pytest
import torch
from torch.distributions import (
    Bernoulli,
    Beta,
    Categorical,
    ContinuousBernoulli,
    Dirichlet,
    Distribution,
    Gamma,
    Independent,
    Laplace,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    Poisson,
)
from torch.distributions.kl import register_kl as torch_register_kl

from elbokit.kl import KLResult, has_analytic_kl, kl, kl_divergence, register_kl

F64 = torch.float64
BATCH = (3,)
DIM = 3
MC_SAMPLES = 200_000


def _uniform(g, low, high, shape):
    return low + (high - low) * torch.rand(shape, generator=g, dtype=F64)


def _randn(g, shape):
    return torch.randn(shape, generator=g, dtype=F64)


def _scale_tril(g, batch, dim):
    """Cholesky factor of a well-conditioned random covariance."""
    a = _randn(g, batch + (dim, dim))
    cov = a @ a.mT / dim + 0.5 * torch.eye(dim, dtype=F64)
    return torch.linalg.cholesky(cov)


def _diag_normal(g, batch=BATCH):
    return Independent(Normal(_randn(g, batch + (DIM,)), _uniform(g, 0.5, 1.5, batch + (DIM,))), 1)


def _mvn(g, batch=BATCH):
    return MultivariateNormal(_randn(g, batch + (DIM,)), scale_tril=_scale_tril(g, batch, DIM))


FAMILIES = {
    "normal": lambda g: Normal(_randn(g, BATCH), _uniform(g, 0.5, 1.5, BATCH)),
    "diag_normal": _diag_normal,
    "mvn": _mvn,
    "categorical": lambda g: Categorical(logits=_randn(g, BATCH + (4,))),
    "bernoulli": lambda g: Bernoulli(probs=_uniform(g, 0.1, 0.9, BATCH)),
    "continuous_bernoulli": lambda g: ContinuousBernoulli(probs=_uniform(g, 0.1, 0.9, BATCH)),
    "dirichlet": lambda g: Dirichlet(_uniform(g, 1.0, 4.0, BATCH + (4,))),
    "beta": lambda g: Beta(_uniform(g, 1.0, 4.0, BATCH), _uniform(g, 1.0, 4.0, BATCH)),
    "gamma": lambda g: Gamma(_uniform(g, 1.0, 4.0, BATCH), _uniform(g, 0.5, 2.0, BATCH)),
    "poisson": lambda g: Poisson(_uniform(g, 1.0, 5.0, BATCH)),
}

# Every closed form the library relies on: same-family pairs from torch, and
# the diagonal-vs-full Gaussian pairs elbokit registers (both directions).
ANALYTIC_PAIRS = [(name, name) for name in FAMILIES] + [
    ("diag_normal", "mvn"),
    ("mvn", "diag_normal"),
]
PAIR_IDS = [f"{a}-{b}" for a, b in ANALYTIC_PAIRS]


def _pair(name_p, name_q, seed=0):
    g = torch.Generator().manual_seed(seed)
    return FAMILIES[name_p](g), FAMILIES[name_q](g)


def _mixture(batch=()):
    """A two-component Gaussian mixture: no closed-form KL against anything."""
    logits = torch.tensor([0.3, -0.2], dtype=F64).expand(batch + (2,))
    comps = Normal(torch.tensor([-1.0, 1.5], dtype=F64).expand(batch + (2,)),
                   torch.tensor([0.7, 1.2], dtype=F64).expand(batch + (2,)))
    return MixtureSameFamily(Categorical(logits=logits), comps)


def _as_full_mvn(d):
    """The MultivariateNormal equal to Independent(Normal(loc, scale), 1)."""
    return MultivariateNormal(d.base_dist.loc, torch.diag_embed(d.base_dist.scale.pow(2)))


# ---------------------------------------------------------------------------
# Closed forms


@pytest.mark.parametrize(("name_p", "name_q"), ANALYTIC_PAIRS, ids=PAIR_IDS)
def test_closed_form_agrees_with_monte_carlo(name_p, name_q):
    p, q = _pair(name_p, name_q)
    exact = kl(p, q, method="analytic")
    estimate = kl(p, q, method="monte_carlo", n_samples=MC_SAMPLES, seed=1)
    assert exact.method == "analytic" and estimate.method == "monte_carlo"
    assert exact.value.shape == estimate.value.shape == BATCH
    assert torch.all(exact.stderr == 0)
    assert torch.all(torch.isfinite(estimate.stderr) & (estimate.stderr > 0))
    gap = (exact.value - estimate.value).abs()
    assert torch.all(gap < 5 * estimate.stderr + 1e-3), (exact.value, estimate.value, estimate.stderr)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_kl_of_a_distribution_with_itself_is_zero(name):
    p = FAMILIES[name](torch.Generator().manual_seed(3))
    result = kl(p, p)
    assert result.method == "analytic"
    torch.testing.assert_close(result.value, torch.zeros(BATCH, dtype=F64), atol=1e-10, rtol=0)


@pytest.mark.parametrize(("name_p", "name_q"), ANALYTIC_PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_is_nonnegative(name_p, name_q, seed):
    p, q = _pair(name_p, name_q, seed)
    assert torch.all(kl_divergence(p, q, method="analytic") >= -1e-12)


@pytest.mark.parametrize(
    ("batch_p", "batch_q"), [((), ()), (BATCH, ()), ((), BATCH), (BATCH, (2, 1))]
)
def test_extra_pairs_equal_torch_full_covariance_form(batch_p, batch_q):
    g = torch.Generator().manual_seed(4)
    diag, full = _diag_normal(g, batch_p), _mvn(g, batch_q)
    expected_shape = torch.broadcast_shapes(batch_p, batch_q)
    forward = kl_divergence(diag, full, method="analytic")
    backward = kl_divergence(full, diag, method="analytic")
    assert forward.shape == backward.shape == expected_shape
    torch.testing.assert_close(forward, kl_divergence(_as_full_mvn(diag), full))
    torch.testing.assert_close(backward, kl_divergence(full, _as_full_mvn(diag)))


def test_extra_pairs_propagate_gradients_like_torch():
    g = torch.Generator().manual_seed(5)
    diag, full = _diag_normal(g), _mvn(g)
    scale = diag.base_dist.scale.clone().requires_grad_(True)
    loc = diag.base_dist.loc.clone().requires_grad_(True)
    ours = kl_divergence(Independent(Normal(loc, scale), 1), full).sum()
    theirs = kl_divergence(MultivariateNormal(loc, torch.diag_embed(scale.pow(2))), full).sum()
    grads_ours = torch.autograd.grad(ours, (loc, scale))
    grads_theirs = torch.autograd.grad(theirs, (loc, scale))
    for a, b in zip(grads_ours, grads_theirs):
        torch.testing.assert_close(a, b)


def test_independent_with_other_base_declines_closed_form_and_falls_back():
    g = torch.Generator().manual_seed(6)
    laplace = Independent(Laplace(_randn(g, BATCH + (DIM,)), _uniform(g, 0.5, 1.5, BATCH + (DIM,))), 1)
    full = _mvn(g)
    assert not has_analytic_kl(laplace, full)
    assert kl(laplace, full, n_samples=64, seed=0).method == "monte_carlo"
    with pytest.raises(NotImplementedError, match=r"Independent\(Laplace, 1\).*MultivariateNormal"):
        kl_divergence(laplace, full, method="analytic")


@pytest.mark.parametrize(("name_p", "name_q"), ANALYTIC_PAIRS, ids=PAIR_IDS)
def test_has_analytic_kl_for_every_pair_relied_on(name_p, name_q):
    assert has_analytic_kl(*_pair(name_p, name_q))


# ---------------------------------------------------------------------------
# Monte Carlo fallback


def test_pair_without_closed_form_is_estimated_and_says_so():
    p, q = _mixture(BATCH), Normal(torch.zeros(BATCH, dtype=F64), torch.ones(BATCH, dtype=F64))
    assert not has_analytic_kl(p, q)
    result = kl(p, q, n_samples=4096, seed=0)
    assert isinstance(result, KLResult)
    assert result.method == "monte_carlo"
    assert result.value.shape == result.stderr.shape == BATCH
    assert torch.all(torch.isfinite(result.stderr) & (result.stderr > 0))
    assert torch.all(result.value > -5 * result.stderr)  # KL >= 0 up to noise
    with pytest.raises(NotImplementedError, match=r"MixtureSameFamily.*Normal.*monte_carlo"):
        kl_divergence(p, q, method="analytic")


def test_gradients_flow_through_reparameterised_monte_carlo():
    loc = torch.tensor([0.3, -0.5], dtype=F64, requires_grad=True)
    scale = torch.tensor([0.8, 1.3], dtype=F64, requires_grad=True)
    value = kl_divergence(Normal(loc, scale), _mixture((2,)), n_samples=256, seed=0)
    value.sum().backward()
    for grad in (loc.grad, scale.grad):
        assert grad is not None and torch.all(torch.isfinite(grad)) and torch.any(grad != 0)


def test_gradients_reach_q_when_p_is_not_reparameterised():
    rate = torch.tensor([2.0, 3.0], dtype=F64, requires_grad=True)
    value = kl_divergence(Poisson(torch.tensor([1.5, 4.0], dtype=F64)), Poisson(rate),
                          method="monte_carlo", n_samples=256, seed=0)
    value.sum().backward()
    assert rate.grad is not None and torch.all(torch.isfinite(rate.grad))


@pytest.mark.parametrize(("batch_p", "batch_q"), [((), BATCH), (BATCH, ()), (BATCH, (2, 1))])
def test_monte_carlo_broadcasts_batch_shapes(batch_p, batch_q):
    g = torch.Generator().manual_seed(7)
    p = Normal(_randn(g, batch_p), _uniform(g, 0.5, 1.5, batch_p))
    q = Normal(_randn(g, batch_q), _uniform(g, 0.5, 1.5, batch_q))
    estimate = kl(p, q, method="monte_carlo", n_samples=50_000, seed=0)
    exact = kl_divergence(p, q, method="analytic")
    assert estimate.value.shape == exact.shape == torch.broadcast_shapes(batch_p, batch_q)
    assert torch.all((estimate.value - exact).abs() < 5 * estimate.stderr + 1e-3)


def test_seeded_monte_carlo_is_repeatable_and_leaves_global_state_alone():
    p, q = _mixture(BATCH), Normal(torch.zeros(BATCH, dtype=F64), 2 * torch.ones(BATCH, dtype=F64))
    state = torch.random.get_rng_state()
    first = kl(p, q, n_samples=512, seed=11)
    second = kl(p, q, n_samples=512, seed=11)
    other = kl(p, q, n_samples=512, seed=12)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first.value, second.value) and torch.equal(first.stderr, second.stderr)
    assert not torch.equal(first.value, other.value)


def test_float32_monte_carlo_returns_float32():
    p = Normal(torch.zeros(BATCH), torch.ones(BATCH))
    q = _mixture(BATCH)
    q = MixtureSameFamily(Categorical(logits=q.mixture_distribution.logits.float()),
                          Normal(q.component_distribution.loc.float(),
                                 q.component_distribution.scale.float()))
    result = kl(p, q, n_samples=128, seed=0)
    assert result.value.dtype == result.stderr.dtype == torch.float32


def test_register_kl_is_torch_registry_and_user_pairs_are_used():
    assert register_kl is torch_register_kl

    class _Toy(Distribution):
        def __init__(self):
            super().__init__(torch.Size(), torch.Size(), validate_args=False)

    @register_kl(_Toy, _Toy)
    def _kl_toy_toy(p, q):
        return torch.tensor(0.25)

    assert has_analytic_kl(_Toy(), _Toy())
    result = kl(_Toy(), _Toy())
    assert result.method == "analytic" and result.value.item() == 0.25


# ---------------------------------------------------------------------------
# Errors


class _CannotSample(Distribution):
    """Has a density but no sampler."""

    def __init__(self):
        super().__init__(torch.Size(), torch.Size(), validate_args=False)

    def log_prob(self, value):
        return torch.zeros_like(value)


class _NoDensity(Distribution):
    """Samples but has no log_prob."""

    has_rsample = True

    def __init__(self):
        super().__init__(torch.Size(), torch.Size(), validate_args=False)

    def rsample(self, sample_shape=torch.Size()):
        return torch.zeros(sample_shape)


_STD = Normal(torch.tensor(0.0), torch.tensor(1.0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "exact"}, r"method='exact'.*'auto', 'analytic', 'monte_carlo'"),
        ({"n_samples": 1}, r"n_samples=1 must be an integer >= 2"),
        ({"n_samples": 10.0}, r"n_samples=10.0"),
        ({"seed": "0"}, r"seed='0'"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kl_divergence(_STD, _STD, **kwargs)


def test_mismatched_event_shapes_raise_value_error_naming_both():
    p = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    q = MultivariateNormal(torch.zeros(2), torch.eye(2))
    for a, b, shapes in [(p, q, r"\(3,\).*\(2,\)"), (q, p, r"\(2,\).*\(3,\)")]:
        with pytest.raises(ValueError, match=shapes):
            kl_divergence(a, b)
        with pytest.raises(ValueError, match=shapes):
            has_analytic_kl(a, b)


def test_batch_shapes_that_do_not_broadcast_raise_value_error():
    with pytest.raises(ValueError, match=r"batch_shape=\(3,\).*batch_shape=\(2,\)"):
        kl_divergence(Normal(torch.zeros(3), 1.0), Normal(torch.zeros(2), 1.0))


@pytest.mark.parametrize(
    ("p", "q", "match"),
    [
        (_CannotSample(), _STD, r"p=_CannotSample and q=Normal.*cannot draw samples"),
        (_NoDensity(), _STD, r"p=_NoDensity and q=Normal.*p\.log_prob"),
        (_STD, _NoDensity(), r"p=Normal and q=_NoDensity.*q\.log_prob"),
    ],
)
def test_impossible_monte_carlo_raises_not_implemented(p, q, match):
    with pytest.raises(NotImplementedError, match=match):
        kl_divergence(p, q)
