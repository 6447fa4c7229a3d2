"""The amortised-VI objectives and training loop."""


import torch

from elbokit.inference.amortized import ELBOObjective, IWAEObjective, collapse_diagnostics

from ..models.test_vae import ppca


def test_kl_warmup_ramps_beta_linearly():
    obj = ELBOObjective(beta=2.0, kl_warmup=4)
    assert [obj.kl_weight(e) for e in (0, 1, 2, 4, 10)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert ELBOObjective(beta=0.5).kl_weight(0) == 0.5


def test_cyclical_annealing_repeats_the_ramp():
    """Fu et al. (2019): M cycles over the run, each rising over its first R, then flat."""
    obj = ELBOObjective(beta=2.0, kl_cycles=2, kl_cycle_ratio=0.5, epochs=8)
    assert [obj.kl_weight(t) for t in (0, 1, 2, 3, 4, 5, 6, 7.9)] == \
        [0.0, 1.0, 2.0, 2.0, 0.0, 1.0, 2.0, 2.0]
    assert ELBOObjective(kl_cycles=1, kl_cycle_ratio=1.0, epochs=4).kl_weight(2) == 0.5


def test_beta_scales_only_the_kl_term():
    module, X, _ = ppca(perturb=0.2)
    losses = {}
    for beta in (0.0, 1.0, 3.0):
        torch.manual_seed(0)
        losses[beta], _ = ELBOObjective(beta=beta)(module, X)
    torch.manual_seed(0)
    rec, kl, _ = module.elbo_terms(X)
    torch.testing.assert_close(losses[0.0], -rec.mean())
    torch.testing.assert_close(losses[3.0] - losses[1.0], 2 * kl.mean())


def test_free_bits_floor_each_dimension():
    module, X, _ = ppca(perturb=0.2)
    torch.manual_seed(0)
    loss_free, _ = ELBOObjective(free_bits=5.0)(module, X)
    torch.manual_seed(0)
    rec, _, (loc, scale) = module.elbo_terms(X)
    per_dim = module.kl_per_dimension(loc, scale).mean(0)
    assert bool((per_dim < 5.0).all())  # so every dimension is floored at 5 nats
    torch.testing.assert_close(loss_free, -rec.mean() + 5.0 * per_dim.numel())


def test_iwae_objective_is_minus_the_bound():
    module, X, _ = ppca(perturb=0.2)
    torch.manual_seed(0)
    loss, bound = IWAEObjective(k=4)(module, X)
    torch.manual_seed(0)
    expected = module.iwae(X, 4)
    torch.testing.assert_close(loss, -expected.mean())
    assert bound.shape == () and bound.dtype == torch.float64 and not bound.requires_grad
    torch.testing.assert_close(bound, expected.detach().sum(dtype=torch.float64))


def test_collapse_diagnostics_are_exact_on_a_linear_gaussian_vae():
    """PPCA with one near-zero loading: q is the exact posterior, a linear function of x."""
    scales, s = (2.0, 0.02), 0.5
    module, X, _ = ppca(scales=scales, n=2048)
    torch.manual_seed(0)
    d = collapse_diagnostics(module, X, mi_rows=2048)
    loc, scale = module.encode(X)
    # active units: the variance over x of E_q[z_j | x], with E_q[z | x] = A (x - b)
    net = module.encoder.net
    expected_var = (X @ net.A.T + net.c).var(0, correction=1)
    torch.testing.assert_close(torch.tensor(d["unit_variance"], dtype=torch.float64), expected_var,
                               rtol=1e-10, atol=0)
    assert d["active_units"] == 1  # the second loading carries ~nothing about x
    # per-dimension KL: 0.5 (m^2 + v - 1 - log v) with the posterior variance v = s^2 / (w^2 + s^2)
    v = torch.tensor([s**2 / (w**2 + s**2) for w in scales], dtype=torch.float64)
    torch.testing.assert_close(scale.square(), v.expand_as(scale), rtol=1e-8, atol=0)
    kl = (0.5 * (loc.square() + v - 1 - v.log())).mean(0)
    torch.testing.assert_close(torch.tensor(d["kl_per_dimension"], dtype=torch.float64), kl,
                               rtol=1e-10, atol=1e-12)
    # the population values: E_x[m_j^2] = 1 - v_j, so E KL_j = -0.5 log v_j
    torch.testing.assert_close(kl, -0.5 * v.log(), rtol=0.1, atol=1e-3)
    # I(x; z) = 0.5 sum_j log(1 / v_j) for the exact posterior of a N(0, I) prior
    assert abs(d["mutual_information"] - float(-0.5 * v.log().sum())) < 0.1
